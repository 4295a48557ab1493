"""A fan-out round starts its calls to the other shards before applying the
local share, so sender and destinations work at the same time; a round with
little to carry waits briefly for more while posts stream in, and not
after a quiet spell."""

from __future__ import annotations

import asyncio
from typing import Any

from murmur.execute_stream import ShardStream
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import shard_pb2
from shard.batch_execute import run_calls
from tests.timeline.model import Model


class LoopbackCall:
    """An ExecuteStream call whose far end is the destination's servicer in
    this process: it notes when each message is handed to it, then runs the
    batch and answers by id, as a shard's BatchStream would."""

    def __init__(self, servicer: Any, events: list[str]) -> None:
        self.servicer = servicer
        self.events = events
        self.answers: asyncio.Queue = asyncio.Queue()
        self.running: set[asyncio.Task] = set()

    async def write(self, request: shard_pb2.ExecuteStreamRequest) -> None:
        self.events.append("remote written")
        task = asyncio.ensure_future(self._answer(request))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _answer(self, request: shard_pb2.ExecuteStreamRequest) -> None:
        results = await run_calls(self.servicer, request.calls, request.timeout_s)
        self.answers.put_nowait(shard_pb2.ExecuteStreamResponse(id=request.id, results=results))

    async def read(self) -> shard_pb2.ExecuteStreamResponse:
        return await self.answers.get()

    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        return True


def author_with_fans(make_cluster, loop, count: int) -> tuple[Any, Model, list[int], Any]:
    """Two shards, an author and ``count`` followers on both of them: the
    cluster, its model, the followers' ids and the author's fan-out worker."""
    cluster = make_cluster(shards=2)
    model = Model(cluster, loop)
    author = model.user("author")
    fans = [model.user(f"fan{i}") for i in range(count)]
    assert {cluster.shard_of(fan) for fan in fans} == {0, 1}
    for i in range(count):
        model.follow(f"fan{i}", "author")
    model.settle()
    return cluster, model, fans, cluster.workers[cluster.shard_of(author)]


def test_remote_deliveries_leave_before_the_local_share_is_applied(make_cluster, loop):
    cluster, model, fans, worker = author_with_fans(make_cluster, loop, 40)
    events: list[str] = []
    real_stream, real_apply = worker.peers.stream, worker.applier.apply

    def recording_stream(shard_id: int) -> Any:
        stream = real_stream(shard_id)

        class Recording:
            async def execute(self, calls: list, timeout: float) -> Any:
                events.append("remote call started")
                return await stream.execute(calls, timeout)

        return Recording()

    def recording_apply(ops: list, local: bool = False) -> int:
        events.append("local applied" if local else "remote applied")
        return real_apply(ops, local=local)

    worker.peers.stream = recording_stream  # type: ignore[method-assign]
    worker.applier.apply = recording_apply  # type: ignore[method-assign]
    model.post("author", "to both shards")
    assert loop.run_until_complete(worker.run_round())
    assert events[:2] == ["remote call started", "local applied"]
    model.settle()
    for fan in fans:
        model.check_home(fan)


def test_remote_batches_are_on_the_wire_before_the_local_share_is_applied(make_cluster, loop):
    """The same, through the real ShardStream: its writer task must hand each
    remote batch to gRPC before the local share takes the loop, on the first
    round (the stream opens) and on later ones (it is open). When the write
    came one loop turn later, the benchmark's fan-out burst fell from ~140k
    to ~100k inbox entries/s: the destinations waited for the sender."""
    cluster, model, fans, worker = author_with_fans(make_cluster, loop, 40)
    events: list[str] = []
    streams: dict[int, ShardStream] = {}

    class LoopbackStub:
        def __init__(self, shard_id: int) -> None:
            self.shard_id = shard_id

        def ExecuteStream(self) -> LoopbackCall:
            return LoopbackCall(cluster.pool.servicers[self.shard_id], events)

    def real_stream(shard_id: int) -> ShardStream:
        if shard_id not in streams:
            streams[shard_id] = ShardStream(LoopbackStub(shard_id))  # type: ignore[arg-type]
        return streams[shard_id]

    real_apply = worker.applier.apply

    def recording_apply(ops: list, local: bool = False) -> int:
        events.append("local applied" if local else "remote applied")
        return real_apply(ops, local=local)

    worker.peers.stream = real_stream  # type: ignore[method-assign]
    worker.applier.apply = recording_apply  # type: ignore[method-assign]
    try:
        for text in ("opens the stream", "on the open stream"):
            events.clear()
            model.post("author", text)
            assert loop.run_until_complete(worker.run_round())
            assert events == ["remote written", "local applied"], text
        model.settle()
        for fan in fans:  # the remote share arrived through the stream too
            model.check_home(fan)
    finally:
        for stream in streams.values():
            stream.close()
        loop.run_until_complete(asyncio.sleep(0))


def test_a_small_round_lingers_and_carries_what_arrives_meanwhile(make_cluster, loop):
    cluster, model, _fans, worker = author_with_fans(make_cluster, loop, 20)
    worker.linger_s = 0.05
    worker.streaming = True  # the last round carried several small records
    model.post("author", "first")

    async def post_during_the_linger() -> bool:
        round_task = asyncio.ensure_future(worker.run_round())
        await asyncio.sleep(0.01)
        await cluster.call(
            "PostTweet",
            pb.PostTweetRequest(user_id=model.user("author"), text="second, while it waits"),
        )
        return await round_task

    cluster.pool.calls.clear()
    assert loop.run_until_complete(post_during_the_linger())
    assert sum(n for (method, _), n in cluster.pool.calls.items() if method == "Deliver") == 1
    assert cluster.backlog() == 0  # both posts went in that one round


def run_round_unless_it_lingers(worker, loop) -> bool:
    """Run one round with a linger far longer than a round takes: it ends in
    time only if it did not linger."""
    worker.linger_s = 60.0
    return loop.run_until_complete(asyncio.wait_for(worker.run_round(), timeout=20))


def test_a_lone_post_goes_without_lingering_unless_posts_stream_in(make_cluster, loop):
    cluster, model, fans, worker = author_with_fans(make_cluster, loop, 20)
    worker.streaming = False  # the last round carried a single record
    model.post("author", "lone")
    assert run_round_unless_it_lingers(worker, loop)
    assert cluster.backlog() == 0
    for fan in fans:
        model.check_home(fan)


def test_a_lone_post_after_a_quiet_spell_is_delivered_without_lingering(make_cluster, loop):
    cluster, model, _fans, worker = author_with_fans(make_cluster, loop, 20)
    worker.streaming = True  # the last busy round carried several
    assert not loop.run_until_complete(worker.run_round())  # then the outbox ran dry
    worker._empty_since -= 120  # ... two minutes ago
    model.post("author", "after the quiet")
    assert run_round_unless_it_lingers(worker, loop)
    assert cluster.backlog() == 0
    assert not worker.streaming  # one record: the next lone one will not linger either


def test_the_next_page_of_a_big_fan_out_goes_without_lingering(make_cluster, loop):
    cluster, model, fans, worker = author_with_fans(make_cluster, loop, 150)
    worker.state.settings.fanout_batch_entries = 100  # a page of 100 followers per round
    worker.streaming = True
    model.post("author", "first")
    model.post("author", "second")
    worker.linger_s = 0.0
    assert loop.run_until_complete(worker.run_round())  # 2 records found, the first cut short
    assert not worker.streaming
    while cluster.backlog():
        assert run_round_unless_it_lingers(worker, loop)
    for fan in fans:
        model.check_home(fan)

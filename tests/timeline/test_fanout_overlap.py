"""A fan-out round starts its calls to the other shards before applying the
local share, so sender and destinations work at the same time; a round with
little to carry waits briefly for more."""

from __future__ import annotations

import asyncio
from typing import Any

from murmur.v1 import murmur_pb2 as pb
from tests.timeline.model import Model


def test_remote_deliveries_leave_before_the_local_share_is_applied(make_cluster, loop):
    cluster = make_cluster(shards=2)
    model = Model(cluster, loop)
    author = model.user("author")
    fans = [model.user(f"fan{i}") for i in range(40)]
    assert {cluster.shard_of(f) for f in fans} == {0, 1}
    for i in range(40):
        model.follow(f"fan{i}", "author")
    model.settle()

    worker = cluster.workers[cluster.shard_of(author)]
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


def test_a_small_round_lingers_and_carries_what_arrives_meanwhile(make_cluster, loop):
    cluster = make_cluster(shards=2)
    model = Model(cluster, loop)
    author = model.user("author")
    for i in range(20):
        model.follow(f"fan{i}", "author")
    model.settle()
    assert {cluster.shard_of(model.user(f"fan{i}")) for i in range(20)} == {0, 1}
    worker = cluster.workers[cluster.shard_of(author)]
    worker.linger_s = 0.05
    model.post("author", "first")

    async def post_during_the_linger() -> bool:
        round_task = asyncio.ensure_future(worker.run_round())
        await asyncio.sleep(0.01)
        await cluster.call(
            "PostTweet", pb.PostTweetRequest(user_id=author, text="second, while it waits")
        )
        return await round_task

    cluster.pool.calls.clear()
    assert loop.run_until_complete(post_during_the_linger())
    assert sum(n for (method, _), n in cluster.pool.calls.items() if method == "Deliver") == 1
    assert cluster.backlog() == 0  # both posts went in that one round

"""The router's per-shard lane: coalescing, and each request's own deadline
even when it waits behind a call that does not come back."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.execute_stream import ShardStream, stream_error
from murmur.slots import even_assignment
from murmur.v1 import murmur_pb2, shard_pb2
from server.shard_pool import MAX_BATCH_CALLS, MAX_BATCH_TWEETS, ShardPool
from server.slot_map import RoutingTable


class StreamOfAnOldShard:
    """ExecuteStream on a shard that predates it: every use is UNIMPLEMENTED."""

    async def write(self, request: Any) -> None:
        raise stream_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    async def read(self) -> Any:
        raise stream_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")

    def cancel(self) -> bool:
        return True


class StuckThenAnswering:
    """A shard whose first call hangs until released; later calls answer.

    It has no ExecuteStream, so the router batches with Execute."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[tuple[str, Any]] = []
        self.streams_opened = 0

    def ExecuteStream(self) -> StreamOfAnOldShard:
        self.streams_opened += 1
        return StreamOfAnOldShard()

    def __getattr__(self, method: str):
        async def call(request: Any, timeout: float | None = None) -> Any:
            self.calls.append((method, request))
            if len(self.calls) == 1:
                await self.release.wait()
            if method == "Execute":
                inbox = shard_pb2.ReadInboxResponse(exact_from=7).SerializeToString()
                return shard_pb2.ExecuteResponse(
                    results=[shard_pb2.ShardCallResult(response=inbox) for _ in request.calls]
                )
            return shard_pb2.ReadInboxResponse(exact_from=7)

        return call


class Stubs:
    def __init__(self, stub: StuckThenAnswering) -> None:
        self.stub = stub
        self.shard_stream = ShardStream(stub)  # type: ignore[arg-type]

    def get(self, shard_id: int, address: str) -> StuckThenAnswering:
        return self.stub

    def stream(self, shard_id: int, address: str) -> ShardStream:
        return self.shard_stream

    async def close(self) -> None:
        return None


def pool_with(stub: StuckThenAnswering) -> ShardPool:
    slot_map = shard_pb2.SlotMap(version=1, addresses={0: "s0"}, owners=even_assignment([0]))
    pool = ShardPool(RoutingTable(slot_map))
    pool._stubs = Stubs(stub)  # type: ignore[assignment]
    return pool


def answering_pool() -> tuple[StuckThenAnswering, ShardPool]:
    """A pool whose shard answers every call at once."""
    stub = StuckThenAnswering()
    stub.release.set()
    return stub, pool_with(stub)


def read(user_id: int) -> shard_pb2.ReadInboxRequest:
    return shard_pb2.ReadInboxRequest(user_id=user_id, limit=20)


def test_requests_behind_a_stuck_call_fail_at_their_own_deadline() -> None:
    async def scenario() -> None:
        stub = StuckThenAnswering()
        pool = pool_with(stub)
        first = asyncio.ensure_future(pool.call(0, "ReadInbox", read(1), 5.0))
        await asyncio.sleep(0.01)  # the first call is now in flight, and stuck
        with pytest.raises(ServiceError) as caught:
            await pool.call(0, "ReadInbox", read(2), 0.05)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "shard 0 (s0)" in caught.value.message
        queued = [asyncio.ensure_future(pool.call(0, "ReadInbox", read(u), 5.0)) for u in (3, 4)]
        await asyncio.sleep(0.01)
        stub.release.set()
        assert (await first).exact_from == 7
        assert [(await q).exact_from for q in queued] == [7, 7]
        # the expired request was dropped from the batch; the other two went together
        assert [m for m, _ in stub.calls] == ["Execute", "Execute"]
        assert [c.method for c in stub.calls[1][1].calls] == ["ReadInbox", "ReadInbox"]
        # the stream was tried once; after UNIMPLEMENTED the shard gets Execute
        assert stub.streams_opened == 1

    asyncio.run(scenario())


def test_an_answer_cancels_the_deadline_timer() -> None:
    async def scenario() -> None:
        _stub, pool = answering_pool()
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        answer = await pool.call(0, "ReadInbox", read(1), 30.0)
        assert answer == shard_pb2.ReadInboxResponse(exact_from=7)
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert len(live) <= before

    asyncio.run(scenario())


def test_ping_is_never_coalesced() -> None:
    async def scenario() -> None:
        stub, pool = answering_pool()
        await asyncio.gather(
            *(pool.call(0, "Ping", murmur_pb2.PingRequest(), 1.0) for _ in range(3))
        )
        assert [m for m, _ in stub.calls] == ["Ping"] * 3

    asyncio.run(scenario())


def test_a_long_queue_goes_in_bounded_batches() -> None:
    """Behind a slow shard the queue can grow past what one message should
    carry: it leaves in batches of at most MAX_BATCH_CALLS, in arrival order."""

    async def scenario() -> None:
        stub = StuckThenAnswering()
        pool = pool_with(stub)
        first = asyncio.ensure_future(pool.call(0, "ReadInbox", read(1), 5.0))
        await asyncio.sleep(0.01)
        queued = [
            asyncio.ensure_future(pool.call(0, "ReadInbox", read(u), 5.0))
            for u in range(2, 2 + MAX_BATCH_CALLS * 2 + 5)
        ]
        await asyncio.sleep(0.01)
        stub.release.set()
        await first
        assert all(answer.exact_from == 7 for answer in await asyncio.gather(*queued))
        sizes = [len(request.calls) for _, request in stub.calls]
        assert sizes == [1, MAX_BATCH_CALLS, MAX_BATCH_CALLS, 5]
        users = [
            shard_pb2.ReadInboxRequest.FromString(call.request).user_id
            for _, request in stub.calls[1:]
            for call in request.calls
        ]
        assert users == list(range(2, 2 + MAX_BATCH_CALLS * 2 + 5))

    asyncio.run(scenario())


def test_big_answers_split_batches_and_an_oversized_one_goes_alone() -> None:
    """The tweets a batch's answers may hold stay within MAX_BATCH_TWEETS:
    per-author pulls (depth x authors) and large pages count in full."""

    async def scenario() -> None:
        stub = StuckThenAnswering()
        pool = pool_with(stub)
        first = asyncio.ensure_future(pool.call(0, "ReadInbox", read(1), 5.0))
        await asyncio.sleep(0.01)
        half = MAX_BATCH_TWEETS // 2
        pulls = [
            shard_pb2.PullTimelinesRequest(author_ids=[7, 8], limit=half // 2, per_author=True),
            shard_pb2.PullTimelinesRequest(author_ids=[9], limit=half, per_author=True),
            shard_pb2.PullTimelinesRequest(author_ids=[10], limit=half + 1, per_author=True),
            shard_pb2.PullTimelinesRequest(
                author_ids=[11, 12], limit=MAX_BATCH_TWEETS, per_author=True
            ),
        ]
        queued = [asyncio.ensure_future(pool.call(0, "PullTimelines", pull, 5.0)) for pull in pulls]
        queued.append(asyncio.ensure_future(pool.call(0, "ReadInbox", read(2), 5.0)))
        await asyncio.sleep(0.01)
        stub.release.set()
        await first
        await asyncio.gather(*queued)
        sizes = [len(request.calls) for _, request in stub.calls]
        # half + half fit; half + 1 does not fit beside them; the oversized
        # pull goes alone; the read that follows it waits for the next batch
        assert sizes == [1, 2, 1, 1, 1]

    asyncio.run(scenario())

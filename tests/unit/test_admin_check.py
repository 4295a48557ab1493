"""CheckConsistency asks each shard about each slot once, however often the
request names it (200,000 copies of one slot used to cost a shard seconds),
and in chunks of slots, however big the shard."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment
from murmur.v1 import admin_pb2, murmur_pb2, shard_pb2
from server.admin import AdminServicer
from server.consistency_check import CHECK_CHUNK_SLOTS
from server.shard_pool import ShardPool
from server.slot_map import RoutingTable


class RecordingPool(ShardPool):
    """Answers CheckSlots with nothing found, and keeps the requests."""

    def __init__(self, table: RoutingTable) -> None:
        super().__init__(table)
        self.asked: list[tuple[int, Any]] = []

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        self.asked.append((shard_id, request))
        return shard_pb2.CheckSlotsResponse()


def test_a_slot_named_many_times_is_checked_once() -> None:
    slot_map = shard_pb2.SlotMap(
        version=1, addresses={0: "s0", 1: "s1"}, owners=even_assignment([0, 1])
    )
    pool = RecordingPool(RoutingTable(slot_map))
    admin = AdminServicer(pool, admin_token=None)
    request = admin_pb2.CheckConsistencyRequest(slots=[5] * 10_000 + [4095, 5, 4095])
    report = asyncio.run(admin._check(request, repair=False))
    assert report.one_sided_edges == 0
    assert [(shard, list(req.slots)) for shard, req in pool.asked] == [(0, [5]), (1, [4095])]


def test_a_slot_out_of_range_is_named() -> None:
    slot_map = shard_pb2.SlotMap(version=1, addresses={0: "s0"}, owners=even_assignment([0]))
    admin = AdminServicer(RecordingPool(RoutingTable(slot_map)), admin_token=None)
    request = admin_pb2.CheckConsistencyRequest(slots=[5, 5000, 4096, 4097])
    with pytest.raises(ServiceError) as info:
        asyncio.run(admin._check(request, repair=False))
    assert info.value.message == "slots must be 0-4095; got 4096-4097,5000"
    request = admin_pb2.CheckConsistencyRequest(slots=range(5000, 5000 + 2 * 21, 2))
    with pytest.raises(ServiceError) as info:
        asyncio.run(admin._check(request, repair=False))
    assert info.value.message.endswith(",5038 and 1 more")


class ChunkPool(RecordingPool):
    """Each CheckSlots answers a stale outbox of 3 and inbox copies of tweets
    1 (gone) and 2; GetTweets knows only tweet 2."""

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        self.asked.append((shard_id, request))
        if method == "CheckSlots":
            return shard_pb2.CheckSlotsResponse(
                stale_outbox_records=3, inbox_tweet_ids=[1, 2], inbox_tweet_copies=[4, 9]
            )
        if method == "GetTweets":
            return shard_pb2.GetTweetsResponse(
                tweets=[murmur_pb2.Tweet(tweet_id=t) for t in request.tweet_ids if t == 2]
            )
        return shard_pb2.DropInboxCopiesResponse(removed=4)


def test_a_whole_cluster_check_goes_in_bounded_chunks_and_counts_copies() -> None:
    """One CheckSlots for all of a shard's slots blocked its loop for seconds
    and could outgrow gRPC's message limit; the outbox is counted once per
    shard, and gone tweets by the copies the inboxes hold."""
    slot_map = shard_pb2.SlotMap(
        version=1, addresses={0: "s0", 1: "s1"}, owners=even_assignment([0, 1])
    )
    pool = ChunkPool(RoutingTable(slot_map))
    admin = AdminServicer(pool, admin_token=None)
    report = asyncio.run(admin._check(admin_pb2.CheckConsistencyRequest(), repair=True))
    checks = [req for _, req in pool.asked if isinstance(req, shard_pb2.CheckSlotsRequest)]
    assert len(checks) == 4096 // CHECK_CHUNK_SLOTS
    assert all(len(req.slots) == CHECK_CHUNK_SLOTS for req in checks)
    assert sorted(s for req in checks for s in req.slots) == list(range(4096))
    assert report.stale_outbox_records == 3 + 3  # two shards, not one per chunk
    assert report.ghost_inbox_copies == 4 * len(checks)
    assert all(req.ids_only for _, req in pool.asked if isinstance(req, shard_pb2.GetTweetsRequest))
    drops = [req for _, req in pool.asked if isinstance(req, shard_pb2.DropInboxCopiesRequest)]
    assert [list(req.tweet_ids) for req in drops] == [[1]] * len(checks)
    assert report.repaired == 4 * len(checks)

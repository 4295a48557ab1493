"""CheckConsistency asks each shard about each slot once, however often the
request names it (200,000 copies of one slot used to cost a shard seconds)."""

from __future__ import annotations

import asyncio
from typing import Any

from murmur.slots import even_assignment
from murmur.v1 import admin_pb2, shard_pb2
from server.admin import AdminServicer
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

"""The router's slot-map refresh: silent shards are not asked, and callers
that waited while another refresh installed a newer map do not refresh again."""

from __future__ import annotations

import asyncio

import pytest

from murmur.slots import even_assignment
from murmur.v1 import shard_pb2
from server import shard_pool
from server.shard_pool import ShardPool
from server.slot_map import RoutingTable


def test_concurrent_refreshes_share_one_and_skip_silent_shards(monkeypatch) -> None:
    addresses = {0: "s0", 1: "s1", 2: "s2"}
    owners = even_assignment([0, 1, 2])
    pool = ShardPool(RoutingTable(shard_pb2.SlotMap(version=3, addresses=addresses, owners=owners)))
    pool.suspect.add(2)
    asked: list[list[str]] = []

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        asked.append(sorted(known))
        await asyncio.sleep(0.01)
        moved = shard_pb2.SlotMap(version=4, addresses={0: "s0", 1: "s1"})
        moved.owners.extend(even_assignment([0, 1]))
        return moved

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)

    async def scenario() -> None:
        await asyncio.gather(pool.refresh_map(), pool.refresh_map(), pool.refresh_map())

    asyncio.run(scenario())
    assert asked == [["s0", "s1"]]
    assert pool.table.version == 4 and 2 not in pool.table.addresses


@pytest.mark.parametrize("suspect", [set(), {0, 1}])
def test_every_shard_is_asked_when_none_or_all_are_silent(monkeypatch, suspect) -> None:
    addresses = {0: "s0", 1: "s1"}
    slot_map = shard_pb2.SlotMap(version=1, addresses=addresses, owners=even_assignment([0, 1]))
    pool = ShardPool(RoutingTable(slot_map))
    pool.suspect.update(suspect)
    asked: list[list[str]] = []

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        asked.append(sorted(known))
        return slot_map

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)
    asyncio.run(pool.refresh_map())
    assert asked == [["s0", "s1"]]

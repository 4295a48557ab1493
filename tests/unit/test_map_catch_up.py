"""A starting shard adopts a newer slot map its peers hold (after a restore
from a backup older than a slot move), and only a newer one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from murmur.slots import SLOT_COUNT
from murmur.v1 import shard_pb2
from shard.map_catch_up import catch_up_map
from shard.settings import ShardSettings
from shard.state import ShardState

ADDRESSES = {0: "s0:1", 1: "s1:1", 2: "s2:1"}
HALF = [0] * (SLOT_COUNT // 2) + [1] * (SLOT_COUNT // 2)


def slot_map(version: int, owners: list[int]) -> shard_pb2.SlotMap:
    return shard_pb2.SlotMap(version=version, addresses=ADDRESSES, owners=owners)


class Peer:
    """Answers GetShardInfo with its map, or fails as a down shard does."""

    def __init__(self, found: shard_pb2.SlotMap | None, shard_id: int) -> None:
        self.found = found
        self.shard_id = shard_id

    async def GetShardInfo(self, request, timeout: float):  # noqa: N802
        if self.found is None:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        return shard_pb2.ShardInfo(
            shard_id=self.shard_id,
            map_version=self.found.version,
            slot_map=self.found,
        )


class Peers:
    def __init__(self, maps: dict[int, shard_pb2.SlotMap | None]) -> None:
        self.maps = maps
        self.asked: list[int] = []

    def stub(self, shard_id: int, address: str) -> Peer:
        assert address == ADDRESSES[shard_id]
        self.asked.append(shard_id)
        return Peer(self.maps[shard_id], shard_id)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ShardState]:
    opened = ShardState.open(str(tmp_path / "db"), 0, ShardSettings())
    opened.ownership.adopt(slot_map(1, HALF))
    yield opened
    opened.store.close()


def test_a_newer_map_is_adopted_and_its_moved_slots_leave(state: ShardState) -> None:
    moved = [1] * 10 + HALF[10:]  # slots 0-9 went to shard 1 after the backup
    peers = Peers({1: slot_map(2, moved), 2: None})
    assert asyncio.run(catch_up_map(state, peers))
    assert sorted(peers.asked) == [1, 2]  # never itself
    assert state.ownership.slot_map.version == 2
    assert not any(state.ownership.owned[s] for s in range(10))
    assert state.ownership.owned[10]


def test_an_older_or_equal_map_changes_nothing(state: ShardState) -> None:
    peers = Peers({1: slot_map(1, HALF), 2: shard_pb2.SlotMap()})
    assert asyncio.run(catch_up_map(state, peers))
    assert state.ownership.slot_map.version == 1 and state.ownership.owned[0]


def test_no_peer_answering_is_reported_so_the_shard_asks_again(state: ShardState) -> None:
    assert not asyncio.run(catch_up_map(state, Peers({1: None, 2: None})))
    assert state.ownership.slot_map.version == 1


def test_a_shard_without_a_map_asks_nobody(tmp_path: Path) -> None:
    fresh = ShardState.open(str(tmp_path / "fresh"), 0, ShardSettings())
    try:
        peers = Peers({})
        assert asyncio.run(catch_up_map(fresh, peers))
        assert peers.asked == [] and not fresh.ownership.assigned
    finally:
        fresh.store.close()


def test_a_map_from_another_cluster_at_a_peers_old_address_is_ignored(state: ShardState) -> None:
    """The address now belongs to a shard whose map does not list this one
    there: none of this cluster's shards answered, so it asks again later."""
    foreign = shard_pb2.SlotMap(version=9, addresses={0: "elsewhere:1", 1: "s1:1"}, owners=HALF)
    peers = Peers({1: foreign, 2: None})
    assert not asyncio.run(catch_up_map(state, peers))
    assert state.ownership.slot_map.version == 1

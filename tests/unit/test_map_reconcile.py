"""Diverged slot maps (two map changes that took one version) are mended
from the slots each shard owns by its own map (server/map_reconcile.py),
and a router starting up pushes a lagging shard the newest map as it is."""

from __future__ import annotations

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import SLOT_COUNT, even_assignment, slot_ranges
from murmur.v1 import shard_pb2
from server.map_reconcile import diverged, reconciled_map
from server.slot_map import plan_map

ADDRESSES = {i: f"127.0.0.1:{5000 + i}" for i in range(4)}
BASE = even_assignment([0, 1, 2, 3])
S1 = [s for s in range(SLOT_COUNT) if BASE[s] == 0][:64]  # moved 0 -> 2 by one router
S2 = [s for s in range(SLOT_COUNT) if BASE[s] == 1][:64]  # moved 1 -> 3 by the other


def moved(owners: list[int], slots: list[int], target: int) -> list[int]:
    return [target if s in slots else o for s, o in enumerate(owners)]


def info(shard_id: int, version: int, owners: list[int]) -> shard_pb2.ShardInfo:
    mine = [s for s, o in enumerate(owners) if o == shard_id]
    return shard_pb2.ShardInfo(
        shard_id=shard_id,
        map_version=version,
        slot_map=shard_pb2.SlotMap(version=version, addresses=ADDRESSES, owners=owners),
        owned=[shard_pb2.SlotRange(start=a, end=b) for a, b in slot_ranges(mine)],
    )


def two_moves_at_once() -> dict[str, shard_pb2.ShardInfo]:
    a, b = moved(BASE, S1, 2), moved(BASE, S2, 3)
    return {ADDRESSES[i]: info(i, 2, a if i in (0, 2) else b) for i in range(4)}


def test_two_maps_under_one_version_merge_into_the_next_from_the_shards_claims() -> None:
    infos = two_moves_at_once()
    assert diverged(infos)
    merged = reconciled_map(infos)
    assert merged.version == 3
    assert list(merged.owners) == moved(moved(BASE, S1, 2), S2, 3)
    assert dict(merged.addresses) == ADDRESSES


def test_a_lagging_shard_is_not_divergence() -> None:
    infos = {ADDRESSES[i]: info(i, 2 if i < 2 else 1, BASE) for i in range(4)}
    assert not diverged(infos)


def test_slots_nobody_answering_claims_are_named_not_guessed() -> None:
    infos = two_moves_at_once()
    del infos[ADDRESSES[3]]  # the target of one move is down
    with pytest.raises(ServiceError) as refused:
        reconciled_map(infos)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"slots {S2[0]}-{S2[-1]} are claimed by no answering shard" in refused.value.message


def test_slots_two_shards_claim_are_named() -> None:
    infos = two_moves_at_once()
    infos[ADDRESSES[1]] = info(1, 1, BASE)  # its move's target took the map, it not yet
    with pytest.raises(
        ServiceError, match=rf"slots {S2[0]}-{S2[-1]} are claimed by shards \[1, 3\]"
    ):
        reconciled_map(infos)


def test_start_up_pushes_the_mended_map() -> None:
    slot_map, push = plan_map(two_moves_at_once())
    assert push and slot_map.version == 3
    assert list(slot_map.owners) == moved(moved(BASE, S1, 2), S2, 3)


def test_start_up_gives_lagging_shards_the_newest_map_as_it_is() -> None:
    """A new version made from it could collide with a move in flight that
    makes the same version (the crash case a review found)."""
    newer = moved(BASE, S1, 2)
    infos = {
        ADDRESSES[i]: info(i, 2 if i in (0, 2) else 1, newer if i in (0, 2) else BASE)
        for i in range(4)
    }
    slot_map, push = plan_map(infos)
    assert push and slot_map.version == 2 and list(slot_map.owners) == newer


def test_start_up_with_every_shard_current_pushes_nothing() -> None:
    slot_map, push = plan_map({ADDRESSES[i]: info(i, 5, BASE) for i in range(4)})
    assert not push and slot_map.version == 5


def test_start_up_with_maps_it_cannot_mend_serves_at_the_given_addresses_and_pushes_nothing() -> (
    None
):
    infos = two_moves_at_once()
    del infos[ADDRESSES[3]]  # one move's target is down: its slots have no claimant
    moved_shard = info(1, 2, moved(BASE, S2, 3))
    infos = {**infos, "10.0.0.9:7000": moved_shard}  # shard 1 now answers at a new address
    del infos[ADDRESSES[1]]
    slot_map, push = plan_map(infos)
    assert not push
    assert slot_map.addresses[1] == "10.0.0.9:7000"

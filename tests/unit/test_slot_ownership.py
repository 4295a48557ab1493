"""``SlotOwnership.check_all``: the one-pass check fan-out uses must refuse
exactly what checking each slot would refuse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment
from murmur.v1 import shard_pb2
from shard.ownership import SlotOwnership
from shard.store import Store


@pytest.fixture
def ownership(tmp_path: Path) -> Iterator[SlotOwnership]:
    store = Store(str(tmp_path / "db"))
    yield SlotOwnership(store, 0)
    store.close()


def assign(ownership: SlotOwnership) -> tuple[list[int], list[int]]:
    owners = even_assignment([0, 1])
    ownership.adopt(shard_pb2.SlotMap(version=1, addresses={0: "a:1", 1: "b:1"}, owners=owners))
    mine = [slot for slot, owner in enumerate(owners) if owner == 0]
    theirs = [slot for slot, owner in enumerate(owners) if owner == 1]
    return mine, theirs


def refusal(call) -> grpc.StatusCode | None:
    try:
        call()
    except ServiceError as exc:
        return exc.code
    return None


def test_owned_slots_pass_and_owner_of_reads_the_map(ownership: SlotOwnership) -> None:
    mine, theirs = assign(ownership)
    ownership.check_all(mine)
    assert {ownership.owner_of(s) for s in mine} == {0}
    assert {ownership.owner_of(s) for s in theirs} == {1}


def test_one_foreign_slot_is_refused_as_check_refuses_it(ownership: SlotOwnership) -> None:
    mine, theirs = assign(ownership)
    expected = refusal(lambda: ownership.check(theirs[0]))
    assert expected is not None
    assert refusal(lambda: ownership.check_all([*mine[:50], theirs[0]])) == expected


def test_a_moving_slot_refuses_callers_but_not_local_fanout(ownership: SlotOwnership) -> None:
    mine, _ = assign(ownership)
    ownership.frozen[mine[3]] = "slot is moving"
    assert refusal(lambda: ownership.check_all(mine)) == grpc.StatusCode.UNAVAILABLE
    ownership.check_all(mine, local_delivery=True)
    ownership.sealed.add(mine[4])
    assert refusal(lambda: ownership.check_all(mine, local_delivery=True)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_nothing_passes_before_slots_are_assigned(ownership: SlotOwnership) -> None:
    assert refusal(lambda: ownership.check_all([0, 1])) == grpc.StatusCode.UNAVAILABLE

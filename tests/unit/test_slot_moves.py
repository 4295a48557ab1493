"""Slot move plans: a drain moves the leaving shard's slots and nothing else."""

from __future__ import annotations

from collections import Counter

from server.slot_moves import CHUNK, drain_plan, rebalance_plan


def applied(owners: list[int], plan: list[tuple[list[int], int]]) -> list[int]:
    after = list(owners)
    for slots, target in plan:
        for slot in slots:
            after[slot] = target
    return after


def test_draining_a_shard_that_owns_nothing_moves_nothing() -> None:
    owners = [0] * 2348 + [1] * 1748
    assert drain_plan(owners, 2, [0, 1, 2]) == []


def test_a_drain_moves_only_the_leaving_shards_slots_to_the_emptiest_first() -> None:
    owners = [0] * 2000 + [1] * 1000 + [2] * 1096
    plan = drain_plan(owners, 2, [0, 1, 2])
    moved = [slot for slots, _ in plan for slot in slots]
    assert sorted(moved) == list(range(3000, 4096))
    assert all(len(slots) <= CHUNK for slots, _ in plan)
    counts = Counter(applied(owners, plan))
    # shard 1 is filled up to shard 0 first, then both share the rest
    assert counts == {0: 2048, 1: 2048}
    assert all(target in (0, 1) for _, target in plan)


def test_a_rebalance_still_evens_every_shard_out() -> None:
    owners = [0] * 2348 + [1] * 1748
    plan = rebalance_plan(owners, [0, 1, 2])
    counts = Counter(applied(owners, plan))
    assert sorted(counts.values()) == [1365, 1365, 1366]

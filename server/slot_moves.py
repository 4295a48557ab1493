"""Planning slot moves: which slots go where for a rebalance or a drain."""

from __future__ import annotations

from collections import defaultdict

CHUNK = 64  # slots per hand-over: one freeze, one new map version


def owned_by(owners: list[int]) -> dict[int, list[int]]:
    result: dict[int, list[int]] = defaultdict(list)
    for slot, owner in enumerate(owners):
        result[owner].append(slot)
    return result


def rebalance_plan(owners: list[int], shard_ids: list[int]) -> list[tuple[list[int], int]]:
    """Moves (slots, target) that leave every shard within one slot of the mean,
    taking from the fullest shards' highest slots so runs stay contiguous."""
    holdings = owned_by(owners)
    shards = sorted(shard_ids)
    total = len(owners)
    quota = {
        s: total // len(shards) + (1 if i < total % len(shards) else 0)
        for i, s in enumerate(shards)
    }
    surplus: list[int] = []
    for shard in shards:
        held = sorted(holdings.get(shard, []))
        extra = len(held) - quota[shard]
        if extra > 0:
            surplus.extend(held[-extra:])
    for shard, held in holdings.items():
        if shard not in quota:
            surplus.extend(held)
    moves: list[tuple[list[int], int]] = []
    for shard in shards:
        need = quota[shard] - len(holdings.get(shard, []))
        if need > 0:
            give, surplus = surplus[:need], surplus[need:]
            moves.extend(chunked(give, shard))
    return moves


def drain_plan(
    owners: list[int], leaving: int, shard_ids: list[int]
) -> list[tuple[list[int], int]]:
    """Moves that take every slot of ``leaving`` and nothing else (a drain
    must not move, and freeze, slots the operator did not ask about). They
    go to the staying shards that hold the fewest first, in contiguous runs;
    ``rebalance_plan`` evens the rest out if the operator wants that."""
    staying = sorted(s for s in shard_ids if s != leaving)
    if not staying:
        raise ValueError("cannot drain the only shard")
    holdings = owned_by(owners)
    held = {s: len(holdings.get(s, [])) for s in staying}
    taken: dict[int, int] = {s: 0 for s in staying}
    for _ in holdings.get(leaving, []):  # one slot at a time to the emptiest
        target = min(staying, key=lambda s: (held[s] + taken[s], s))
        taken[target] += 1
    moves: list[tuple[list[int], int]] = []
    remaining = sorted(holdings.get(leaving, []))
    for shard in staying:
        give, remaining = remaining[: taken[shard]], remaining[taken[shard] :]
        moves.extend(chunked(give, shard))
    return moves


def chunked(slots: list[int], target: int) -> list[tuple[list[int], int]]:
    ordered = sorted(slots)
    return [(ordered[i : i + CHUNK], target) for i in range(0, len(ordered), CHUNK)]

"""Hash slots: the fixed unit of ownership and migration.

``slot = murmur3(user_id) mod 4096`` forever, as in Redis Cluster. Handles hash
to a slot too, and a user is minted into the slot of their handle (see
``murmur.ids``), so the handle index and the profile share one atomic batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import mmh3

SLOT_COUNT = 4096


def slot_for_user(user_id: int) -> int:
    """The slot that owns everything the user owns."""
    return mmh3.hash(user_id.to_bytes(8, "big"), signed=False) % SLOT_COUNT


def slots_for_users(user_ids: Iterable[int]) -> list[int]:
    """``slot_for_user`` of many ids: fan-out hashes every follower of every
    tweet, and a call per id cost as much as the hash itself."""
    hash_, size = mmh3.hash, SLOT_COUNT
    return [hash_(user_id.to_bytes(8, "big"), signed=False) % size for user_id in user_ids]


def slot_for_handle(handle: str) -> int:
    """The slot that owns a handle; handles are compared ignoring case."""
    return mmh3.hash(handle.lower().encode("utf-8"), signed=False) % SLOT_COUNT


def even_assignment(shard_ids: list[int]) -> list[int]:
    """Spread the slots over shards in contiguous, nearly equal runs.

    Returns ``owners`` with ``owners[slot] = shard_id``.
    """
    if not shard_ids:
        raise ValueError("at least one shard is needed")
    count = len(shard_ids)
    return [shard_ids[slot * count // SLOT_COUNT] for slot in range(SLOT_COUNT)]


def slot_ranges(slots: list[int]) -> list[tuple[int, int]]:
    """Collapse slot numbers into sorted inclusive runs: [1,2,3,7] -> [(1,3),(7,7)]."""
    runs: list[tuple[int, int]] = []
    for slot in sorted(set(slots)):
        if runs and runs[-1][1] == slot - 1:
            runs[-1] = (runs[-1][0], slot)
        else:
            runs.append((slot, slot))
    return runs


def describe_slots(slots) -> str:
    """Slots as an operator reads them in a message: "0-255,4000"."""
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in slot_ranges(list(slots)))


def map_coordinator(owners: Iterable[int]) -> int | None:
    """The shard that holds the slot map's change lease: the lowest id that
    owns a slot. Not merely the lowest id in the map: a shard drained (and
    maybe dead) or one just added owns nothing, and neither may hold up
    every map change (removing it included)."""
    return min(set(owners), default=None)

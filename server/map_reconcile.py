"""Diverged slot maps: two map changes that took the same version.

Each router builds a map change as its own map's version + 1 and serializes
the changes it makes itself; two routers changing the map at once (moves
for disjoint pairs of shards, say) can both make version N+1, each pair of
shards taking the one it was sent. Left alone, the next change built on
either map would hand the other change's slots back to their old owner,
which had deleted them. So before any map change, and at start-up, a
router that finds shards holding different maps under the newest version
rebuilds the map from what each shard owns by its own map (the slots a
move handed over are claimed by its target alone) and publishes that as
version N+2. A slot that no shard, or two, claims (a shard down, a
hand-over half done) leaves the divergence to be mended later, by name.
"""

from __future__ import annotations

import grpc

from murmur.errors import ServiceError
from murmur.slots import SLOT_COUNT, describe_slots
from murmur.v1 import shard_pb2


def diverged(infos: dict[str, shard_pb2.ShardInfo]) -> bool:
    """Do shards hold different maps under the newest version?"""
    top = max(info.map_version for info in infos.values())
    tops = [info.slot_map for info in infos.values() if info.map_version == top]
    return any(
        list(m.owners) != list(tops[0].owners) or dict(m.addresses) != dict(tops[0].addresses)
        for m in tops[1:]
    )


def claims(infos: dict[str, shard_pb2.ShardInfo]) -> list[list[int]]:
    """claims[slot]: the shards whose own map gives them the slot."""
    claimed: list[list[int]] = [[] for _ in range(SLOT_COUNT)]
    for info in infos.values():
        for run in info.owned:
            for slot in range(run.start, min(run.end, SLOT_COUNT - 1) + 1):
                claimed[slot].append(info.shard_id)
    return claimed


def reconciled_map(infos: dict[str, shard_pb2.ShardInfo]) -> shard_pb2.SlotMap:
    """The map the shards' own claims describe, as the newest version + 1.

    Slots the newest maps agree on keep their owner; each slot they disagree
    on goes to the one shard that claims it. Addresses are the union of the
    newest maps' (a shard one change added is kept). Raises FAILED_PRECONDITION
    naming the slots no shard or several shards claim."""
    top = max(info.map_version for info in infos.values())
    tops = [info.slot_map for info in infos.values() if info.map_version == top]
    claimed = claims(infos)
    merged = shard_pb2.SlotMap(version=top + 1)
    for slot_map in tops:
        merged.addresses.update(slot_map.addresses)
    unclaimed: list[int] = []
    contested: dict[int, list[int]] = {}
    for slot in range(SLOT_COUNT):
        owners = {slot_map.owners[slot] for slot_map in tops}
        if len(owners) == 1:
            merged.owners.append(owners.pop())
        elif len(claimed[slot]) == 1:
            merged.owners.append(claimed[slot][0])
        elif claimed[slot]:
            contested[slot] = claimed[slot]
        else:
            unclaimed.append(slot)
    if unclaimed or contested:
        problems = []
        if unclaimed:
            problems.append(f"slots {describe_slots(unclaimed)} are claimed by no answering shard")
        if contested:
            problems.append(
                f"slots {describe_slots(sorted(contested))} are claimed by shards "
                f"{sorted({s for c in contested.values() for s in c})} at once"
            )
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"shards hold different slot maps under version {top} (two map changes made at "
            f"once through different routers), and they cannot be merged yet: "
            f"{'; '.join(problems)}; retry once every shard answers and no move is running",
        )
    return merged

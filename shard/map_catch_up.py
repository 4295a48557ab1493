"""A shard that starts with an older slot map than its peers catches up.

A shard's stored map falls behind the cluster's when its data folder is
older than the cluster (restored from a backup taken before a slot move),
or when it was down while a router published a map change. Acting on that
map, it would take slots a move gave away as its own: routers (on the new
map) send their users elsewhere, but this shard's fan-out would put its
authors' tweets into the stale copies of those users' inboxes here, where
no read ever finds them. So before it delivers anything, a starting shard
asks the shards its map names for theirs and adopts the newest, as if a
router had pushed it (``AssignSlots``).
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from murmur.slots import describe_slots
from murmur.v1 import shard_pb2
from shard.migration import pending_handover, take_map
from shard.peers import PeerShards
from shard.state import ShardState

log = logging.getLogger("murmur.shard.map")
ASK_TIMEOUT_S = 2.0
RETRY_S = 2.0


async def peers_newest_map(state: ShardState, peers: PeerShards) -> shard_pb2.SlotMap | None:
    """The newest map the other shards in this shard's map hold; None if
    none of them answered."""
    own = state.ownership.slot_map
    others = {s: a for s, a in own.addresses.items() if s != state.shard_id}
    asks = [
        peers.stub(shard_id, address).GetShardInfo(
            shard_pb2.GetShardInfoRequest(), timeout=ASK_TIMEOUT_S
        )
        for shard_id, address in others.items()
    ]
    answers = await asyncio.gather(*asks, return_exceptions=True)
    maps = []
    for shard_id, answer in zip(others, answers, strict=True):
        if isinstance(answer, grpc.aio.AioRpcError):
            log.debug("shard %d did not say which map it holds: %s", shard_id, answer.code())
        elif isinstance(answer, shard_pb2.ShardInfo) and same_cluster(state, shard_id, answer):
            maps.append(answer.slot_map)
    return max(maps, key=lambda m: m.version) if maps else None


def same_cluster(state: ShardState, shard_id: int, info: shard_pb2.ShardInfo) -> bool:
    """Whether the shard that answered is the one asked, in this shard's
    cluster: an address can change hands (a test's ports, a reused host),
    and a map from another cluster must not be adopted."""
    own_address = state.ownership.slot_map.addresses.get(state.shard_id, "")
    ours = info.shard_id == shard_id and info.slot_map.addresses.get(state.shard_id) == own_address
    if not ours:
        log.warning(
            "the process at shard %d's address is shard %d of a map that does not list this "
            "shard at %s; its map is ignored",
            shard_id,
            info.shard_id,
            own_address,
        )
    return ours


def adopt_if_newer(state: ShardState, newest: shard_pb2.SlotMap) -> bool:
    """Adopt ``newest`` if it is newer than this shard's map; True if it was."""
    ownership = state.ownership
    before = ownership.slot_map.version
    if newest.version <= before:
        return False
    owned, me = ownership.owned, state.shard_id
    lost = [slot for slot, owner in enumerate(newest.owners) if owned[slot] and owner != me]
    gained = take_map(state, newest)
    log.warning(
        "this shard's slot map (version %d) is older than its peers' (version %d): restored "
        "from an older backup, or down during a map change; adopted theirs%s%s",
        before,
        newest.version,
        f"; slots {describe_slots(lost)} moved away since and are no longer served here"
        if lost
        else "",
        f"; slots {describe_slots(gained)} moved here since: their data is not in this "
        "shard's folder"
        if gained
        else "",
    )
    return True


async def catch_up_map(state: ShardState, peers: PeerShards) -> bool:
    """One round: ask the peers and adopt a newer map. True once there is
    nothing more to learn (a peer answered, or there is no peer to ask),
    False if no peer answered."""
    if not state.ownership.assigned or len(state.ownership.slot_map.addresses) < 2:
        return True  # a new shard: the first router gives it its map
    if pending_handover(state) is not None:
        return True  # settle_at_start asks the move's target and adopts its map
    newest = await peers_newest_map(state, peers)
    if newest is None:
        return False
    adopt_if_newer(state, newest)
    return True


async def keep_catching_up(state: ShardState, peers: PeerShards) -> None:
    """When no peer answered at start-up: ask again until one does (the
    fan-out meanwhile acts on the stored map)."""
    # the usual case when a whole cluster starts at once: not worth a warning
    log.info("no other shard answered yet; asking again for a newer slot map")
    while not await catch_up_map(state, peers):
        await asyncio.sleep(RETRY_S)

"""The router's cached slot -> shard map, and how a router learns it.

The map lives on the shards. A router asks every shard it was given for its
stored map and adopts the newest; a brand-new cluster (no shard has a map)
gets an even assignment, pushed to every shard before the router serves by
the one router holding every shard's map lease (``_founding_leases``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Collection

import grpc

from murmur import tls
from murmur.errors import ServiceError
from murmur.ids import slot_of_tweet
from murmur.slots import (
    SLOT_COUNT,
    even_assignment,
    map_coordinator,
    slot_for_handle,
    slot_for_user,
)
from murmur.v1 import shard_pb2, shard_pb2_grpc
from server.map_reconcile import diverged, reconciled_map

log = logging.getLogger("murmur.router.slots")
ATTEMPT_TIMEOUT_S = 2.0  # one GetShardInfo; a shard slower than this is silent
BRIEF_ATTEMPT_S = 1.0  # the least an attempt gets; the one try a known-silent shard gets
FOUNDING_ATTEMPTS = 20  # a router founding the cluster at once with this one: learn its map
FOUNDING_PAUSE_S = 0.5
START_LEASE_MS = 30_000  # a starting router that dies holds map changes up this long at most


class RoutingTable:
    """owners[slot] = shard id, plus each shard's address."""

    def __init__(self, slot_map: shard_pb2.SlotMap) -> None:
        self.install(slot_map)

    def install(self, slot_map: shard_pb2.SlotMap) -> None:
        self.slot_map = slot_map
        self.version = slot_map.version
        self.owners = list(slot_map.owners)
        self.addresses = dict(slot_map.addresses)

    def shard_for_slot(self, slot: int) -> int:
        return self.owners[slot]

    def shard_for_user(self, user_id: int) -> int:
        return self.owners[slot_for_user(user_id)]

    def shard_for_handle(self, handle: str) -> int:
        return self.owners[slot_for_handle(handle)]

    def shard_for_tweet(self, tweet_id: int) -> int:
        return self.owners[slot_of_tweet(tweet_id)]

    def group_users(self, user_ids: list[int]) -> dict[int, list[int]]:
        """User ids grouped by owning shard: one batched call per shard."""
        groups: dict[int, list[int]] = {}
        for user_id in user_ids:
            groups.setdefault(self.shard_for_user(user_id), []).append(user_id)
        return groups


async def fetch_info(address: str, deadline: float) -> shard_pb2.ShardInfo | None:
    """Ask one shard who it is, retrying while it starts up; None if it never answers."""
    async with tls.aio_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        while True:
            # no attempt outlasts the deadline by much: a brief ask stays brief
            timeout = min(ATTEMPT_TIMEOUT_S, max(deadline - time.monotonic(), BRIEF_ATTEMPT_S))
            try:
                return await stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=timeout)
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    return None
                await asyncio.sleep(0.2)


async def fetch_infos(
    addresses: list[str],
    wait_s: float = 30.0,
    require_all: bool = False,
    silent_log_level: int = logging.WARNING,
    brief: Collection[str] = (),
) -> dict[str, shard_pb2.ShardInfo]:
    """Ask every shard who it is, in parallel, waiting for ones still starting.

    Shards that stay silent are left out (their users get UNAVAILABLE until
    they return), unless ``require_all`` or none answered at all: then a
    ServiceError (UNAVAILABLE) names them. Not SystemExit: a router already
    serving calls this too (admin moves), and gRPC lets BaseException out of
    a handler, killing the process; only ``bootstrap`` turns it into an exit.
    Shards in ``brief`` (known to be silent) get one try of BRIEF_ATTEMPT_S.
    """
    now = time.monotonic()
    waits = {a: 0.0 if a in brief else wait_s for a in addresses}
    answers = await asyncio.gather(*(fetch_info(a, now + waits[a]) for a in addresses))
    infos = {a: info for a, info in zip(addresses, answers, strict=True) if info is not None}
    silent = [a for a in addresses if a not in infos]
    if silent and (require_all or not infos):
        raise ServiceError(grpc.StatusCode.UNAVAILABLE, describe_silence(silent, waits))
    if silent:
        log.log(
            silent_log_level,
            "shards at %s are not answering; serving without them",
            ", ".join(silent),
        )
    return infos


def describe_silence(silent: list[str], waits: dict[str, float]) -> str:
    """The refusal: one wait for all ("shards at A, B did not answer within
    5s"), or each one's own when they were not given the same."""
    waited = {a: max(waits[a], BRIEF_ATTEMPT_S) for a in silent}
    if len(set(waited.values())) == 1:
        return f"shards at {', '.join(silent)} did not answer within {waited[silent[0]]:.0f}s"
    each = ", ".join(f"{a} within {waited[a]:.0f}s" for a in silent)
    return f"shards did not answer: {each}"


def newest_info(infos: dict[str, shard_pb2.ShardInfo]) -> shard_pb2.ShardInfo:
    """The answer holding the newest slot map."""
    return max(infos.values(), key=lambda info: info.map_version)


async def newest_map(
    addresses: list[str], wait_s: float, silent_log_level: int = logging.WARNING
) -> shard_pb2.SlotMap:
    """The newest slot map any reachable shard holds."""
    infos = await fetch_infos(addresses, wait_s=wait_s, silent_log_level=silent_log_level)
    return newest_info(infos).slot_map


def plan_map(infos: dict[str, shard_pb2.ShardInfo]) -> tuple[shard_pb2.SlotMap, bool]:
    """The map to serve with, and whether it must be pushed to the shards."""
    by_id = shards_by_id(infos)
    newest = newest_info(infos)
    if newest.map_version == 0:
        owners = even_assignment(sorted(by_id))
        return shard_pb2.SlotMap(version=1, addresses=by_id, owners=owners), True
    slot_map, mendable = start_map(infos, newest)
    changed = slot_map.version != newest.map_version
    changed |= take_given_addresses(slot_map, by_id)
    if not mendable:
        return slot_map, False
    if changed:
        if slot_map.version == newest.map_version:
            slot_map.version += 1
        return slot_map, True
    # shards behind take the newest map as it is: a new version made from it
    # here could collide with a move in flight that makes the same one
    stale = any(info.map_version != newest.map_version for info in infos.values())
    return slot_map, stale


def shards_by_id(infos: dict[str, shard_pb2.ShardInfo]) -> dict[int, str]:
    """Each answering shard's address by its id; two shards with one id
    cannot form a cluster, so the router refuses to start."""
    by_id: dict[int, str] = {}
    for address, info in infos.items():
        if info.shard_id in by_id:
            raise SystemExit(
                f"shards at {by_id[info.shard_id]} and {address} both have id {info.shard_id}; "
                "start each with a distinct --shard-id"
            )
        by_id[info.shard_id] = address
    return by_id


def take_given_addresses(slot_map: shard_pb2.SlotMap, by_id: dict[int, str]) -> bool:
    """Put the addresses the router was started with into ``slot_map``
    (a shard may have moved host); True if any changed. Warns about shards
    that own nothing and owners it was not given."""
    changed = False
    owners = set(slot_map.owners)
    for shard_id, address in by_id.items():
        if shard_id not in owners:
            log.warning("shard %d at %s owns no slots; migrate slots to it", shard_id, address)
        stored = slot_map.addresses.get(shard_id)
        if stored != address:
            if stored:  # every router given another spelling changes it back at its start
                log.warning(
                    "shard %d's stored address %s becomes %s, as --shards gives it; give "
                    "every router the same spelling, or they rewrite it at each start",
                    shard_id,
                    stored,
                    address,
                )
            slot_map.addresses[shard_id] = address
            changed = True
    missing = owners - set(by_id)
    if missing:
        log.warning("slot owners %s were not given in --shards; using stored addresses", missing)
    return changed


def start_map(
    infos: dict[str, shard_pb2.ShardInfo], newest: shard_pb2.ShardInfo
) -> tuple[shard_pb2.SlotMap, bool]:
    """The newest map, or the mended one if maps diverged under one version
    (``server/map_reconcile.py``); False if they cannot be mended yet (then
    the router serves the newest and pushes nothing: a map change mends it)."""
    slot_map = shard_pb2.SlotMap()
    if not diverged(infos):
        slot_map.CopyFrom(newest.slot_map)
        return slot_map, True
    try:
        slot_map.CopyFrom(reconciled_map(infos))
    except ServiceError as exc:
        log.warning("%s", exc.message)
        slot_map.CopyFrom(newest.slot_map)
        return slot_map, False
    log.warning(
        "shards held different slot maps under version %d; pushing version %d, built from "
        "the slots each shard owns",
        newest.map_version,
        slot_map.version,
    )
    return slot_map, True


async def bootstrap(addresses: list[str], wait_s: float = 30.0) -> RoutingTable:
    """Learn (or, for a new cluster, create) the slot map and make every shard hold it.

    At start-up a router with no shard to learn the map from cannot serve, so
    silence here ends the process with one clear line.
    """
    for _ in range(FOUNDING_ATTEMPTS):
        try:
            infos = await fetch_infos(addresses, wait_s)
        except ServiceError as exc:
            raise SystemExit(exc.message) from None
        if newest_info(infos).map_version > 0:
            return await _adopt_stored(infos)
        if len(infos) < len(addresses):
            raise SystemExit("a new cluster needs every shard to answer before slots are assigned")
        founded = await _found(addresses, infos)
        if founded is not None:
            return founded
        await asyncio.sleep(FOUNDING_PAUSE_S)  # another router is founding it: learn its map
    raise SystemExit(
        f"another router kept founding the new cluster for {FOUNDING_ATTEMPTS} tries; "
        "start this one again once it is up"
    )


async def _adopt_stored(infos: dict[str, shard_pb2.ShardInfo]) -> RoutingTable:
    """Serve with the newest stored map (given addresses taken, a divergence
    mended), pushing a new version under the map lease."""
    slot_map, push = plan_map(infos)
    if len(slot_map.owners) != SLOT_COUNT:
        raise SystemExit(f"stored slot map has {len(slot_map.owners)} slots, not {SLOT_COUNT}")
    if push and slot_map.version > max(newest_info(infos).map_version, 1):
        async with _start_lease(infos) as granted:  # a new version: a map change
            if granted:
                await _push(slot_map, infos)
    elif push:  # the newest to shards behind
        await _push(slot_map, infos)
    return RoutingTable(slot_map)


async def _found(
    addresses: list[str], infos: dict[str, shard_pb2.ShardInfo]
) -> RoutingTable | None:
    """Push a new cluster's first map, holding every shard's map lease
    (``_founding_leases``); None if another router holds one of them, or
    founded the cluster while this one took them."""
    async with _founding_leases(infos) as granted:
        if not granted:
            return None
        try:
            infos = await fetch_infos(addresses, ATTEMPT_TIMEOUT_S)
        except ServiceError:
            return None
        if len(infos) < len(addresses) or newest_info(infos).map_version > 0:
            return None
        slot_map, _ = plan_map(infos)
        await _push(slot_map, infos)
        return RoutingTable(slot_map)


@contextlib.asynccontextmanager
async def _founding_leases(infos: dict[str, shard_pb2.ShardInfo]) -> AsyncIterator[bool]:
    """The map lease of every shard of a new cluster (a shard with no map
    grants it), taken in shard-id order and released at the end: True if
    all were granted. Two routers whose --shards lists share a shard both
    need its lease, so one founds the cluster and the other then learns
    its map; the order keeps two from each holding a lease the other waits
    for."""
    holder = f"router founding, pid {os.getpid()} {secrets.token_hex(4)}"
    held: list[str] = []
    try:
        for address, _ in sorted(infos.items(), key=lambda item: item[1].shard_id):
            refused = await _acquire(address, holder)
            if refused is not None:
                log.info("no founding lease from %s: %s; waiting for its map", address, refused)
                yield False
                return
            held.append(address)
        yield True
    finally:
        for address in held:
            await _release(address, holder)


async def _acquire(address: str, holder: str) -> str | None:
    """Take the map lease at ``address`` for ``holder`` at start-up: None
    once held, else why not."""
    async with tls.aio_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        request = shard_pb2.AcquireMapLeaseRequest(holder=holder, ttl_ms=START_LEASE_MS)
        try:
            lease = await stub.AcquireMapLease(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return f"no map lease ({exc.details()})"
    return None if lease.granted else f"{lease.holder} is changing the map"


async def _release(address: str, holder: str) -> None:
    async with tls.aio_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        with contextlib.suppress(grpc.aio.AioRpcError):  # it expires by itself
            await stub.ReleaseMapLease(shard_pb2.ReleaseMapLeaseRequest(holder=holder), timeout=5)


async def _push(slot_map: shard_pb2.SlotMap, infos: dict[str, shard_pb2.ShardInfo]) -> None:
    for address in infos:
        async with tls.aio_channel(address) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            request = shard_pb2.AssignSlotsRequest(slot_map=slot_map)
            try:
                await stub.AssignSlots(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                raise SystemExit(
                    f"the shard at {address} refused slot map version {slot_map.version}: "
                    f"{exc.code().name}: {exc.details()}"
                ) from None
    log.info("slot map version %d pushed to %d shards", slot_map.version, len(infos))


@contextlib.asynccontextmanager
async def _start_lease(infos: dict[str, shard_pb2.ShardInfo]) -> AsyncIterator[bool]:
    """A new version made at start-up (new shard addresses, a mended map) is
    a map change like any other: pushed only under the map-change lease
    (``server/map_change_lease.py``). Refused or unreachable: the router
    serves with its map and pushes nothing (logged); the next map change
    publishes the newest map."""
    coordinator = map_coordinator(newest_info(infos).slot_map.owners)
    address = next((a for a, info in infos.items() if info.shard_id == coordinator), None)
    if address is None:
        log.warning("coordinator shard %s did not answer: the new map is not pushed", coordinator)
        yield False
        return
    holder = f"router starting, pid {os.getpid()} {secrets.token_hex(4)}"
    refused = await _acquire(address, holder)
    if refused is not None:
        log.warning("the new map is not pushed: %s", refused)
        yield False
        return
    try:
        yield True
    finally:
        await _release(address, holder)

"""The ``murmur.v1.Admin`` service on the router: one RPC per operator verb.

Map changes (moves, adding and removing shards) are serialized by one lock
per router and, across routers, by the map-change lease on the coordinator
shard (``server/map_change_lease.py``); they are versioned on the shards,
which refuse a map that is not newer (or another map under their own
version). Each change first learns the newest map, and mends maps that
diverged under one version anyway (a change made while the lease expired)
from the slots each shard owns (``server/map_reconcile.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from murmur import tls
from murmur.addresses import address_problem
from murmur.errors import WRITES_REFUSED_HEALTH, ServiceError, invalid, not_found
from murmur.rpc_errors import rpc, streamed
from murmur.setting_limits import holds_setting
from murmur.slots import SLOT_COUNT, describe_slots, slot_ranges
from murmur.v1 import admin_pb2, admin_pb2_grpc, murmur_pb2, shard_pb2, shard_pb2_grpc
from server.admin_auth import operator_only
from server.consistency_check import ConsistencyCheck
from server.map_change_lease import MapChangeLease
from server.map_reconcile import diverged, reconciled_map
from server.shard_pool import ShardPool, shard_timeout
from server.slot_map import BRIEF_ATTEMPT_S, fetch_infos, newest_info
from server.slot_moves import chunked, drain_plan, owned_by, rebalance_plan

log = logging.getLogger("murmur.router.admin")
MOVE_TIMEOUT_S = 600.0
STATS_TIMEOUT_S = 30.0
MAX_DETAILS = 300  # of gRPC's own error text quoted in a refusal (status must fit 8 KB)
PREFLIGHT_TIMEOUT_S = 3.0  # a shard must answer a Ping this fast before a move starts
MAP_WAIT_S = 5.0  # for a shard's map: rides out a restart
SILENT_MEMORY_S = 60.0  # a shard silent at an ask this recent is asked only briefly


async def _ask_joining_shard(address: str) -> shard_pb2.ShardInfo:
    """Who answers at ``address``: a shard, or a refusal naming what did
    (a router, say, answers but serves no Shard service)."""
    async with tls.aio_channel(address) as channel:
        try:
            return await shard_pb2_grpc.ShardStub(channel).GetShardInfo(
                shard_pb2.GetShardInfoRequest(), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the server at {address} is not a Murmur shard (it does not serve "
                    "murmur.v1.Shard; a router's address, perhaps)",
                ) from exc
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"no shard answers at {address}: {exc.code().name}: "
                f"{(exc.details() or '')[:MAX_DETAILS]}",
            ) from exc


def caller_bound(context: Any, limit_s: float, share: float = 1.0) -> float:
    """How long to wait for a shard: ``limit_s``, or ``share`` of the
    caller's remaining time if less, less a margin, so that a hung shard is
    reported by name (with the other shards' answers) before the caller's own
    deadline ends the call with nothing but DEADLINE_EXCEEDED."""
    remaining = context.time_remaining()
    return shard_timeout(limit_s if remaining is None else min(limit_s, remaining * share))


class AdminServicer(admin_pb2_grpc.AdminServicer):
    component = "router admin"
    service_name = "Admin"

    def __init__(
        self, pool: ShardPool, admin_token: str | None, identity: str | None = None
    ) -> None:
        self.pool = pool
        self.table = pool.table
        self.admin_token = admin_token
        self._map_lock = asyncio.Lock()
        self._lease = MapChangeLease(pool, self._learn_map, identity)
        self._silent_at: dict[str, float] = {}  # address -> when an ask last found it silent

    @contextlib.asynccontextmanager
    async def _changing_map(self) -> AsyncIterator[None]:
        """One map change at a time: this router's, then the cluster's lease."""
        async with self._map_lock, self._lease.held():
            yield

    async def _shard_infos(self) -> dict[str, shard_pb2.ShardInfo]:
        """Every answering shard's map. A move asks three times before it
        starts and again after each chunk: a shard already known to be
        silent (its health probe fails, or an ask in the last minute found
        it silent) is asked only briefly, so that a dead shard outside the
        move costs it a second or so each time, not MAP_WAIT_S."""
        addresses = list(self.table.addresses.values())
        try:
            infos = await fetch_infos(addresses, wait_s=MAP_WAIT_S, brief=self._known_silent())
        except ServiceError:  # none answered
            self._note_silent(addresses)
            raise
        self._note_silent([a for a in addresses if a not in infos])
        for address in infos:
            self._silent_at.pop(address, None)
        return infos

    def _known_silent(self) -> set[str]:
        """Shards whose health probe fails, or that an ask in the last minute found silent."""
        now = time.monotonic()
        known = {a for a, at in self._silent_at.items() if now - at < SILENT_MEMORY_S}
        known.update(a for s, a in self.table.addresses.items() if s in self.pool.suspect)
        return known

    def _note_silent(self, addresses: list[str]) -> None:
        now = time.monotonic()
        self._silent_at.update((address, now) for address in addresses)

    async def _learn_map(self) -> None:
        """Install the newest map the shards hold, publishing nothing (none
        answering: this router's own map stands, and the lease call names
        the shard that does not answer)."""
        try:
            infos = await self._shard_infos()
        except ServiceError as exc:
            log.warning("cannot learn the newest slot map: %s", exc.message)
            return
        newest = newest_info(infos).slot_map
        if newest.version > self.table.version:
            self.table.install(newest)

    # status -------------------------------------------------------------------
    async def _shard_status(
        self, shard_id: int, timeout: float
    ) -> tuple[admin_pb2.ShardStatus, shard_pb2.LocalStats | None]:
        """One shard's place in the map and its stats; a shard that does not
        answer within ``timeout`` is reported in ``health``, naming it."""
        slots = [slot for slot, owner in enumerate(self.table.owners) if owner == shard_id]
        status = admin_pb2.ShardStatus(
            shard_id=shard_id,
            address=self.table.addresses.get(shard_id, ""),
            slots=[shard_pb2.SlotRange(start=a, end=b) for a, b in slot_ranges(slots)],
            slot_count=len(slots),
        )
        try:
            stats = await self.pool.direct(
                shard_id, "GetStats", shard_pb2.GetStatsRequest(), timeout
            )
        except ServiceError as exc:
            status.health = f"{exc.code.name}: {exc.message}"
            return status, None
        status.health = "SERVING"
        if stats.writes_refused:  # the shard's storage fence is closed
            status.health = (
                f"{WRITES_REFUSED_HEALTH} since a write failed ({stats.writes_refused}): "
                "make room if the disk is full, then restart the shard"
            )
        status.key_counts.update(stats.key_counts)
        status.disk_bytes = stats.disk_bytes
        status.unsafe_no_fsync = stats.unsafe_no_fsync
        return status, stats

    def _require_shard(self, shard_id: int) -> None:
        if shard_id not in self.table.addresses:
            known = ", ".join(str(s) for s in sorted(self.table.addresses))
            raise not_found(f"shard {shard_id} is not in the cluster (shards: {known})")

    @operator_only
    @rpc
    async def GetClusterStatus(self, request, context):
        timeout = caller_bound(context, STATS_TIMEOUT_S)
        results = await asyncio.gather(
            *(self._shard_status(shard_id, timeout) for shard_id in sorted(self.table.addresses))
        )
        return admin_pb2.ClusterStatus(
            map_version=self.table.version, shards=[status for status, _ in results]
        )

    @operator_only
    @rpc
    async def GetShardStats(self, request, context):
        self._require_shard(request.shard_id)
        status, stats = await self._shard_status(
            request.shard_id, caller_bound(context, STATS_TIMEOUT_S)
        )
        response = admin_pb2.ShardStats(status=status)
        if stats is not None:
            response.leveldb_stats = stats.leveldb_stats
            response.outbox_backlog = stats.outbox_backlog
            response.oldest_outbox_ms = stats.oldest_outbox_ms
            response.delivery_lag_p50_ms = stats.delivery_lag_p50_ms
            response.delivery_lag_p99_ms = stats.delivery_lag_p99_ms
            response.inbox_entries_delivered = stats.inbox_entries_delivered
            response.fsyncs = stats.fsyncs
            response.synced_writes = stats.synced_writes
            response.parked_ops.update(stats.parked_ops)
        return response

    # the slot map -------------------------------------------------------------
    def _next_map(self) -> shard_pb2.SlotMap:
        new_map = shard_pb2.SlotMap()
        new_map.CopyFrom(self.table.slot_map)
        new_map.version = self.table.version + 1
        return new_map

    async def _publish(self, new_map: shard_pb2.SlotMap) -> None:
        """Install a map here and on every shard (a shard that is down takes
        it from its peers when it starts, ``shard/map_catch_up.py``, or from a
        router's next change or restart). A shard known to be silent gets
        BRIEF_ATTEMPT_S: a stopped one would hold every chunk of a move for
        STATS_TIMEOUT_S."""
        silent = self._known_silent()
        self.table.install(new_map)
        request = shard_pb2.AssignSlotsRequest(slot_map=new_map)
        calls = [
            self.pool.direct(
                shard_id,
                "AssignSlots",
                request,
                BRIEF_ATTEMPT_S if address in silent else STATS_TIMEOUT_S,
            )
            for shard_id, address in new_map.addresses.items()
        ]
        for shard_id, result in zip(
            list(new_map.addresses),
            await asyncio.gather(*calls, return_exceptions=True),
            strict=True,
        ):
            if isinstance(result, BaseException):
                log.warning(
                    "shard %d did not take map version %d: %s", shard_id, new_map.version, result
                )

    async def _adopt_newest_map(self, strict: bool = True) -> bool:
        """Learn the newest map the shards hold and make every shard hold it
        (also when this router already has it: a refresh on a wrong-slot
        answer may have installed it here before the other shards had it),
        mending maps that diverged under one version. False if a divergence
        could not be mended yet (only when not ``strict``, which raises).

        No shard answering is the operator's outage, not the router's: it is
        reported as UNAVAILABLE and the router keeps serving."""
        try:
            infos = await self._shard_infos()
        except ServiceError as exc:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot learn the newest slot map from the shards: {exc.message}",
            ) from None
        if diverged(infos):
            return await self._mend_divergence(infos, strict)
        newest = newest_info(infos).slot_map
        behind = any(info.map_version < newest.version for info in infos.values())
        if newest.version > self.table.version or behind:
            await self._publish(newest)
        return True

    async def _mend_divergence(self, infos: dict[str, shard_pb2.ShardInfo], strict: bool) -> bool:
        """Two map changes took one version (``server/map_reconcile.py``):
        publish the map the shards' own slots describe, before anything is
        built on either. Not mendable yet (a shard silent, a hand-over half
        done): a change about to be made is refused naming the slots
        (``strict``); after a move, the move stands and the log says so."""
        try:
            merged = reconciled_map(infos)
        except ServiceError as exc:
            if strict:
                raise
            log.warning("%s", exc.message)
            return False
        log.warning(
            "shards held different slot maps under version %d (map changes made at once "
            "through different routers); publishing version %d, built from the slots each "
            "shard owns",
            merged.version - 1,
            merged.version,
        )
        await self._publish(merged)
        return True

    def _sources(self, slots: list[int], target: int) -> dict[int, list[int]]:
        """Those of ``slots`` not on ``target`` yet, by their owner."""
        by_source: dict[int, list[int]] = defaultdict(list)
        for slot in slots:
            owner = self.table.owners[slot]
            if owner != target:
                by_source[owner].append(slot)
        return by_source

    async def _move(
        self,
        slots: list[int],
        by_source: dict[int, list[int]],
        target: int,
        done: int,
        total: int,
        in_place: int,
    ) -> AsyncIterator[admin_pb2.MoveProgress]:
        """Move ``slots`` (``by_source``: those not on ``target`` yet, by
        owner) to ``target``, one source and chunk at a time. ``done`` and
        ``in_place`` count the slots already there, these among them."""
        if not by_source:
            yield admin_pb2.MoveProgress(
                slots_done=done,
                slots_total=total,
                slots_in_place=in_place,
                step=f"slots {describe_slots(slots)} are already on shard {target}:"
                " nothing to move",
                map_version=self.table.version,
            )
            return
        copied_before = 0
        settled = True  # the callers learned the newest map just before
        for source, source_slots in sorted(by_source.items()):
            for chunk, _ in chunked(source_slots, target):
                await self._lease.follow()
                self._lease.require()
                if not settled:  # a divergence the last chunk left: mended, or refused
                    await self._adopt_newest_map()
                new_map = self._next_map()
                for slot in chunk:
                    new_map.owners[slot] = target
                request = shard_pb2.MigrateSlotsRequest(
                    slots=chunk, target_shard=target, new_map=new_map
                )
                copied = 0
                stream = self.pool.stub(source).MigrateSlots(request, timeout=MOVE_TIMEOUT_S)
                try:
                    async for status in stream:
                        copied = status.keys_copied
                        yield admin_pb2.MoveProgress(
                            slots_done=done,
                            slots_total=total,
                            slots_in_place=in_place,
                            keys_copied=copied_before + copied,
                            step=f"shard {source} -> shard {target}: {status.step}",
                            map_version=self.table.version,
                        )
                finally:
                    # also when the caller cancels: the hand-over may have happened
                    settled = await self._adopt_newest_map(strict=False)
                copied_before += copied
                done += len(chunk)
                yield admin_pb2.MoveProgress(
                    slots_done=done,
                    slots_total=total,
                    slots_in_place=in_place,
                    keys_copied=copied_before,
                    step=f"slots {describe_slots(chunk)} now on shard {target}",
                    map_version=self.table.version,
                )

    async def _run_plan(
        self, plan: list[tuple[list[int], int]], dry_run: bool
    ) -> AsyncIterator[admin_pb2.MoveProgress]:
        total = sum(len(slots) for slots, _ in plan)
        if dry_run or not plan:
            done = 0
            for slots, target in plan:
                done += len(slots)
                yield admin_pb2.MoveProgress(
                    slots_done=0,
                    slots_total=total,
                    step=f"would move slots {describe_slots(slots)} to shard {target}",
                    map_version=self.table.version,
                )
            if not plan:
                yield admin_pb2.MoveProgress(step="nothing to move", map_version=self.table.version)
            return
        await self._require_answering(plan)
        done = in_place = 0
        for slots, target in plan:
            by_source = self._sources(slots, target)
            already = len(slots) - sum(len(moving) for moving in by_source.values())
            in_place += already
            moves = self._move(slots, by_source, target, done + already, total, in_place)
            async for progress in moves:
                yield progress
            done += len(slots)

    async def _require_answering(self, plan: list[tuple[list[int], int]]) -> None:
        """Refuse a move whose shards do not all answer now, naming them,
        rather than start it and wait out a copy's long timeout."""
        involved = sorted(
            {target for _, target in plan}
            | {self.table.owners[slot] for slots, _ in plan for slot in slots}
        )
        answers = await asyncio.gather(
            *(
                self.pool.direct(shard_id, "Ping", murmur_pb2.PingRequest(), PREFLIGHT_TIMEOUT_S)
                for shard_id in involved
            ),
            return_exceptions=True,
        )
        silent = [
            (s, a) for s, a in zip(involved, answers, strict=True) if isinstance(a, Exception)
        ]
        if silent:
            shard_id, error = silent[0]
            reason = error.message if isinstance(error, ServiceError) else repr(error)
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"the move did not start: shard {shard_id} does not answer ({reason})",
            )

    @operator_only
    async def MoveSlots(self, request, context):
        async def run():
            self._require_shard(request.target_shard)
            bad = [s for s in request.slots if s >= SLOT_COUNT]
            if bad or not request.slots:
                raise invalid(f"slots must be 1 or more of 0-{SLOT_COUNT - 1}; got {bad or 'none'}")
            async with self._changing_map():
                await self._adopt_newest_map()  # plan from where the slots really are
                async for progress in self._run_plan(
                    [(sorted(set(request.slots)), request.target_shard)], False
                ):
                    yield progress

        async for item in streamed(context, run(), self.component, "MoveSlots"):
            yield item

    @operator_only
    async def Rebalance(self, request, context):
        async def run():
            async with self._changing_map():
                await self._adopt_newest_map()  # plan from where the slots really are
                plan = rebalance_plan(self.table.owners, sorted(self.table.addresses))
                async for progress in self._run_plan(plan, request.dry_run):
                    yield progress

        async for item in streamed(context, run(), self.component, "Rebalance"):
            yield item

    @operator_only
    async def DrainShard(self, request, context):
        async def run():
            self._require_shard(request.shard_id)
            async with self._changing_map():
                await self._adopt_newest_map()  # plan from where the slots really are
                try:
                    plan = drain_plan(
                        self.table.owners, request.shard_id, sorted(self.table.addresses)
                    )
                except ValueError as exc:
                    raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from exc
                async for progress in self._run_plan(plan, False):
                    yield progress

        async for item in streamed(context, run(), self.component, "DrainShard"):
            yield item

    @operator_only
    @rpc
    async def AddShard(self, request, context):
        address = request.address.strip()
        problem = address_problem(address)
        if problem is not None:
            raise invalid(problem)
        info = await _ask_joining_shard(address)
        async with self._changing_map():
            await self._adopt_newest_map()
            known = self.table.addresses.get(info.shard_id)
            if known == address:
                return admin_pb2.AddShardResponse(
                    shard_id=info.shard_id, map_version=self.table.version, already_member=True
                )
            if known is not None and info.slot_map.addresses.get(info.shard_id) == known:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"{address} reaches shard {info.shard_id}, already in the cluster at {known}; "
                    "there is nothing to add",
                )
            if known is not None:
                raise ServiceError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"shard id {info.shard_id} is already used by {known}; start the new shard "
                    "with an unused --shard-id",
                )
            if any(info.owned):
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"shard at {address} already owns slots; only an empty shard can join",
                )
            new_map = self._next_map()
            new_map.addresses[info.shard_id] = address
            await self._publish(new_map)
        log.info("shard %d at %s joined (map version %d)", info.shard_id, address, new_map.version)
        return admin_pb2.AddShardResponse(shard_id=info.shard_id, map_version=new_map.version)

    async def _require_empty_outbox(self, shard_id: int, timeout: float) -> None:
        """A drained shard may still hold fan-out for others: removing it then
        would strand those deliveries."""
        try:
            stats = await self.pool.direct(
                shard_id, "GetStats", shard_pb2.GetStatsRequest(), timeout
            )
        except ServiceError as exc:
            log.warning("removing shard %d without checking its outbox: %s", shard_id, exc.message)
            return
        if stats.outbox_backlog:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {shard_id} still has {stats.outbox_backlog} fan-out records to "
                "deliver; retry in a moment",
            )
        if stats.parked_ops:
            waiting = ", ".join(f"{n} for shard {d}" for d, n in sorted(stats.parked_ops.items()))
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {shard_id} still holds parked fan-out ops ({waiting}); "
                "bring those shards back or retry once they are delivered",
            )

    @operator_only
    @rpc
    async def RemoveShard(self, request, context):
        self._require_shard(request.shard_id)
        async with self._changing_map():
            await self._adopt_newest_map()
            held = owned_by(self.table.owners).get(request.shard_id, [])
            if held:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"shard {request.shard_id} still owns {len(held)} slots; drain it first",
                )
            # half the caller's time at most: the new map must still be published
            await self._require_empty_outbox(
                request.shard_id, caller_bound(context, STATS_TIMEOUT_S, share=0.5)
            )
            new_map = self._next_map()
            del new_map.addresses[request.shard_id]
            await self._publish(new_map)
        return admin_pb2.RemoveShardResponse(map_version=new_map.version)

    # maintenance --------------------------------------------------------------
    @operator_only
    @rpc
    async def CompactShard(self, request, context):
        self._require_shard(request.shard_id)
        reply = await self.pool.direct(
            request.shard_id, "Compact", shard_pb2.CompactRequest(), MOVE_TIMEOUT_S
        )
        return admin_pb2.CompactShardResponse(
            disk_bytes_before=reply.disk_bytes_before, disk_bytes_after=reply.disk_bytes_after
        )

    @operator_only
    async def BackupShard(self, request, context):
        async def run():
            self._require_shard(request.shard_id)
            stream = self.pool.stub(request.shard_id).Backup(
                shard_pb2.BackupRequest(path=request.path), timeout=MOVE_TIMEOUT_S
            )
            async for status in stream:
                yield admin_pb2.BackupProgress(
                    keys_copied=status.keys_copied,
                    keys_total=status.keys_copied if status.done else 0,
                    done=status.done,
                    path=status.path,
                )

        async for item in streamed(context, run(), self.component, "BackupShard"):
            yield item

    async def _on_every_shard(
        self, method: str, request: Any, context: Any, limit_s: float
    ) -> dict[int, Any | ServiceError]:
        """``method`` on every shard at once, each given ``limit_s`` or the
        caller's time if less: each shard's answer, or its failure (named by
        the pool), by shard id."""
        timeout = caller_bound(context, limit_s)
        shard_ids = sorted(self.table.addresses)
        replies = await asyncio.gather(
            *(self.pool.direct(shard_id, method, request, timeout) for shard_id in shard_ids),
            return_exceptions=True,
        )
        for reply in replies:
            if isinstance(reply, BaseException) and not isinstance(reply, ServiceError):
                raise reply
        return dict(zip(shard_ids, replies, strict=True))

    @operator_only
    @rpc
    async def GetSettings(self, request, context):
        replies = await self._on_every_shard(
            "GetSettings", shard_pb2.GetSettingsRequest(), context, STATS_TIMEOUT_S
        )
        answered = {s: r for s, r in replies.items() if not isinstance(r, ServiceError)}
        if not answered:
            raise next(iter(replies.values()))
        settings = answered[min(answered)]
        disagreeing = [s for s, r in answered.items() if r != settings]
        settings.disagreeing_shards.extend(disagreeing)
        settings.unreachable_shards.extend(s for s in replies if s not in answered)
        return settings

    @operator_only
    @rpc
    async def UpdateSettings(self, request, context):
        # a new threshold re-evaluates every user on each shard: that can be long
        replies = await self._on_every_shard("UpdateSettings", request, context, MOVE_TIMEOUT_S)
        failed = {s: r for s, r in replies.items() if isinstance(r, ServiceError)}
        if failed:
            first = next(iter(failed.values()))
            if len(failed) == len(replies):  # refused everywhere (bad input), or all down
                raise first
            took = ", ".join(str(s) for s in replies if s not in failed)
            missed = ", ".join(str(s) for s in failed)
            unknown = first.code in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            )
            raise ServiceError(
                first.code,
                f"the settings changed on shards [{took}] but "
                f"{'may not have' if unknown else 'did not'} on shards [{missed}]"
                f" ({first.message}); they may disagree until the same update is"
                " repeated and reaches every shard",
            )
        ignored = _settings_ignored(request, replies)
        if ignored:
            names = sorted({name for fields in ignored.values() for name in fields})
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shards [{', '.join(str(s) for s in ignored)}] answered without taking "
                f"{', '.join(names)} (they run a Murmur from before it); the rest of the "
                "update changed every shard: upgrade those, then repeat it",
            )
        return replies[min(replies)]

    # consistency --------------------------------------------------------------
    async def _check(self, request, repair: bool) -> admin_pb2.ConsistencyReport:
        slots = sorted(set(request.slots))  # a slot named twice is checked once
        bad = [s for s in slots if s >= SLOT_COUNT]
        if bad:
            more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise invalid(f"slots must be 0-{SLOT_COUNT - 1}; got {describe_slots(bad[:20])}{more}")
        return await ConsistencyCheck(self.pool, slots, repair).run()

    @operator_only
    @rpc
    async def CheckConsistency(self, request, context):
        return await self._check(request, repair=False)

    @operator_only
    @rpc
    async def Repair(self, request, context):
        return await self._check(request, repair=True)


def _settings_ignored(
    request: shard_pb2.UpdateSettingsRequest, replies: dict[int, shard_pb2.Settings]
) -> dict[int, list[str]]:
    """The fields each shard's reply does not hold as asked: a shard from
    before a setting existed skips it without a word (protobuf drops fields
    it does not know), and the update must not look applied there."""
    asked = [field.name for field, _ in request.ListFields()]
    ignored = {}
    for shard_id, reply in sorted(replies.items()):
        missing = [
            name
            for name in asked
            if not holds_setting(reply, name) or getattr(reply, name) != getattr(request, name)
        ]
        if missing:
            ignored[shard_id] = missing
    return ignored

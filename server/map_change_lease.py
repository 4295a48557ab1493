"""A router's hold on the cluster's slot-map change lease (``shard/map_lease.py``).

Every map change a router makes (a move, adding or removing a shard) runs
inside ``MapChangeLease.held()``: the lease is taken on the coordinator (the
lowest shard id owning a slot), renewed while the change runs, and given back
at the end, so no two routers build the next map version at once. Another
router's change in progress is a clear refusal, not a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from murmur.errors import ServiceError
from murmur.slots import map_coordinator
from murmur.v1 import shard_pb2
from server.shard_pool import ShardPool

log = logging.getLogger("murmur.router.lease")
LEASE_TTL_MS = 15_000
RENEW_EVERY_S = 4.0
LEASE_CALL_TIMEOUT_S = 3.0
# the router counts its lease lost this long before the coordinator would
# (from when its last granted request was sent): clocks and delays differ
LEASE_MARGIN_S = 3.0


class MapChangeLease:
    """``holder`` names the router. Given as its host and port, a router
    restarted where it listened before takes over the lease its previous
    process held (a change cut short by the kill is over), instead of
    waiting for it to expire."""

    def __init__(
        self,
        pool: ShardPool,
        refresh_map: Callable[[], Awaitable[None]],
        holder: str | None = None,
    ) -> None:
        self.pool = pool
        self.refresh_map = refresh_map  # learn the newest map (another coordinator, maybe)
        self.holder = holder or (
            f"router on {socket.gethostname()} pid {os.getpid()} {secrets.token_hex(4)}"
        )
        self.lost: str | None = None
        self._granted_at = 0.0  # monotonic time the last granted request was sent
        self.coordinator: int | None = None  # where the lease is held

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        self.coordinator = await self._acquire()
        self.lost = None
        renewing = asyncio.get_running_loop().create_task(self._renew())
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self._release(self.coordinator)

    async def follow(self) -> None:
        """Between the steps of a long change: a step that moved the
        coordinator's last slots away made another shard the coordinator,
        where a router starting or changing the map now asks; take the lease
        there too (refused: the change stops, see ``require``)."""
        new = map_coordinator(self.pool.table.owners)
        if new is None or new == self.coordinator or self.lost is not None:
            return
        sent = time.monotonic()
        try:
            lease = await self._ask(new)
        except ServiceError as exc:
            self.lost = (
                f"the coordinator moved to shard {new}, which did not answer ({exc.message})"
            )
            return
        if not lease.granted:
            self.lost = f"the coordinator moved to shard {new}, where {lease.holder} holds it"
            return
        old, self.coordinator, self._granted_at = self.coordinator, new, sent
        await self._release(old)

    def require(self) -> None:
        """Between the steps of a long change: stop if the lease was lost, or
        may have lapsed (no renewal granted within its time, less a margin)."""
        left = LEASE_TTL_MS / 1000 - LEASE_MARGIN_S - (time.monotonic() - self._granted_at)
        if self.lost is None and left < 0:
            self.lost = "no renewal reached the coordinator in time"
        if self.lost is not None:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"the slot map's change lease was lost ({self.lost}); the change stopped "
                "between steps: retry it",
            )

    async def _acquire(self) -> int:
        """Take the lease on the coordinator by the newest map the shards
        hold (a router's own map may be behind: a coordinator drained,
        removed, or another shard added); learned again after the grant, and
        if the coordinator changed meanwhile, the lease goes back and the
        new coordinator is asked, once."""
        await self.refresh_map()
        for attempt in range(2):
            coordinator = map_coordinator(self.pool.table.owners)
            if coordinator is None:
                raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "no shard owns a slot")
            sent = time.monotonic()
            try:
                lease = await self._ask(coordinator)
            except ServiceError as exc:
                raise ServiceError(
                    exc.code, f"cannot take the slot map's change lease: {exc.message}"
                ) from None
            if not lease.granted:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"another router ({lease.holder}) is changing the slot map (its lease on "
                    f"shard {coordinator} runs {lease.expires_in_ms / 1000:.0f}s more unless "
                    "renewed); retry when its change is done",
                )
            self._granted_at = sent
            await self.refresh_map()
            if map_coordinator(self.pool.table.owners) == coordinator:
                return coordinator
            await self._release(coordinator)
            if attempt == 1:
                break
        raise ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            "the slot map's coordinator changed twice while taking its change lease; retry",
        )

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            coordinator = self.coordinator
            sent = time.monotonic()
            try:
                lease = await self._ask(coordinator)
            except ServiceError as exc:
                log.warning("renewing the map lease on shard %d failed: %s", coordinator, exc)
                continue  # it lasts LEASE_TTL_MS; the next attempt may reach it
            if not lease.granted:
                self.lost = f"shard {coordinator} gave it to {lease.holder}"
                log.warning("the map lease was lost: %s", self.lost)
                return
            if self.lost is None:
                self._granted_at = sent

    async def _release(self, coordinator: int) -> None:
        request = shard_pb2.ReleaseMapLeaseRequest(holder=self.holder)
        try:
            await self.pool.direct(coordinator, "ReleaseMapLease", request, LEASE_CALL_TIMEOUT_S)
        except ServiceError as exc:  # it expires by itself
            log.warning("releasing the map lease on shard %d failed: %s", coordinator, exc)

    async def _ask(self, coordinator: int) -> shard_pb2.MapLease:
        """Acquire or renew: the same request."""
        request = shard_pb2.AcquireMapLeaseRequest(holder=self.holder, ttl_ms=LEASE_TTL_MS)
        return await self.pool.direct(coordinator, "AcquireMapLease", request, LEASE_CALL_TIMEOUT_S)

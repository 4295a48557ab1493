"""A router's hold on the cluster's slot-map change lease (``shard/map_lease.py``).

Every map change a router makes (a move, adding or removing a shard) runs
inside ``MapChangeLease.held()``: the lease is taken on the coordinator (the
lowest shard id in the map), renewed while the change runs, and given back
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
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from murmur.errors import ServiceError
from murmur.v1 import shard_pb2
from server.shard_pool import ShardPool

log = logging.getLogger("murmur.router.lease")
LEASE_TTL_MS = 15_000
RENEW_EVERY_S = 5.0
LEASE_CALL_TIMEOUT_S = 5.0


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

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        coordinator = await self._acquire()
        self.lost = None
        renewing = asyncio.get_running_loop().create_task(self._renew(coordinator))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            await self._release(coordinator)

    def require(self) -> None:
        """Between the steps of a long change: stop if the lease was lost."""
        if self.lost is not None:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"the slot map's change lease was lost ({self.lost}); the change stopped "
                "between steps: retry it",
            )

    async def _acquire(self) -> int:
        """Take the lease; once more after learning the map if the shard we
        asked is not the coordinator by its own (newer) map."""
        for attempt in range(2):
            coordinator = min(self.pool.table.addresses)
            try:
                lease = await self._call(coordinator, "AcquireMapLease")
            except ServiceError as exc:
                if exc.code == grpc.StatusCode.FAILED_PRECONDITION and attempt == 0:
                    await self.refresh_map()
                    continue
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
            return coordinator
        raise AssertionError("unreachable")

    async def _renew(self, coordinator: int) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                lease = await self._call(coordinator, "AcquireMapLease")
            except ServiceError as exc:
                log.warning("renewing the map lease on shard %d failed: %s", coordinator, exc)
                continue  # it lasts LEASE_TTL_MS; the next attempt may reach it
            if not lease.granted:
                self.lost = f"shard {coordinator} gave it to {lease.holder}"
                log.warning("the map lease was lost: %s", self.lost)
                return

    async def _release(self, coordinator: int) -> None:
        try:
            await self._call(coordinator, "ReleaseMapLease")
        except ServiceError as exc:  # it expires by itself
            log.warning("releasing the map lease on shard %d failed: %s", coordinator, exc)

    async def _call(self, coordinator: int, method: str) -> shard_pb2.MapLease:
        if method == "AcquireMapLease":
            request = shard_pb2.AcquireMapLeaseRequest(holder=self.holder, ttl_ms=LEASE_TTL_MS)
        else:
            request = shard_pb2.ReleaseMapLeaseRequest(holder=self.holder)
        return await self.pool.direct(coordinator, method, request, LEASE_CALL_TIMEOUT_S)

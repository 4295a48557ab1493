"""The slot map's change lease: one router at a time may change the map.

Each router serializes its own map changes, but two routers each build the
next version from the map they hold, so two changes made at once through
different routers took the same version with different contents, each pair
of shards adopting one, and the next change built on either handed the
other's slots back to a shard that had deleted them. So a router takes
this lease before a change and holds it (renewing) until the change is
published. It lives on the coordinator, the shard with the lowest id that
owns a slot (``map_coordinator``): a shard that is not the coordinator by
its own map refuses, so a router whose map is behind cannot take a lease
nobody else respects.
The lease is stored (synced), so a coordinator that restarts still knows
its holder, and it expires by wall-clock time unless renewed, so a router
that dies holding it blocks changes for one lease time at most.
"""

from __future__ import annotations

import time

import grpc

from murmur.errors import ServiceError
from murmur.slots import map_coordinator
from murmur.v1 import shard_pb2
from shard import keys
from shard.ownership import SlotOwnership
from shard.store import Store

MAX_TTL_MS = 600_000


class MapLeases:
    def __init__(self, store: Store, ownership: SlotOwnership) -> None:
        self.store = store
        self.ownership = ownership
        raw = store.get(keys.MAP_LEASE) or bytes(8)
        self.holder = raw[8:].decode()
        self.expires_ms = keys.read_u64(raw)

    def acquire(self, holder: str, ttl_ms: int, now_ms: int | None = None) -> shard_pb2.MapLease:
        """Grant (or renew) the lease to ``holder`` unless another holds it."""
        self._require_coordinator()
        if not holder or not 1 <= ttl_ms <= MAX_TTL_MS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a map lease needs a holder and a ttl_ms of 1-{MAX_TTL_MS}; "
                f"got {holder!r} and {ttl_ms}",
            )
        now_ms = wall_ms() if now_ms is None else now_ms
        if self.holder and self.holder != holder and self.expires_ms > now_ms:
            return shard_pb2.MapLease(
                granted=False, holder=self.holder, expires_in_ms=self.expires_ms - now_ms
            )
        self._store(holder, now_ms + ttl_ms)
        return shard_pb2.MapLease(granted=True, holder=holder, expires_in_ms=ttl_ms)

    def release(self, holder: str, now_ms: int | None = None) -> shard_pb2.MapLease:
        now_ms = wall_ms() if now_ms is None else now_ms
        if self.holder == holder:
            self._store("", 0)
            return shard_pb2.MapLease()
        left = max(0, self.expires_ms - now_ms)
        return shard_pb2.MapLease(holder=self.holder, expires_in_ms=left)

    def _require_coordinator(self) -> None:
        coordinator = map_coordinator(self.ownership.slot_map.owners)
        if coordinator != self.ownership.shard_id:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {self.ownership.shard_id} does not hold the map lease: by its slot map "
                f"(version {self.ownership.slot_map.version}) shard {coordinator} does; "
                "refresh the map and ask it",
            )

    def _store(self, holder: str, expires_ms: int) -> None:
        self.store.db.put(keys.MAP_LEASE, keys.u64(expires_ms) + holder.encode(), sync=True)
        self.holder, self.expires_ms = holder, expires_ms


def wall_ms() -> int:
    """Wall-clock time: the lease must outlive a restart of the coordinator."""
    return int(time.time() * 1000)

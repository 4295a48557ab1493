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
nobody else respects. A shard with no map yet grants it too: a router
founding a new cluster takes it on every shard, in shard-id order, before
it pushes the first map, so two routers started at once with different
(overlapping) --shards lists cannot each push their own first map to some
of the shards (a split cluster that no later start could mend).
The lease is stored (synced), so a coordinator that restarts still knows
its holder, and it expires unless renewed, so a router that dies holding
it blocks changes for one lease time at most.

Expiry runs on the coordinator's monotonic clock, and what is stored is
the holder and its time to live, not a moment: a restarted coordinator
gives the stored holder one whole lease time from its start (as etcd's
lessor does with every lease when a new leader takes over). A wall-clock
expiry was shortened or lengthened by any step of the coordinator's
clock, and could let a second router in while the first still changed
the map.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from murmur.errors import ServiceError
from murmur.slots import map_coordinator
from murmur.v1 import shard_pb2
from shard import keys
from shard.ownership import SlotOwnership
from shard.store import Store

MAX_TTL_MS = 600_000


class MapLeases:
    def __init__(
        self, store: Store, ownership: SlotOwnership, clock: Callable[[], int] | None = None
    ) -> None:
        self.store = store
        self.ownership = ownership
        self.clock = clock or monotonic_ms
        raw = store.get(keys.MAP_LEASE)
        self.holder, self.ttl_ms = stored_lease(raw)
        self.expires_ms = self.clock() + self.ttl_ms if self.holder else 0
        if raw and in_wall_clock_form(raw):  # store the new form now
            self._store(self.holder, self.ttl_ms)

    def acquire(self, holder: str, ttl_ms: int) -> shard_pb2.MapLease:
        """Grant (or renew) the lease to ``holder`` unless another holds it.
        A renewal with the holder and time to live already stored writes
        nothing: only the in-memory expiry moves."""
        self._require_coordinator()
        if not holder or not 1 <= ttl_ms <= MAX_TTL_MS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a map lease needs a holder and a ttl_ms of 1-{MAX_TTL_MS}; "
                f"got {holder!r} and {ttl_ms}",
            )
        now_ms = self.clock()
        if self.holder and self.holder != holder and self.expires_ms > now_ms:
            return shard_pb2.MapLease(
                granted=False, holder=self.holder, expires_in_ms=self.expires_ms - now_ms
            )
        if (holder, ttl_ms) != (self.holder, self.ttl_ms):
            self._store(holder, ttl_ms)
        self.expires_ms = now_ms + ttl_ms
        return shard_pb2.MapLease(granted=True, holder=holder, expires_in_ms=ttl_ms)

    def release(self, holder: str) -> shard_pb2.MapLease:
        if self.holder == holder:
            self._store("", 0)
            self.expires_ms = 0
            return shard_pb2.MapLease()
        left = max(0, self.expires_ms - self.clock())
        return shard_pb2.MapLease(holder=self.holder, expires_in_ms=left)

    def _require_coordinator(self) -> None:
        if not self.ownership.assigned:  # no map yet: the founding router's lease
            return
        coordinator = map_coordinator(self.ownership.slot_map.owners)
        if coordinator != self.ownership.shard_id:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {self.ownership.shard_id} does not hold the map lease: by its slot map "
                f"(version {self.ownership.slot_map.version}) shard {coordinator} does; "
                "refresh the map and ask it",
            )

    def _store(self, holder: str, ttl_ms: int) -> None:
        self.store.db.put(keys.MAP_LEASE, keys.u64(ttl_ms) + holder.encode(), sync=True)
        self.holder, self.ttl_ms = holder, ttl_ms


def stored_lease(raw: bytes | None) -> tuple[str, int]:
    """(holder, ttl_ms) as stored. A value above ``MAX_TTL_MS`` was written
    by a shard that stored the wall-clock expiry instead: what is left of
    it (none, if past) is the holder's time to live."""
    if not raw:
        return "", 0
    holder, value = raw[8:].decode(), keys.read_u64(raw)
    if in_wall_clock_form(raw):
        value = min(MAX_TTL_MS, max(0, value - int(time.time() * 1000)))
    return (holder, value) if holder and value else ("", 0)


def in_wall_clock_form(raw: bytes) -> bool:
    """Whether a stored lease holds an expiry moment (before ef6e886): no
    time to live is that long."""
    return keys.read_u64(raw) > MAX_TTL_MS


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000

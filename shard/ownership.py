"""Which slots this shard owns, and the cluster's slot map as last stored here.

The map is persisted on every shard (not only in a router's memory) so that a
router started later, or a second router, learns the current owners, and so
that a shard's fan-out worker knows where each follower lives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc

from murmur.errors import ServiceError, wrong_slot
from murmur.slots import SLOT_COUNT, slot_ranges
from murmur.v1 import shard_pb2
from shard import keys
from shard.store import Store


class SlotOwnership:
    def __init__(self, store: Store, shard_id: int) -> None:
        self.store = store
        self.shard_id = self._load_shard_id(shard_id)
        self._use(self._load_map())
        # Slots in the last step of a move: "frozen" refuses callers (local
        # fan-out may still write, and is forwarded); "sealed" refuses all.
        self.frozen: dict[int, str] = {}
        self.sealed: set[int] = set()
        self.on_change: list[Callable[[set[int], set[int]], None]] = []

    def _load_shard_id(self, requested: int) -> int:
        stored = self.store.get(keys.shard_meta("shard_id"))
        if stored is None:
            self.store.db.put(keys.shard_meta("shard_id"), keys.u64(requested), sync=True)
            return requested
        existing = keys.read_u64(stored)
        if existing != requested:
            raise SystemExit(
                f"data folder {self.store.path} belongs to shard {existing}, "
                f"not shard {requested}; start it with --shard-id {existing}"
            )
        return existing

    def _load_map(self) -> shard_pb2.SlotMap:
        raw = self.store.get(keys.shard_meta("slot_map"))
        slot_map = shard_pb2.SlotMap()
        if raw is not None:
            slot_map.ParseFromString(raw)
        return slot_map

    def _use(self, slot_map: shard_pb2.SlotMap) -> None:
        """Take ``slot_map`` with the two views of it that every check and
        every fan-out lookup reads: ``owned`` (this shard's slots) and
        ``owners`` (a plain list, since fan-out looks one up per follower and
        indexing the message's repeated field costs several times more)."""
        self.slot_map = slot_map
        self.owned = self._owned_from(slot_map)
        self.owners = list(slot_map.owners)

    def _owned_from(self, slot_map: shard_pb2.SlotMap) -> bytearray:
        owned = bytearray(SLOT_COUNT)
        for slot, owner in enumerate(slot_map.owners):
            if owner == self.shard_id:
                owned[slot] = 1
        return owned

    @property
    def assigned(self) -> bool:
        return self.slot_map.version > 0

    def gains(self, slot_map: shard_pb2.SlotMap) -> list[int]:
        """The slots ``slot_map`` would give this shard, if ``adopt`` would
        take it (a first map, or a newer one with every slot)."""
        if len(slot_map.owners) != SLOT_COUNT or (
            self.assigned and slot_map.version <= self.slot_map.version
        ):
            return []
        return [
            slot
            for slot, owner in enumerate(slot_map.owners)
            if owner == self.shard_id and not self.owned[slot]
        ]

    def adopt(self, slot_map: shard_pb2.SlotMap) -> None:
        """Store a newer map (an older or equal version is ignored or refused).

        Ownership of data-holding slots changes only through a move, which
        hands the slots over before any shard adopts the map that says so.
        """
        if len(slot_map.owners) != SLOT_COUNT:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"slot_map.owners has {len(slot_map.owners)} entries; it must have {SLOT_COUNT}",
            )
        if self.assigned and slot_map.version <= self.slot_map.version:
            if slot_map.version == self.slot_map.version and list(slot_map.owners) == list(
                self.slot_map.owners
            ):
                return
            if slot_map.version < self.slot_map.version:
                return
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"shard {self.shard_id} already holds a different slot map version "
                f"{self.slot_map.version}",
            )
        before = self.owned
        self.store.db.put(keys.shard_meta("slot_map"), slot_map.SerializeToString(), sync=True)
        self._use(slot_map)
        gained = {s for s in range(SLOT_COUNT) if self.owned[s] and not before[s]}
        lost = {s for s in range(SLOT_COUNT) if before[s] and not self.owned[s]}
        for slot in lost:
            self.frozen.pop(slot, None)
            self.sealed.discard(slot)
        for callback in self.on_change:
            callback(gained, lost)

    def check(self, slot: int, local_delivery: bool = False) -> None:
        """Refuse work for a slot this shard does not own (the router's map is
        stale) or that is in the last step of a move (retry shortly)."""
        if not self.assigned:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"shard {self.shard_id} has no slots assigned yet",
            )
        if not self.owned[slot]:
            raise wrong_slot(self.shard_id, slot)
        if slot in self.sealed or (slot in self.frozen and not local_delivery):
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                self.frozen.get(slot, f"slot {slot} is being handed over; retry shortly"),
            )

    def check_all(self, slots: Iterable[int], local_delivery: bool = False) -> None:
        """``check`` for each of ``slots`` in one pass while no slot is moving:
        a fan-out delivery brings thousands, nearly one per follower."""
        owned = self.owned
        if self.assigned and not (self.sealed or self.frozen) and all(owned[s] for s in slots):
            return
        for slot in slots:
            self.check(slot, local_delivery)

    def serves(self, slot: int) -> bool:
        """Whether ``check`` would accept work for ``slot`` right now."""
        return (
            self.assigned
            and self.owned[slot]
            and slot not in self.sealed
            and slot not in self.frozen
        )

    def owner_of(self, slot: int) -> int:
        return self.owners[slot]

    def info(self) -> shard_pb2.ShardInfo:
        """Who this shard is and the slots it claims: those its map gives it,
        less any sealed for a hand-over (once sealed they are on their way to
        the target, which routers mending diverged maps must believe)."""
        owned = [slot for slot in range(SLOT_COUNT) if self.owned[slot] and slot not in self.sealed]
        return shard_pb2.ShardInfo(
            shard_id=self.shard_id,
            owned=[shard_pb2.SlotRange(start=a, end=b) for a, b in slot_ranges(owned)],
            map_version=self.slot_map.version,
            slot_map=self.slot_map,
        )

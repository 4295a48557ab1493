"""The durable fan-out outbox: work still to carry to other shards.

A record is written in the same batch as the change that needs it, so a crash
can never acknowledge a write whose fan-out is lost. Records are delivered in
sequence order (edits and deletes never overtake the post they change) and
removed only once every destination has applied its share, or holds it
parked (``shard/parked.py``) because it did not answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from google.protobuf.message import DecodeError

from murmur.ids import now_ms
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2
from shard import keys
from shard.delivery_ops import source_slot
from shard.store import Store, Txn

# Every this many reads, one starts from the front of the range instead of
# the floor: a safety net should a record ever commit below the floor.
FULL_SCAN_EVERY = 256
log = logging.getLogger("murmur.shard.outbox")


class Outbox:
    """Records keyed by sequence number.

    Delivered records are deleted from the front, and LevelDB keeps their
    tombstones until a compaction reaches them; a scan from the front steps
    over every one, which under a steady stream of posts cost more than the
    fan-out itself. Reads therefore start at ``floor``, the lowest sequence
    that may still be queued: raised past each delivered prefix, lowered by
    every append. That is exact because a record is appended and committed
    with no await in between, so no record below the floor appears later.

    Which records are queued, and the slot each reads, is also kept in
    memory, changed only by commits that landed: a slot move asks it, many
    times a second, whether fan-out still reads the moving slots, and
    scanning a backlog of records for that (~5 µs each) held the shard's
    loop for most of the wait.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.wakeup = asyncio.Event()
        self._reads = 0
        self._slot_of: dict[int, int | None] = {}  # every queued record: the slot it reads
        self._by_slot: dict[int, set[int]] = {}  # slot: its queued records
        for key, raw in self.store.scan(keys.outbox_prefix()):
            self._track(keys.last_u64(key), stored_record_slot(keys.last_u64(key), raw))
        self.next_seq = max(self._slot_of, default=0) + 1
        self.floor = min(self._slot_of, default=self.next_seq)

    def append(self, txn: Txn, record: shard_pb2.OutboxRecord) -> int:
        """Queue a record in ``txn``; the worker wakes when it commits."""
        seq = self.next_seq
        self.next_seq += 1
        self.floor = min(self.floor, seq)
        if not record.created_ms:
            record.created_ms = now_ms()
        txn.put(keys.outbox(seq), record.SerializeToString())
        slot = record_slot(record)
        txn.on_commit.append(lambda: self._track(seq, slot))
        self.wakeup.set()
        return seq

    def peek(self, limit: int) -> Iterator[tuple[int, shard_pb2.OutboxRecord]]:
        self._reads += 1
        start = keys.outbox(self.floor) if self._reads % FULL_SCAN_EVERY else None
        for key, raw in self.store.scan(keys.outbox_prefix(), start=start, limit=limit):
            yield keys.last_u64(key), shard_pb2.OutboxRecord.FromString(raw)

    def backlog(self) -> int:
        """Records still queued, for the metrics scrape: from memory, so a
        scrape (a thread that holds the GIL while it runs) counts nothing."""
        return len(self._slot_of)

    def queued_for(self, slots: set[int]) -> set[int]:
        """Sequence numbers of the queued records whose delivery reads local
        data of ``slots`` (``record_slot``): a slot move waits them out."""
        by_slot = self._by_slot
        found: set[int] = set()
        for slot in slots & by_slot.keys():
            found |= by_slot[slot]
        return found

    def _track(self, seq: int, slot: int | None) -> None:
        self._slot_of[seq] = slot
        if slot is not None:
            self._by_slot.setdefault(slot, set()).add(seq)

    def _untrack(self, seq: int) -> None:
        slot = self._slot_of.pop(seq, None)
        if slot is None:
            return
        queued = self._by_slot[slot]
        queued.discard(seq)
        if not queued:
            del self._by_slot[slot]

    def finish(
        self,
        done: list[int],
        progress: dict[int, shard_pb2.OutboxRecord],
        txn: Txn | None = None,
    ) -> None:
        """Remove delivered records and save resume points, in one batch
        (``txn``, which may carry the round's parked operations too).

        Not fsynced: losing it to a power cut only re-delivers, idempotently."""
        txn = txn or self.store.txn()
        for seq in done:
            txn.delete(keys.outbox(seq))
        for seq, record in progress.items():
            txn.put(keys.outbox(seq), record.SerializeToString())
        txn.commit(sync=False)
        for seq in done:
            self._untrack(seq)
        if done:  # records are finished in order: everything below is gone
            self.floor = max(self.floor, max(done) + 1)


def record_slot(record: shard_pb2.OutboxRecord) -> int | None:
    """The slot of this shard's data that delivering ``record`` reads (the
    author's, the followee's, or the one a direct operation is rebuilt
    from, ``source_slot``), if any: until it is delivered or parked, that
    slot cannot move."""
    kind = record.WhichOneof("work")
    if kind == "tweet_fanout":
        return slot_for_user(record.tweet_fanout.tweet.user_id)
    if kind == "status_sync":
        return slot_for_user(record.status_sync.followee_id)
    if kind == "direct" and record.direct.WhichOneof("op") is not None:
        return source_slot(record.direct)
    return None


def stored_record_slot(seq: int, raw: bytes) -> int | None:
    """``record_slot`` of a record read back at start-up. One this version
    cannot read (written by a newer one before a roll-back, or damaged)
    reads no slot it knows of: the shard still starts, and the fan-out
    worker reports the record when it reaches it."""
    try:
        return record_slot(shard_pb2.OutboxRecord.FromString(raw))
    except DecodeError:
        log.error("outbox record %d cannot be read by this version; it holds no slot", seq)
        return None


def add_follower_record(
    followee: int, follower: int, followed_ms: int = 0
) -> shard_pb2.OutboxRecord:
    """Carry a new follow edge's far side to the followee's shard, naming
    the follow by its edge's ``followed_ms``."""
    op = shard_pb2.DeliveryOp(
        add_follower=shard_pb2.AddFollower(
            followee_id=followee, follower_id=follower, followed_ms=followed_ms
        )
    )
    return shard_pb2.OutboxRecord(direct=op)


def remove_follower_record(followee: int, follower: int) -> shard_pb2.OutboxRecord:
    """Carry an unfollow to the followee's shard."""
    op = shard_pb2.DeliveryOp(
        remove_follower=shard_pb2.RemoveFollower(followee_id=followee, follower_id=follower)
    )
    return shard_pb2.OutboxRecord(direct=op)

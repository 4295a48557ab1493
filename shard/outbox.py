"""The durable fan-out outbox: work still to carry to other shards.

A record is written in the same batch as the change that needs it, so a crash
can never acknowledge a write whose fan-out is lost. Records are delivered in
sequence order (edits and deletes never overtake the post they change) and
removed only once every destination has applied its share, or holds it
parked (``shard/parked.py``) because it did not answer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

from murmur.ids import now_ms
from murmur.v1 import shard_pb2
from shard import keys
from shard.store import Store, Txn

# Every this many reads, one starts from the front of the range instead of
# the floor: a safety net should a record ever commit below the floor.
FULL_SCAN_EVERY = 256
COUNT_BACKLOG_UP_TO = 10_000


class Outbox:
    """Records keyed by sequence number.

    Delivered records are deleted from the front, and LevelDB keeps their
    tombstones until a compaction reaches them; a scan from the front steps
    over every one, which under a steady stream of posts cost more than the
    fan-out itself. Reads therefore start at ``floor``, the lowest sequence
    that may still be queued: raised past each delivered prefix, lowered by
    every append. That is exact because a record is appended and committed
    with no await in between, so no record below the floor appears later.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.wakeup = asyncio.Event()
        prefix = keys.outbox_prefix()
        last = next(self.store.scan(prefix, include_value=False, reverse=True), None)
        self.next_seq = keys.last_u64(last) + 1 if last is not None else 1
        first = next(self.store.scan(prefix, include_value=False), None)
        self.floor = keys.last_u64(first) if first is not None else self.next_seq
        self._reads = 0

    def append(self, txn: Txn, record: shard_pb2.OutboxRecord) -> int:
        """Queue a record in ``txn``; the worker wakes when it commits."""
        seq = self.next_seq
        self.next_seq += 1
        self.floor = min(self.floor, seq)
        if not record.created_ms:
            record.created_ms = now_ms()
        txn.put(keys.outbox(seq), record.SerializeToString())
        self.wakeup.set()
        return seq

    def peek(self, limit: int) -> Iterator[tuple[int, shard_pb2.OutboxRecord]]:
        self._reads += 1
        start = keys.outbox(self.floor) if self._reads % FULL_SCAN_EVERY else None
        for key, raw in self.store.scan(keys.outbox_prefix(), start=start, limit=limit):
            yield keys.last_u64(key), shard_pb2.OutboxRecord.FromString(raw)

    def backlog(self) -> int:
        """Records still queued, for the metrics scrape (a thread that holds
        the GIL while it counts): counted from the floor, not over the
        delivered records' tombstones before it, and only up to
        COUNT_BACKLOG_UP_TO; past that (a destination down for long), the
        span of sequence numbers still open, which counts any commit that
        failed after taking a number too."""
        queued = self.store.scan(
            keys.outbox_prefix(), start=keys.outbox(self.floor), include_value=False
        )
        counted = sum(1 for _ in itertools.islice(queued, COUNT_BACKLOG_UP_TO))
        return counted if counted < COUNT_BACKLOG_UP_TO else self.next_seq - self.floor

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
        if done:  # records are finished in order: everything below is gone
            self.floor = max(self.floor, max(done) + 1)


def add_follower_record(followee: int, follower: int) -> shard_pb2.OutboxRecord:
    """Carry a new follow edge's far side to the followee's shard."""
    op = shard_pb2.DeliveryOp(
        add_follower=shard_pb2.AddFollower(followee_id=followee, follower_id=follower)
    )
    return shard_pb2.OutboxRecord(direct=op)


def remove_follower_record(followee: int, follower: int) -> shard_pb2.OutboxRecord:
    """Carry an unfollow to the followee's shard."""
    op = shard_pb2.DeliveryOp(
        remove_follower=shard_pb2.RemoveFollower(followee_id=followee, follower_id=follower)
    )
    return shard_pb2.OutboxRecord(direct=op)

"""The durable fan-out outbox: work still to carry to other shards.

A record is written in the same batch as the change that needs it, so a crash
can never acknowledge a write whose fan-out is lost. Records are delivered in
sequence order (edits and deletes never overtake the post they change) and
removed only after every destination has applied them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from murmur.ids import now_ms
from murmur.v1 import shard_pb2
from shard import keys
from shard.store import Store, Txn


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.wakeup = asyncio.Event()
        last = next(self.store.scan(keys.outbox_prefix(), include_value=False, reverse=True), None)
        self.next_seq = keys.last_u64(last) + 1 if last is not None else 1

    def append(self, txn: Txn, record: shard_pb2.OutboxRecord) -> int:
        """Queue a record in ``txn``; the worker wakes when it commits."""
        seq = self.next_seq
        self.next_seq += 1
        if not record.created_ms:
            record.created_ms = now_ms()
        txn.put(keys.outbox(seq), record.SerializeToString())
        self.wakeup.set()
        return seq

    def peek(self, limit: int) -> Iterator[tuple[int, shard_pb2.OutboxRecord]]:
        for key, raw in self.store.scan(keys.outbox_prefix(), limit=limit):
            yield keys.last_u64(key), shard_pb2.OutboxRecord.FromString(raw)

    def backlog(self) -> int:
        return sum(1 for _ in self.store.scan(keys.outbox_prefix(), include_value=False))

    def finish(self, done: list[int], progress: dict[int, shard_pb2.OutboxRecord]) -> None:
        """Remove delivered records and save resume points, in one batch.

        Not fsynced: losing it to a power cut only re-delivers, idempotently."""
        txn = self.store.txn()
        for seq in done:
            txn.delete(keys.outbox(seq))
        for seq, record in progress.items():
            txn.put(keys.outbox(seq), record.SerializeToString())
        txn.commit(sync=False)


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

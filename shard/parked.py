"""Fan-out parked for a destination shard that did not answer.

One outbox serves every destination, and a record leaves it only once every
destination has its share; held there, a shard down for long would hold back
every other shard's fan-out behind it. So a round that cannot reach a
destination writes that destination's operations here instead, in the batch
that removes the round's records from the outbox, and while a destination has
operations parked every later round appends its share behind them: each
destination still receives its operations in outbox order, and the others
carry on at once. The fan-out worker drains each queue from its front when
its destination answers again (``FanoutWorker.drain_parked``).

Every removal from a queue is synced, so when a queue empties and its
destination is served directly again, a power cut cannot bring older parked
operations back to be delivered behind newer direct ones.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from murmur.ids import slot_of_tweet
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2
from shard import keys
from shard.store import Store

DeliveryOp = shard_pb2.DeliveryOp

CHUNK_OPS = 256
CHUNK_BYTES = 4 << 20  # one Deliver message, well inside gRPC's 64 MiB limit
SCAN_FOR_MOVE_UP_TO = 10_000  # ~20 ms of parsing; a move polls every 10 ms


def source_slot(op: DeliveryOp) -> int:
    """The slot of the sender's data an operation is refreshed from when its
    destination no longer owns its users: the tweet's, the followee's whose
    status it carries, or the follower's whose edge it mirrors."""
    kind = op.WhichOneof("op")
    if kind == "inbox_delete":
        return slot_of_tweet(op.inbox_delete.tweet_id)
    if kind in ("inbox_put", "inbox_edit"):
        return slot_for_user(getattr(op, kind).tweet.user_id)
    if kind == "follow_sync":
        return slot_for_user(op.follow_sync.followee_id)
    return slot_for_user(getattr(op, kind).follower_id)


class ParkedQueues:
    """One queue of operations per destination shard, oldest first.

    ``counts`` (what each queue holds, for stats and for ``holds``) is read
    from disk at start-up; a park counts before its batch commits, so a batch
    that failed leaves a count too high, never too low: a destination is
    served directly only once its queue was found empty."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.counts: Counter[int] = Counter()
        self._next_seq: dict[int, int] = {}
        for key in store.scan(keys.parked_prefix(), include_value=False):
            destination = keys.parked_destination(key)
            self.counts[destination] += 1
            self._next_seq[destination] = keys.last_u64(key) + 1

    def holds(self, destination: int) -> bool:
        """Must ``destination``'s operations queue behind parked ones?"""
        return self.counts[destination] > 0

    def destinations(self) -> list[int]:
        return sorted(d for d, n in self.counts.items() if n > 0)

    def total(self) -> int:
        return sum(self.counts.values())

    def park(self, txn, destination: int, ops: Iterable[DeliveryOp]) -> int:
        """Append ``ops`` to ``destination``'s queue in ``txn``."""
        seq = self._next_seq.get(destination, 1)
        first = seq
        for op in ops:
            txn.put(keys.parked(destination, seq), op.SerializeToString())
            seq += 1
        self._next_seq[destination] = seq
        self.counts[destination] += seq - first
        return seq - first

    def peek(self, destination: int) -> list[tuple[int, DeliveryOp]]:
        """The front of ``destination``'s queue: one Deliver's worth."""
        chunk: list[tuple[int, DeliveryOp]] = []
        size = 0
        for key, raw in self.store.scan(keys.parked_prefix(destination), limit=CHUNK_OPS):
            if chunk and size + len(raw) > CHUNK_BYTES:
                break
            chunk.append((keys.last_u64(key), DeliveryOp.FromString(raw)))
            size += len(raw)
        if not chunk:  # whatever was counted never committed
            self.counts.pop(destination, None)
        return chunk

    def remove(
        self,
        destination: int,
        seqs: list[int],
        requeue: dict[int, list[DeliveryOp]] | None = None,
    ) -> None:
        """Drop delivered operations from the front of a queue (and park
        ``requeue``'s operations for their destinations) in one synced batch;
        counted down only once it is on disk."""
        txn = self.store.txn()
        for seq in seqs:
            txn.delete(keys.parked(destination, seq))
        for other, ops in (requeue or {}).items():
            self.park(txn, other, ops)
        txn.commit(sync=True)
        self.counts[destination] = max(0, self.counts[destination] - len(seqs))

    def needs(self, slots: set[int]) -> bool:
        """Could a parked operation still need the sender's data of
        ``slots``? (A slot move waits until none does.) Past
        SCAN_FOR_MOVE_UP_TO operations the answer is yes."""
        total = self.total()
        if not total or total > SCAN_FOR_MOVE_UP_TO:
            return bool(total)
        ops = self.store.scan(keys.parked_prefix(), limit=SCAN_FOR_MOVE_UP_TO)
        return any(source_slot(DeliveryOp.FromString(raw)) in slots for _key, raw in ops)


def split_by_owner(op: DeliveryOp, owner_of) -> dict[int, DeliveryOp]:
    """``op`` cut into one operation per shard owning its users now."""
    kind = op.WhichOneof("op")
    body = getattr(op, kind)
    if kind in ("add_follower", "remove_follower"):
        return {owner_of(slot_for_user(body.followee_id)): op}
    field = "follower_ids" if kind == "follow_sync" else "owner_ids"
    groups: dict[int, list[int]] = defaultdict(list)
    for user in getattr(body, field):
        groups[owner_of(slot_for_user(user))].append(user)
    parts = {}
    for owner, users in groups.items():
        part = DeliveryOp()
        part.CopyFrom(op)
        getattr(getattr(part, kind), field)[:] = users
        parts[owner] = part
    return parts

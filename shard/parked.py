"""Fan-out parked for a destination shard that did not answer.

One outbox serves every destination, and a record leaves it only once every
destination has its share; held there, a shard down for long would hold back
every other shard's fan-out behind it. So a round that cannot reach a
destination writes that destination's operations here instead, in the batch
that removes the round's records from the outbox, and while a destination has
operations parked every later round appends its share behind them: each
destination still receives its operations in outbox order, and the others
carry on at once. The fan-out worker drains each queue from its front, one
task per destination, when it answers again (``FanoutWorker._drain_one``).

Each parked op is rebuilt from the sender's data when it is sent, so it
says what is true then, whatever reached its users meanwhile: a slot move
waits until no parked op reads the moving slots (``needs``), and a removal
lost to a power cut only sends a fresh snapshot again. Removals need no
fsync of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from murmur.v1 import shard_pb2
from shard import keys
from shard.delivery_ops import source_slot
from shard.store import Store

DeliveryOp = shard_pb2.DeliveryOp
Chunk = list[tuple[int, DeliveryOp]]

CHUNK_OPS = 256
CHUNK_BYTES = 4 << 20  # one Deliver message, well inside gRPC's 64 MiB limit


class ParkedQueues:
    """One queue of operations per destination shard, oldest first.

    ``counts`` (ops per destination: stats, and ``holds``) and the ops per
    source slot (``needs``) are read from disk at start-up and kept in
    memory. A park counts before its batch commits, a removal after: a batch
    that failed leaves the counts too high, never too low, so a destination
    is served directly again only once its queue was found empty, and a
    queue found shorter than counted has everything counted again.
    Each queue's ``floor`` is its first sequence number still queued, so a
    drain does not step over the tombstones of the ops it removed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._count_all()

    def _count_all(self) -> None:
        self.counts: Counter[int] = Counter()
        self._sources: Counter[int] = Counter()
        self._next_seq: dict[int, int] = {}
        self._floor: dict[int, int] = {}
        for key, raw in self.store.scan(keys.parked_prefix()):
            destination, seq = keys.parked_destination(key), keys.last_u64(key)
            self.counts[destination] += 1
            self._sources[source_slot(DeliveryOp.FromString(raw))] += 1
            self._next_seq[destination] = seq + 1
            self._floor.setdefault(destination, seq)

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
            self._sources[source_slot(op)] += 1
            seq += 1
        self._next_seq[destination] = seq
        self._floor.setdefault(destination, first)
        self.counts[destination] += seq - first
        return seq - first

    def peek(self, destination: int, budget: int, cost: Callable[[DeliveryOp], int]) -> Chunk:
        """The front of ``destination``'s queue: at most ``budget`` of work
        for the destination by ``cost`` (as a fan-out round plans it), and
        one Deliver's size; always at least one op."""
        chunk: Chunk = []
        size = spent = 0
        start = keys.parked(destination, self._floor.get(destination, 0))
        for key, raw in self.store.scan(
            keys.parked_prefix(destination), start=start, limit=CHUNK_OPS
        ):
            op = DeliveryOp.FromString(raw)
            if chunk and (size + len(raw) > CHUNK_BYTES or spent + cost(op) > budget):
                break
            chunk.append((keys.last_u64(key), op))
            size += len(raw)
            spent += cost(op)
        if not chunk and self.counts[destination]:  # a counted batch never committed
            self._count_all()
        return chunk

    def remove(
        self, destination: int, chunk: Chunk, requeue: dict[int, list[DeliveryOp]] | None = None
    ) -> None:
        """Drop a delivered chunk from the front of a queue, and park
        ``requeue``'s operations for their destinations, in one batch."""
        txn = self.store.txn()
        for seq, _op in chunk:
            txn.delete(keys.parked(destination, seq))
        for other, ops in (requeue or {}).items():
            self.park(txn, other, ops)
        txn.commit(sync=False)
        self.counts[destination] = max(0, self.counts[destination] - len(chunk))
        if chunk:
            self._floor[destination] = max(self._floor.get(destination, 0), chunk[-1][0] + 1)
        for _seq, op in chunk:
            self._sources[source_slot(op)] -= 1

    def needs(self, slots: set[int]) -> bool:
        """Does a parked operation still read this shard's data of ``slots``?
        A slot move waits until none does."""
        return any(self._sources[slot] > 0 for slot in slots)

"""The shard's LevelDB and its write transactions.

A shard serves every request on one asyncio loop and never awaits inside a
mutation, so a ``Txn`` is read-modify-write atomic without locks: it reads
through its own pending writes, then commits them as one LevelDB write batch.
Scans see committed data only; code that scans after writing commits first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence

import plyvel

from shard.keys import prefix_end
from shard.retired_logs import RetiredLogs
from shard.storage_fence import FencedDB, sync_failed


class ChangeCapture:
    """Records every committed write to some slots while they are being moved."""

    def __init__(self, slots: set[int]) -> None:
        self.prefixes = {slot.to_bytes(2, "big") for slot in slots}
        self.changes: list[tuple[bytes, bytes | None]] = []

    def take(self) -> list[tuple[bytes, bytes | None]]:
        taken, self.changes = self.changes, []
        return taken


MISSING = object()
DEFAULT_WRITE_BUFFER_MB = 64


class HotValues:
    """Committed values of small keys read on hot paths (the follower's
    edge, which every fan-out entry reads; the inbox metadata, which every
    home read reads), kept in memory so that read costs a
    dict lookup instead of a LevelDB get (~2-5 µs once the shard holds a few
    million inbox entries). Only ``Txn.commit`` updates it, so a
    transaction that is dropped never leaves a value here that is not on
    disk; writers that bypass ``Txn`` (slot import and drop) call ``clear``.
    Bounded: the oldest entries are forgotten first and reread on demand.

    It also keeps listings: the ids under a prefix, for small scans that hot
    paths repeat (the celebrities a reader follows, which every home read
    needs: a LevelDB iterator costs ~6 µs even over an empty range, and
    py-spy put that scan at ~8% of a shard serving batched home reads; the
    followers of an ordinary author, which every post's fan-out reads). A
    transaction that changes keys under a listed prefix says so
    (``Txn.relist``) and its commit forgets the listing. Listings are
    bounded in number and in the ids they hold together, so a shard of
    many mid-sized accounts keeps a few megabytes of them, not gigabytes."""

    def __init__(self, capacity: int = 200_000, listed_ids: int = 2_000_000) -> None:
        self.capacity = capacity
        self.max_listed_ids = listed_ids
        self._values: dict[bytes, bytes | None] = {}
        self.get = self._values.get  # ``lookup`` without a Python frame, for hot loops
        self._listings: dict[bytes, Sequence[int]] = {}
        self.listing = self._listings.get
        self.listed_ids = 0

    def lookup(self, key: bytes) -> bytes | None | object:
        return self._values.get(key, MISSING)

    def remember(self, key: bytes, value: bytes | None) -> None:
        if key not in self._values:
            self._make_room(self._values, 1)
        self._values[key] = value

    def remember_all(self, keys: list[bytes], values: dict[bytes, bytes | None]) -> None:
        """``remember`` each of ``keys`` with its value in ``values``; a
        commit brings one key per fan-out entry, so room is made once."""
        self._make_room(self._values, len(keys))
        held = self._values
        for key in keys:
            held[key] = values[key]

    def _make_room(self, held: dict, incoming: int) -> None:
        """Forget the oldest entries of ``held`` (an eighth of the capacity,
        or as many as are coming if more) when ``incoming`` new ones would
        not fit."""
        if len(held) + incoming > self.capacity:
            for old in list(itertools.islice(held, max(self.capacity // 8, incoming))):
                del held[old]

    def remember_listing(self, prefix: bytes, ids: Sequence[int]) -> None:
        """Keep ``ids`` as the listing of ``prefix``, forgetting the oldest
        listings while the count or the ids held would go over their bounds
        (a listing bigger than the whole id budget is not kept)."""
        self.forget_listings([prefix])
        if len(ids) > self.max_listed_ids:
            return
        held = self._listings
        while held and not self._listing_fits(len(ids)):
            # oldest first, taken in chunks: popping a dict's first key one
            # lookup at a time rescans the deleted slots before it
            for old in list(itertools.islice(held, max(1, self.capacity // 8))):
                self.listed_ids -= len(held.pop(old))
                if self._listing_fits(len(ids)):
                    break
        held[prefix] = ids
        self.listed_ids += len(ids)

    def _listing_fits(self, size: int) -> bool:
        return len(self._listings) < self.capacity and self.listed_ids + size <= self.max_listed_ids

    def forget_listings(self, prefixes: list[bytes]) -> None:
        for prefix in prefixes:
            ids = self._listings.pop(prefix, None)
            if ids is not None:
                self.listed_ids -= len(ids)

    def clear(self) -> None:
        self._values.clear()
        self._listings.clear()
        self.listed_ids = 0


class Store:
    """One LevelDB per shard process.

    Tables are written uncompressed unless ``compress_tables``: inbox keys
    spread over every slot, so compaction rewrites each entry several times,
    and with snappy each rewrite also decompresses and compresses it. On the
    benchmark's fan-out burst that cost the shards more CPU than applying the
    deliveries. Uncompressed, an inbox entry takes ~45% more disk (168 vs
    115 bytes in the benchmark). LevelDB marks every block with its own
    compression, so a store can be reopened either way.

    ``write_buffer_mb`` is the memtable LevelDB fills before it writes a
    table (the default is 64 MB; LevelDB's own is 4): a fan-out burst of a few
    hundred thousand inbox entries then lands in memory rather than in a
    stream of small level-0 tables that compaction must merge while the
    burst runs. On the benchmark's bursts, side by side against 16 MB, the
    compaction threads used ~75% less CPU. A shard holds up to two
    memtables (one being written out), so this is also its peak write
    memory; the log a restart replays is at most this long."""

    def __init__(
        self,
        path: str,
        compress_tables: bool = False,
        write_buffer_mb: int = DEFAULT_WRITE_BUFFER_MB,
    ) -> None:
        self.path = path
        self.captures: list[ChangeCapture] = []
        self.hot = HotValues()
        # called when a commit's write fails: state kept in memory ahead of
        # the commit (the inbox tallies) must be rebuilt from disk
        self.on_failed_commit: list[Callable[[], None]] = []
        os.makedirs(path, exist_ok=True)
        self.db = FencedDB(
            plyvel.DB(
                path,
                create_if_missing=True,
                write_buffer_size=write_buffer_mb << 20,
                lru_cache_size=64 << 20,
                bloom_filter_bits=10,
                compression="snappy" if compress_tables else None,
            )
        )
        self.retired_logs = RetiredLogs(path)

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def txn(self) -> Txn:
        return Txn(self)

    def scan(
        self,
        prefix: bytes,
        start: bytes | None = None,
        limit: int | None = None,
        include_value: bool = True,
        reverse: bool = False,
    ) -> Iterator:
        """Keys (and values) under ``prefix`` from ``start`` on, in key order.

        Returns LevelDB's own iterator rather than wrapping it in a generator:
        a home read walks ~20 entries, and a generator frame per entry cost
        ~4% of a batched inbox read's instructions."""
        it = self.db.iterator(
            start=start if start is not None else prefix,
            stop=prefix_end(prefix),
            include_value=include_value,
            reverse=reverse,
        )
        return it if limit is None else itertools.islice(it, limit)

    def sync(self) -> None:
        """Make every earlier write durable against power loss: one fsync
        of LevelDB's log, and of any log it has retired unsynced since the
        last one (``retired_logs``). Behind a closed storage fence the
        writes waiting for it are in LevelDB's log, ahead of the failure, or
        were refused: the caller hears that it cannot know which."""
        if self.db.failure is not None:
            raise sync_failed(self.db.failure_error())
        self.db.write_batch(sync=True).write()
        try:
            self.retired_logs.sync_new()
        except OSError as exc:
            self.db.close_fence(exc)
            raise sync_failed(exc) from exc

    def close(self) -> None:
        self.db.close()


class Txn:
    """Buffered writes committed as one atomic LevelDB batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hot = store.hot
        self.writes: dict[bytes, bytes | None] = {}
        self.hot_keys: list[bytes] = []
        self.relisted: list[bytes] = []
        # run once the batch has landed, never if it fails: memory that must
        # mirror what is on disk exactly (the outbox's index) follows it here
        self.on_commit: list[Callable[[], None]] = []

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.store.db.get(key)

    def get_hot(self, key: bytes) -> bytes | None:
        """``get`` for a key always written with ``put_hot``: served from
        memory after its first read."""
        writes = self.writes
        if key in writes:
            return writes[key]
        value = self.hot.get(key, MISSING)
        if value is MISSING:
            value = self.store.db.get(key)
            self.hot.remember(key, value)
        return value  # type: ignore[return-value]

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def put_hot(self, key: bytes, value: bytes) -> None:
        """``put`` that also refreshes the in-memory copy once committed."""
        if key not in self.writes:
            self.hot_keys.append(key)
        self.writes[key] = value

    def delete_hot(self, key: bytes) -> None:
        """``delete`` that also refreshes the in-memory copy once committed."""
        if key not in self.writes:
            self.hot_keys.append(key)
        self.writes[key] = None

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def _run_on_commit(self) -> None:
        if self.on_commit:
            for hook in self.on_commit:
                hook()
            self.on_commit.clear()

    def relist(self, prefix: bytes) -> None:
        """Keys under ``prefix`` change with this transaction: once it
        commits, any listing remembered for ``prefix`` is forgotten."""
        self.relisted.append(prefix)

    def commit(self, sync: bool = True) -> None:
        if not self.writes:  # nothing to write has landed all the same
            self._run_on_commit()
            return
        writes = self.writes
        try:  # one atomic batch: a batch that fails part-way writes nothing
            self.store.db.write_all(writes, sync)
        except BaseException:
            for hook in self.store.on_failed_commit:
                hook()
            raise
        self._run_on_commit()
        for capture in self.store.captures:  # only what landed travels with a slot move
            capture.changes.extend(
                (key, value) for key, value in writes.items() if key[:2] in capture.prefixes
            )
        self.hot.remember_all(self.hot_keys, writes)
        if self.relisted:
            self.hot.forget_listings(self.relisted)
            self.relisted.clear()
        self.writes.clear()
        self.hot_keys.clear()

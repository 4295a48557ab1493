"""The storage fence: after one failed write, a shard writes nothing more
to LevelDB until it restarts.

LevelDB 1.22 (plyvel's) appends each write batch to its log before applying
it. If the append fails part-way (a full disk, a quota, a file-size limit),
part of the record may be in the file while the log writer believes all of
it is; the failure is not sticky, so later writes succeed, fsyncs succeed,
and the shard acknowledges them. On the next open LevelDB finds a checksum
mismatch at the torn record and drops the rest of the log: every write
acknowledged since is gone. A failed fsync leaves the same doubt.

So the first failure closes the fence: every later write, fsync included,
is refused (``StorageFailed``, UNAVAILABLE) before it reaches LevelDB, while
reads go on. A restart reopens the log, and LevelDB's recovery keeps every
record before the torn one: everything acknowledged. Writes made through
``FencedDB`` (the store's ``db``) are the only writes to a shard's LevelDB.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import plyvel

from murmur.errors import StorageFailed
from murmur.rpc_errors import storage_reason

log = logging.getLogger("murmur.shard.storage")
STORAGE_ERRORS = (plyvel.Error, OSError)
WRITE_FAILURES = (StorageFailed, *STORAGE_ERRORS)  # a write that failed, or was refused


class FencedDB:
    """A ``plyvel.DB`` whose writes stop for good after the first that fails.

    Reads are LevelDB's own bound methods (no call through this object per
    read); writes go through ``_write``. Anything else (close, properties,
    compaction) is LevelDB's, by ``__getattr__``."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self.failure: str | None = None
        self.get = db.get
        self.iterator = db.iterator
        self.snapshot = db.snapshot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        self._write(self._db.put, sync, key, value, sync=sync)

    def delete(self, key: bytes, sync: bool = False) -> None:
        self._write(self._db.delete, sync, key, sync=sync)

    def write_batch(self, transaction: bool = False, sync: bool = False) -> FencedBatch:
        self.check()
        batch = self._db.write_batch(transaction=transaction, sync=sync)
        return FencedBatch(self, batch, transaction, sync)

    def write_all(self, writes: dict[bytes, bytes | None], sync: bool) -> None:
        """Write ``writes`` (None: delete) as one atomic batch: the commit
        path, without a ``FencedBatch`` in between (~2 µs a commit)."""
        self._write(self._write_all, sync, writes, sync)

    def _write_all(self, writes: dict[bytes, bytes | None], sync: bool) -> None:
        with self._db.write_batch(sync=sync, transaction=True) as batch:
            put, delete = batch.put, batch.delete
            for key, value in writes.items():
                if value is None:
                    delete(key)
                else:
                    put(key, value)

    def check(self) -> None:
        """Refuse a write once the fence is closed."""
        if self.failure is not None:
            raise StorageFailed(
                f"refuses writes: a write to its storage failed ({self.failure}), after which "
                "LevelDB may drop later writes; make room if the disk is full, then restart it"
            )

    def failure_error(self) -> StorageFailed:
        """The fence's cause, for messages about writes caught behind it."""
        return StorageFailed(f"an earlier write failed: {self.failure}")

    @property
    def closed(self) -> bool:
        return self.failure is not None

    def close_fence(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = storage_reason(exc)
            log.critical(
                "a write to this shard's storage failed (%s): writes are refused until the "
                "shard restarts (make room first if the disk is full); reads go on",
                self.failure,
            )

    def _write(self, write: Callable[..., None], synced: bool, *args: Any, **kwargs: Any) -> None:
        self.check()
        try:
            write(*args, **kwargs)
        except STORAGE_ERRORS as exc:
            self.close_fence(exc)
            if synced:
                raise sync_failed(exc) from exc
            raise


class FencedBatch:
    """A LevelDB write batch written through the fence, with plyvel's
    context-manager rule: a transaction batch is dropped if its block
    raised, a plain one is written anyway."""

    def __init__(self, db: FencedDB, batch: Any, transaction: bool, sync: bool) -> None:
        self._db = db
        self._batch = batch
        self._transaction = transaction
        self._sync = sync
        self.put = batch.put
        self.delete = batch.delete
        self.clear = batch.clear

    def write(self) -> None:
        self._db._write(self._batch.write, self._sync)

    def __enter__(self) -> FencedBatch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> bool:
        if exc_type is None or not self._transaction:
            self.write()
        return False


def sync_failed(exc: BaseException) -> StorageFailed:
    """A failed fsync (or synced write): the write may be in the log, to be
    replayed at the next start, or not; the caller cannot know which. So it
    is UNAVAILABLE even when the disk is full: RESOURCE_EXHAUSTED tells a
    caller its write was not applied, and clients do not retry it, while a
    retry with the request's id either finds the write or makes it."""
    return StorageFailed(
        f"could not make the write durable: its storage failed ({storage_reason(exc)}); it "
        "may or may not have been applied; writes are refused until the shard restarts (make "
        "room first if the disk is full)"
    )

"""Operator work on one shard: statistics, compaction, backups.

Long scans yield to the event loop every few thousand keys so the shard keeps
serving while an operator looks at it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import plyvel

from murmur.errors import ServiceError
from murmur.ids import now_ms
from murmur.v1 import shard_pb2
from shard import keys
from shard.state import ShardState

TABLES = {
    keys.USER: "users",
    keys.HANDLE: "handles",
    keys.FOLLOWING: "following",
    keys.FOLLOWERS: "followers",
    keys.CELEBRITY_FOLLOWED: "celebrity_marks",
    keys.TIMELINE: "tweets",
    keys.TWEET_AUTHOR: "tweet_index",
    keys.REQUEST: "request_ids",
    keys.INBOX: "inbox",
    keys.INBOX_META: "inbox_meta",
    keys.CLOCK: "id_clocks",
}
LOCAL_TABLES = {keys.OUTBOX: "outbox", keys.SHARD_META: "shard_meta"}
YIELD_EVERY = 20_000
BACKUP_BATCH = 5_000


def disk_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def table_of(key: bytes) -> str:
    if key[:2] == keys.LOCAL:
        return LOCAL_TABLES.get(key[2:3], "other")
    return TABLES.get(key[2:3], "other")


async def count_keys(state: ShardState) -> Counter:
    counts: Counter = Counter()
    iterator = state.store.db.iterator(include_value=False)
    try:
        while True:
            chunk = list(itertools.islice(iterator, YIELD_EVERY))
            for key in chunk:
                counts[table_of(key)] += 1
            if len(chunk) < YIELD_EVERY:
                return counts
            await asyncio.sleep(0)
    finally:
        iterator.close()


def oldest_outbox_age_ms(state: ShardState) -> int:
    first = next(state.outbox.peek(1), None)
    return max(0, now_ms() - first[1].created_ms) if first else 0


async def local_stats(state: ShardState, worker, commits) -> shard_pb2.LocalStats:
    counts = await count_keys(state)
    stats = worker.stats
    raw = state.store.db.get_property(b"leveldb.stats") or b""
    return shard_pb2.LocalStats(
        shard_id=state.shard_id,
        key_counts=dict(counts),
        disk_bytes=disk_bytes(state.store.path),
        leveldb_stats=raw.decode("utf-8", "replace"),
        outbox_backlog=counts.get("outbox", 0),
        oldest_outbox_ms=oldest_outbox_age_ms(state),
        delivery_lag_p50_ms=stats.percentile(0.50),
        delivery_lag_p99_ms=stats.percentile(0.99),
        inbox_entries_delivered=stats.inbox_entries,
        fsyncs=commits.syncs,
        synced_writes=commits.synced_writes,
        frozen_slots=sorted(state.ownership.frozen),
    )


async def compact(state: ShardState) -> shard_pb2.CompactResponse:
    before = disk_bytes(state.store.path)
    await asyncio.get_running_loop().run_in_executor(None, state.store.db.compact_range)
    return shard_pb2.CompactResponse(
        disk_bytes_before=before, disk_bytes_after=disk_bytes(state.store.path)
    )


def check_backup_path(state: ShardState, path: str) -> None:
    """Refuse, naming the problem, a path a backup cannot (or must not) go
    to: LevelDB's own errors for these reach nobody clearly."""
    where = f"on shard {state.shard_id}"
    if "\x00" in path:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"path {path!r} contains a NUL")
    if not path or not os.path.isabs(path):
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT, f"path {path!r} must be an absolute path"
        )
    if os.path.lexists(path):
        raise ServiceError(
            grpc.StatusCode.ALREADY_EXISTS, f"backup path {path} already exists {where}"
        )
    parent = os.path.dirname(os.path.normpath(path))
    if not os.path.isdir(parent):
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"folder {parent} does not exist {where}; create it first",
        )
    data_dir = os.path.realpath(state.store.path)
    if os.path.commonpath([os.path.realpath(parent), data_dir]) == data_dir:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"backup path {path} is inside the shard's own data folder {data_dir}",
        )


def _reason(exc: BaseException) -> str:
    """plyvel's errors are bytes from LevelDB: say them as text."""
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


async def backup(state: ShardState, path: str) -> AsyncIterator[shard_pb2.BackupStatus]:
    """Copy a consistent snapshot into a new LevelDB at ``path``.

    Restoring is starting ``murmur-shard --data-dir <path> --shard-id <same id>``
    (or copying the folder over a lost shard's data folder). The inbox
    sizes counted in memory are stored first, so the copy loads them without
    counting keys.
    """
    check_backup_path(state, path)
    state.inbox.store_tallies()
    try:
        target = plyvel.DB(path, create_if_missing=True, error_if_exists=True)
    except (plyvel.Error, OSError) as exc:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"shard {state.shard_id} cannot create a backup at {path}: {_reason(exc)}",
        ) from None
    snapshot = state.store.db.snapshot()
    copied = 0
    try:
        iterator = snapshot.iterator()
        while True:
            chunk = list(itertools.islice(iterator, BACKUP_BATCH))
            with target.write_batch() as batch:
                for key, value in chunk:
                    batch.put(key, value)
            copied += len(chunk)
            if len(chunk) < BACKUP_BATCH:
                break
            yield shard_pb2.BackupStatus(keys_copied=copied, path=path)
            await asyncio.sleep(0)
        iterator.close()
        target.write_batch(sync=True).write()
    finally:
        snapshot.close()
        target.close()
    yield shard_pb2.BackupStatus(keys_copied=copied, path=path, done=True)

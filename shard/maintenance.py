"""Operator work on one shard: statistics and compaction (backups: ``shard/backup.py``).

Long scans yield to the event loop every few thousand keys so the shard keeps
serving while an operator looks at it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
from collections import Counter

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
LOCAL_TABLES = {keys.OUTBOX: "outbox", keys.PARKED: "parked", keys.SHARD_META: "shard_meta"}
YIELD_EVERY = 20_000


def disk_bytes(path: str) -> int:
    """LevelDB deletes table files while it compacts, so a file listed here
    may be gone when it is measured: it takes no space any more, and must
    not fail GetStats, Compact or a metrics scrape."""
    total = 0
    for name in os.listdir(path):
        try:
            info = os.stat(os.path.join(path, name))
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            total += info.st_size
    return total


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
        parked_ops={d: n for d, n in state.parked.counts.items() if n},
        writes_refused=state.store.db.failure or "",
        unsafe_no_fsync=not commits.fsync_enabled,
    )


async def compact(state: ShardState) -> shard_pb2.CompactResponse:
    before = disk_bytes(state.store.path)
    await asyncio.get_running_loop().run_in_executor(None, state.store.db.compact_range)
    return shard_pb2.CompactResponse(
        disk_bytes_before=before, disk_bytes_after=disk_bytes(state.store.path)
    )

"""Group commit: many acknowledged writes share one fsync.

A handler commits its batch without sync (already safe against a process
kill: LevelDB hands each write to the OS before returning) and then awaits
``durable()``. One fsync runs at a time; every write that arrived while it
ran joins the next one. Under load the batches grow by themselves and
durability costs one fsync per batch, not per request; at low load nothing
waits for a timer.

Where the fsync runs depends on how long the disk takes. Handing it to a
worker thread and back costs ~64 µs of CPU, more than the fsync's own CPU
(~25 µs). So while fsyncs average under ``INLINE_SYNC_BELOW_S`` the shard
runs them on its event loop: on the 2-core benchmark box (fsyncs of
0.3-0.6 ms under load) that took 8% off the shards' CPU per post and raised
posts/s by ~4%, measured interleaved on one cluster. A slow disk (spinning,
or a network volume: 5-20 ms) would stall every read that long, so there
the fsync goes to a thread and the loop keeps serving. The choice follows a
moving average of recent fsyncs, so it adapts if the disk's speed changes.

A shard started with ``--unsafe-no-fsync`` acknowledges writes once LevelDB
has handed them to the OS, with no group-commit fsync (the rare metadata
writes made with ``sync=True`` still sync): a process kill loses nothing,
but a power cut or kernel crash can lose acknowledged writes, and since a
shard that took a delivery unsynced lets its sender forget it, can leave
shards disagreeing (an inbox missing a tweet, an edge on one side only)
until ``murmur-admin check --repair``. It is there to measure what
durability costs (the benchmark's posts against its floor with and without
the fsync), not to run users on.
"""

from __future__ import annotations

import asyncio
import time

from shard.store import Store

INLINE_SYNC_BELOW_S = 0.002
"""Fsyncs averaging less than this run on the event loop; slower ones in a thread."""

SYNC_AVERAGE_WEIGHT = 0.2
"""Weight of the newest fsync in the moving average of fsync times."""


class GroupCommit:
    def __init__(
        self, store: Store, inline_below_s: float = INLINE_SYNC_BELOW_S, fsync: bool = True
    ) -> None:
        self.store = store
        self.inline_below_s = inline_below_s
        self.fsync_enabled = fsync  # False only under --unsafe-no-fsync
        self._waiting: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.syncs = 0
        self.synced_writes = 0
        self.sync_s = 0.0  # moving average of fsync wall times
        self.inline_syncs = 0
        # all fsyncs' wall time; for inline ones, the time the loop waited
        # on the disk (on the 2-core benchmark box, ~20% under a stream of posts)
        self.sync_seconds = 0.0
        self.inline_sync_seconds = 0.0

    async def durable(self) -> None:
        """Return once every write committed before this call is on disk
        (at once under --unsafe-no-fsync: the writes are with the OS already)."""
        if not self.fsync_enabled:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            inline = self.sync_s < self.inline_below_s
            if inline:
                await asyncio.sleep(0)  # writes arriving in this loop turn join the group
            group, self._waiting = self._waiting, []
            try:
                if inline:
                    self._timed_sync(inline=True)
                    self.inline_syncs += 1
                else:
                    await loop.run_in_executor(None, self._timed_sync, False)
            except Exception as exc:  # a failed fsync fails every write in the group
                for future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.syncs += 1
            self.synced_writes += len(group)
            for future in group:
                if not future.done():
                    future.set_result(None)

    def _timed_sync(self, inline: bool) -> None:
        """One fsync. Its wall time counts in the totals even if it failed
        (the loop waited that long); only a successful one moves the
        average that decides where the next one runs."""
        started = time.perf_counter()
        try:
            self.store.sync()
        finally:
            elapsed = time.perf_counter() - started
            self.sync_seconds += elapsed
            if inline:
                self.inline_sync_seconds += elapsed
        self.sync_s += (elapsed - self.sync_s) * SYNC_AVERAGE_WEIGHT

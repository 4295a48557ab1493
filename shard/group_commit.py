"""Group commit: many acknowledged writes share one fsync.

A handler commits its batch without sync (already safe against a process
kill: LevelDB hands each write to the OS before returning) and then awaits
``durable()``. One fsync runs at a time, in a worker thread so the loop keeps
serving; every write that arrived while it ran joins the next one. Under load
the batches grow by themselves and durability costs one fsync per batch, not
per request; at low load nothing waits for a timer.
"""

from __future__ import annotations

import asyncio

from shard.store import Store


class GroupCommit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.syncs = 0
        self.synced_writes = 0

    async def durable(self) -> None:
        """Return once every write committed before this call is on disk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await loop.run_in_executor(None, self.store.sync)
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

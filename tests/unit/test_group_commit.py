"""GroupCommit: concurrent writes share an fsync, failures reach every
waiter, and the fsync runs on the loop only while the disk is fast."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shard.group_commit import GroupCommit


class FakeStore:
    """Records which thread each sync ran on; can be slowed down or broken."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.error: Exception | None = None
        self.threads: list[int] = []

    def sync(self) -> None:
        self.threads.append(threading.get_ident())
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error


def test_concurrent_writes_share_one_fsync():
    async def scenario():
        store = FakeStore()
        commits = GroupCommit(store)
        await asyncio.gather(*(commits.durable() for _ in range(50)))
        return store, commits

    store, commits = asyncio.run(scenario())
    assert commits.syncs == 1
    assert commits.synced_writes == 50
    assert len(store.threads) == 1


def test_fast_disk_syncs_on_the_event_loop():
    async def scenario():
        store = FakeStore()
        commits = GroupCommit(store, inline_below_s=0.5)
        for _ in range(3):
            await commits.durable()
        return store, commits

    store, commits = asyncio.run(scenario())
    assert store.threads == [threading.get_ident()] * 3
    assert commits.inline_syncs == 3


def test_slow_disk_moves_fsyncs_to_a_thread_and_back():
    async def scenario():
        store = FakeStore()
        commits = GroupCommit(store, inline_below_s=0.005)
        store.delay_s = 0.03
        for _ in range(3):
            await commits.durable()
        inline_while_slow = commits.inline_syncs
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.get_running_loop().create_task(ticker())
        store.delay_s = 0.1
        await commits.durable()  # the loop keeps serving meanwhile
        ticks_during_slow_sync = ticks
        ticking.cancel()
        store.delay_s = 0.0
        for _ in range(30):
            await commits.durable()
        return store, commits, inline_while_slow, ticks_during_slow_sync

    store, commits, inline_while_slow, ticks = asyncio.run(scenario())
    loop_thread = threading.get_ident()
    assert inline_while_slow == 1  # the first one, before any was timed
    assert store.threads[3] != loop_thread
    assert ticks >= 5
    assert store.threads[-1] == loop_thread  # fast again: back on the loop
    assert commits.sync_s < 0.005


@pytest.mark.parametrize("threshold", [0.5, 0.0])  # on the loop; in a thread
def test_a_failed_fsync_fails_its_whole_group_and_the_next_one_succeeds(threshold):
    async def scenario():
        store = FakeStore()
        commits = GroupCommit(store, inline_below_s=threshold)
        store.error = OSError("disk full")
        results = await asyncio.gather(
            *(commits.durable() for _ in range(5)), return_exceptions=True
        )
        store.error = None
        await commits.durable()
        return results, commits

    results, commits = asyncio.run(scenario())
    assert all(isinstance(result, OSError) for result in results)
    assert commits.syncs == 1
    assert commits.synced_writes == 1


def test_fsync_wall_time_is_counted_and_split_by_where_it_ran():
    """``murmur_fsync_seconds`` / ``murmur_inline_fsync_seconds``: how long the
    shard waited on its disk, and how much of that its event loop waited."""

    async def scenario():
        store = FakeStore()
        store.delay_s = 0.02
        commits = GroupCommit(store, inline_below_s=0.5)
        for _ in range(2):
            await commits.durable()  # on the loop
        commits.inline_below_s = 0.0
        await commits.durable()  # in a thread
        store.error = OSError("disk gone")
        with pytest.raises(OSError):
            await commits.durable()  # failed, in a thread: the wait still counts
        return commits

    commits = asyncio.run(scenario())
    assert commits.inline_sync_seconds >= 0.04
    assert commits.sync_seconds >= commits.inline_sync_seconds + 0.04
    assert commits.inline_syncs == 2

"""GroupCommit: concurrent writes share an fsync, failures reach every
waiter, and the fsync runs on the loop only while the disk is fast.

How long an fsync "took" is injected: GroupCommit reads a fake clock that
the fake store moves forward by its ``delay_s``, so where each fsync runs
follows from the delays given, not from the speed of the machine."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shard import group_commit
from shard.group_commit import GroupCommit

GATE_TIMEOUT_S = 10.0  # only ends a deadlock should the gated fsync block the loop


class FakeClock:
    """Stands in for the ``time`` module in shard.group_commit."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(group_commit, "time", fake)
    return fake


class FakeStore:
    """Records which thread each sync ran on; its syncs "take" ``delay_s``
    on the fake clock. It can fail, or hold a sync until ``gate`` opens."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delay_s = 0.0
        self.error: Exception | None = None
        self.threads: list[int] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.gate_opened: list[bool] = []

    def sync(self) -> None:
        self.threads.append(threading.get_ident())
        self.entered.set()
        if self.gate is not None:
            self.gate_opened.append(self.gate.wait(GATE_TIMEOUT_S))
        self.clock.now += self.delay_s
        if self.error is not None:
            raise self.error


def test_concurrent_writes_share_one_fsync(clock):
    async def scenario():
        store = FakeStore(clock)
        commits = GroupCommit(store)
        await asyncio.gather(*(commits.durable() for _ in range(50)))
        return store, commits

    store, commits = asyncio.run(scenario())
    assert commits.syncs == 1
    assert commits.synced_writes == 50
    assert len(store.threads) == 1


def test_fast_disk_syncs_on_the_event_loop(clock):
    async def scenario():
        store = FakeStore(clock)
        commits = GroupCommit(store, inline_below_s=0.5)
        for _ in range(3):
            await commits.durable()
        return store, commits

    store, commits = asyncio.run(scenario())
    assert store.threads == [threading.get_ident()] * 3
    assert commits.inline_syncs == 3


async def served_while_syncing(store: FakeStore, commits: GroupCommit) -> None:
    """One durable() whose fsync holds until the event loop opens its gate:
    the loop can only do that if the fsync is not running on it (an inline
    one would wait out GATE_TIMEOUT_S and record the gate as not opened)."""
    gate = store.gate = threading.Event()
    store.entered.clear()
    pending = asyncio.ensure_future(commits.durable())
    while not store.entered.is_set():
        await asyncio.sleep(0.001)
    gate.set()
    await pending
    store.gate = None


def test_slow_disk_moves_fsyncs_to_a_thread_and_back(clock):
    async def scenario():
        store = FakeStore(clock)
        commits = GroupCommit(store, inline_below_s=0.005)
        store.delay_s = 0.03
        for _ in range(3):
            await commits.durable()
        inline_while_slow = commits.inline_syncs
        store.delay_s = 0.1
        await served_while_syncing(store, commits)  # the loop keeps serving meanwhile
        store.delay_s = 0.0
        for _ in range(30):
            await commits.durable()
        return store, commits, inline_while_slow

    store, commits, inline_while_slow = asyncio.run(scenario())
    loop_thread = threading.get_ident()
    assert inline_while_slow == 1  # the first one, before any was timed
    assert loop_thread not in store.threads[1:4]  # slow on average: in a thread
    assert store.gate_opened == [True]
    assert store.threads[-1] == loop_thread  # fast again: back on the loop
    assert commits.sync_s < 0.005


@pytest.mark.parametrize("threshold", [0.5, 0.0])  # on the loop; in a thread
def test_a_failed_fsync_fails_its_whole_group_and_the_next_one_succeeds(clock, threshold):
    async def scenario():
        store = FakeStore(clock)
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


def test_fsync_wall_time_is_counted_and_split_by_where_it_ran(clock):
    """``murmur_fsync_seconds`` / ``murmur_inline_fsync_seconds``: how long the
    shard waited on its disk, and how much of that its event loop waited."""

    async def scenario():
        store = FakeStore(clock)
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
    assert commits.inline_sync_seconds == pytest.approx(0.04)
    assert commits.sync_seconds == pytest.approx(0.08)
    assert commits.inline_syncs == 2


def test_without_fsync_writes_are_acknowledged_without_syncing(clock):
    """``--unsafe-no-fsync``: durable() returns at once and the store is
    never asked to sync, however many writers wait."""

    async def scenario():
        store = FakeStore(clock)
        store.error = OSError("a sync would have failed")  # and must not be attempted
        commits = GroupCommit(store, fsync=False)
        await asyncio.gather(*(commits.durable() for _ in range(5)))
        return store, commits

    store, commits = asyncio.run(scenario())
    assert store.threads == []
    assert (commits.syncs, commits.synced_writes, commits.sync_seconds) == (0, 0, 0.0)

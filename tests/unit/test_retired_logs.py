"""A log LevelDB switched away from is fsynced by the next group commit.

LevelDB closes a full memtable's log without an fsync, so writes that
landed in it before the switch would be acknowledged by a sync of the new
log only. These tests check which files the store fsyncs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shard.retired_logs import RetiredLogs
from shard.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"), write_buffer_mb=1)
    yield opened
    opened.close()


def record_fsyncs(logs: RetiredLogs) -> list[str]:
    """Swap the fsync for one that notes which file it was given."""
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        os.fsync(fd)

    logs.fsync = fsync
    return synced


def logs_in(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path) if name.endswith(".log"))


def test_a_sync_fsyncs_a_retired_log_once_and_never_the_current_one(store: Store) -> None:
    """A memtable switch is LevelDB's to time (with a 1 MB memtable its old
    log is gone again within milliseconds), so the retired log here is put
    in place by hand, numbered below LevelDB's current one."""
    synced = record_fsyncs(store.retired_logs)
    store.sync()
    assert synced == []  # one log, the current one: the synced write covered it
    (current,) = logs_in(store.path)
    with open(os.path.join(store.path, "000001.log"), "wb") as retired:
        retired.write(b"written before the switch")
    store.db.put(b"k", b"v")
    store.sync()
    assert synced == ["000001.log"]
    store.sync()
    assert synced == ["000001.log"]  # not again
    assert current in logs_in(store.path)


def test_an_unchanged_folder_is_not_listed_again(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "000003.log").write_bytes(b"x")
    past = 1_000_000_000  # an mtime long before any listing
    os.utime(folder, ns=(past, past))
    logs = RetiredLogs(str(folder))
    logs.sync_new()
    logs.sync_new()
    assert logs.listings == 1


def test_a_folder_changed_within_the_clock_slack_is_listed_again(tmp_path: Path) -> None:
    """A filesystem's coarse clock may give a change just after a listing
    the same mtime as the one before it: until the slack has passed, each
    sync lists again rather than trust the mtime."""
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "000003.log").write_bytes(b"x")
    logs = RetiredLogs(str(folder), slack_ns=3_600 * 10**9)
    synced = record_fsyncs(logs)
    logs.sync_new()
    mtime = os.stat(folder).st_mtime_ns
    (folder / "000005.log").write_bytes(b"y")
    os.utime(folder, ns=(mtime, mtime))  # as if within the same clock tick
    assert logs.sync_new() == 1
    assert synced == ["000003.log"]


def test_a_retired_log_deleted_before_its_fsync_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    for name in ("000003.log", "000007.log", "000010.log"):
        (folder / name).write_bytes(b"x")
    logs = RetiredLogs(str(folder))
    synced = record_fsyncs(logs)
    real_open = os.open

    def open_gone(path, flags, *args):
        if path.endswith("000003.log"):
            raise FileNotFoundError(path)
        return real_open(path, flags, *args)

    os.open = open_gone  # LevelDB deleting it between the listing and the open
    try:
        assert logs.sync_new() == 1
    finally:
        os.open = real_open
    assert synced == ["000007.log"]


def test_a_folder_with_whole_second_mtimes_is_listed_for_two_seconds(tmp_path: Path) -> None:
    """A filesystem keeping whole seconds gives a change within the same
    second the mtime it had: the fine slack would trust it too early."""
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "000003.log").write_bytes(b"x")
    logs = RetiredLogs(str(folder), slack_ns=0)
    synced = record_fsyncs(logs)
    second = (time.time_ns() // 10**9) * 10**9
    os.utime(folder, ns=(second, second))
    logs.sync_new()
    (folder / "000005.log").write_bytes(b"y")
    os.utime(folder, ns=(second, second))  # the same whole second
    assert logs.sync_new() == 1
    assert synced == ["000003.log"]


def test_a_second_sync_waits_for_the_retired_logs_the_first_is_syncing(tmp_path: Path) -> None:
    """Review finding: a group commit's fsync may run in a thread while a
    backup or a clean stop syncs on the loop. The second caller saw the
    folder "unchanged" (the first had just listed it) and returned while the
    first was still fsyncing a retired log."""
    folder = tmp_path / "db"
    folder.mkdir()
    for name in ("000001.log", "000002.log"):
        (folder / name).write_bytes(b"log")
    an_hour_ago = time.time_ns() - 3600 * 10**9  # no change since: one listing tells all
    os.utime(folder, ns=(an_hour_ago, an_hour_ago))
    started, release = threading.Event(), threading.Event()

    def slow_fsync(fd: int) -> None:
        started.set()
        release.wait(10)

    logs = RetiredLogs(str(folder), fsync=slow_fsync)
    first = threading.Thread(target=logs.sync_new)
    first.start()
    assert started.wait(10)
    returned = threading.Event()
    second = threading.Thread(target=lambda: (logs.sync_new(), returned.set()))
    second.start()
    assert not returned.wait(0.3)  # still waiting: 000001.log is not yet on disk
    release.set()
    first.join(10)
    assert returned.wait(10)
    second.join(10)


def test_a_new_current_log_has_the_folder_synced_once(tmp_path: Path) -> None:
    """LevelDB syncs the folder only for a new MANIFEST; a new log's entry
    must be durable too, or a power cut could lose the log with its synced
    writes."""
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "000003.log").write_bytes(b"x")
    logs = RetiredLogs(str(folder), slack_ns=3_600 * 10**9)  # list at every sync
    folders: list[str] = []
    logs.fsync_folder = lambda fd: folders.append(os.readlink(f"/proc/self/fd/{fd}"))
    logs.sync_new()
    logs.sync_new()
    assert folders == [str(folder)]  # the log being written when first listed
    (folder / "000005.log").write_bytes(b"y")  # a memtable switch
    logs.sync_new()
    logs.sync_new()
    assert folders == [str(folder)] * 2

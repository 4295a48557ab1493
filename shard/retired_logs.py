"""LevelDB log files that LevelDB stopped writing without syncing them.

Group commit writes without sync and then makes one synced write, which
fsyncs LevelDB's *current* log. When the memtable fills, LevelDB (1.22, the
one plyvel bundles) starts a new log and closes the old one without an
fsync; the old log is deleted only once its memtable is in a synced table,
hundreds of milliseconds later. A write that landed in the old log just
before the switch, and was acknowledged after the next group commit's
fsync of the new log, was then only in the OS's cache: a power cut in that
window lost it (a process kill does not: the OS still has the bytes).

So after each synced write the store fsyncs every older log it has not
synced yet. A new log's own name is in the folder, and LevelDB syncs the
folder only for a new MANIFEST: a power cut could keep the log's synced
bytes and lose its entry, and recovery would not find it. So the first
sync that sees a new current log fsyncs the folder too.

Listing the data folder costs ~100 µs with a few hundred table files,
more than the fsync it guards, so it is listed only when the folder may
have changed: its mtime differs from the last listing's, or is too close
to that listing for the filesystem's coarse clock to have told a later
change apart (see ``_may_have_changed``). In steady state a sync
costs one ``stat`` (~1.5 µs).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

CLOCK_SLACK_NS = 20_000_000
"""Filesystem timestamps come from a coarse clock that lags by up to one
kernel tick (at most 10 ms): a folder changed within this long of a listing
may carry the same mtime as before it. While LevelDB is compacting, files
come and go a few times a second, and each change has the next 20 ms of
syncs list the folder."""

COARSE_SLACK_NS = 2_000_000_000
"""The slack when the folder's mtime has no fraction of a second: a
filesystem that keeps whole seconds (ext4 with small inodes, ext3; FAT keeps
two) may give a change a second later the same mtime. A folder whose mtime
is ahead of the clock is listed at every sync until the clock passes it."""


class RetiredLogs:
    def __init__(
        self,
        path: str,
        fsync: Callable[[int], None] = os.fsync,
        slack_ns: int = CLOCK_SLACK_NS,
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.fsync_folder = fsync
        self.current: str | None = None  # the log being written at the last listing
        self.slack_ns = slack_ns
        self.synced: set[str] = set()  # retired logs already fsynced
        self.listings = 0
        self._mtime_ns: int | None = None
        self._listed_at_ns = 0
        # a group commit's fsync may run in a thread while a backup or a clean
        # stop syncs on the loop: a second caller must not return (the folder
        # "unchanged") while the first is still syncing the logs it found
        self._lock = threading.Lock()

    def sync_new(self) -> int:
        """Fsync the logs retired since the last call; returns how many.
        Call after the synced write, so that a switch that write caused is
        seen too."""
        with self._lock:
            if not self._may_have_changed():
                return 0
            return sum(self._sync(name) for name in self._retired())

    def _may_have_changed(self) -> bool:
        """False only when no file can have been created here since the last
        listing: the mtime is unchanged and older, by more than the clock's
        slack, than that listing's start (a later change would carry a
        later mtime)."""
        mtime_ns = os.stat(self.path).st_mtime_ns
        slack_ns = self.slack_ns if mtime_ns % 1_000_000_000 else COARSE_SLACK_NS
        if mtime_ns == self._mtime_ns and mtime_ns < self._listed_at_ns - slack_ns:
            return False
        self._listed_at_ns = time.time_ns()
        self._mtime_ns = mtime_ns
        return True

    def _retired(self) -> list[str]:
        """Every log but the newest (LevelDB numbers files in creation
        order, so the highest-numbered log is the one being written)."""
        self.listings += 1
        logs = sorted(
            (name for name in os.listdir(self.path) if name.endswith(".log")), key=_number
        )
        if logs and logs[-1] != self.current:
            self._sync_folder()
            self.current = logs[-1]
        retired = logs[:-1]
        self.synced.intersection_update(retired)  # forget the ones LevelDB deleted
        return [name for name in retired if name not in self.synced]

    def _sync_folder(self) -> None:
        """Make the folder's entries (a new log's name) durable."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync_folder(fd)
        finally:
            os.close(fd)

    def _sync(self, name: str) -> int:
        try:
            fd = os.open(os.path.join(self.path, name), os.O_RDONLY)
        except FileNotFoundError:  # deleted: its memtable is already in a synced table
            return 0
        try:
            self.fsync(fd)
        finally:
            os.close(fd)
        self.synced.add(name)
        return 1


def _number(name: str) -> int:
    stem = name.removesuffix(".log")
    return int(stem) if stem.isdigit() else -1

"""Backups (``shard.backup.backup`` and the shard's Backup handler) on
a real LevelDB in tmp_path: only a whole copy ever appears at the backup
path, whatever cuts one short, and a failing backup disk is named as such.
Also ``disk_bytes`` while LevelDB deletes files under it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import plyvel
import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment
from murmur.v1 import shard_pb2
from shard import backup as backups
from shard import keys
from shard.backup import PARTIAL_SUFFIX, UNFINISHED_MARKER, backup
from shard.delivery import DeliveryApplier
from shard.maintenance import disk_bytes
from shard.servicer import ShardServicer
from shard.settings import ShardSettings
from shard.state import ShardState

SHARD_ID = 3
USERS = 30
BATCH = 4  # many chunks from a small shard: room to cut a backup short


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShardState]:
    monkeypatch.setattr(backups, "BACKUP_BATCH", BATCH)
    opened = ShardState.open(str(tmp_path / "db"), SHARD_ID, ShardSettings())
    opened.ownership.adopt(
        shard_pb2.SlotMap(
            version=1, owners=even_assignment([SHARD_ID]), addresses={SHARD_ID: "x:1"}
        )
    )
    txn = opened.store.txn()
    for i in range(USERS):
        opened.users.create(txn, f"user{i}", "", "", 10_000)
    txn.commit()
    yield opened
    opened.store.close()


def live_keys(state: ShardState) -> dict[bytes, bytes]:
    return dict(state.store.db.iterator())


def read_all(path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path), create_if_missing=False)
    try:
        return dict(db.iterator())
    finally:
        db.close()


def leftovers(path: Path) -> list[str]:
    """Whatever a backup to ``path`` left beside it."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


async def run_backup(state: ShardState, path: Path) -> list[shard_pb2.BackupStatus]:
    return [status async for status in backup(state, str(path))]


def make_leftover(partial: Path, marked: bool = True) -> None:
    """A folder as a backup killed mid-copy leaves it (or, unmarked, a
    LevelDB that is not one: another shard's data folder, say)."""
    db = plyvel.DB(str(partial), create_if_missing=True)
    db.put(b"\x00\x01half", b"copied")
    db.close()
    if marked:
        (partial / UNFINISHED_MARKER).write_text("unfinished\n")


def assert_whole_backup(state: ShardState, path: Path) -> None:
    copy = read_all(path)
    assert copy == live_keys(state)
    assert keys.shard_meta("settings") in copy  # the shard's own keys sort last
    assert not (path / UNFINISHED_MARKER).exists()
    assert leftovers(path) == [path.name]


# a whole backup ------------------------------------------------------------------


def test_a_completed_backup_is_at_its_path_with_the_shards_own_keys(
    state: ShardState, tmp_path: Path
) -> None:
    path = tmp_path / "backup"
    statuses = asyncio.run(run_backup(state, path))
    assert [s.done for s in statuses] == [False] * (len(statuses) - 1) + [True]
    assert len(statuses) > 3
    assert statuses[-1].keys_copied == len(live_keys(state))
    assert_whole_backup(state, path)
    restored = ShardState.open(str(path), SHARD_ID, ShardSettings())
    try:
        assert restored.ownership.assigned and restored.shard_id == SHARD_ID
    finally:
        restored.store.close()


def test_a_path_given_with_a_trailing_slash_is_built_beside_it(
    state: ShardState, tmp_path: Path
) -> None:
    path = tmp_path / "backup"
    asyncio.run(run_backup(state, Path(f"{path}/")))
    assert_whole_backup(state, path)


# cut short -------------------------------------------------------------------------


async def close_after_first_status(state: ShardState, path: Path) -> None:
    statuses = backup(state, str(path))
    first = await anext(statuses)
    assert not first.done and not path.exists()
    await statuses.aclose()  # what a dropped stream does


async def cancel_mid_copy(state: ShardState, path: Path) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in backup(state, str(path)):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()  # a deadline, the caller cancelling, a shutdown
    with pytest.raises(asyncio.CancelledError):
        await task


async def fail_after_first_chunk(state: ShardState, path: Path) -> None:
    copy_chunk = backups._copy_chunk
    calls = 0

    def failing(*args: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("cut short")
        return copy_chunk(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backups, "_copy_chunk", failing)
        with pytest.raises(RuntimeError, match="cut short"):
            await run_backup(state, path)


@pytest.mark.parametrize("cut", [close_after_first_status, cancel_mid_copy, fail_after_first_chunk])
def test_a_backup_cut_short_leaves_nothing_and_the_next_one_works(
    state: ShardState, tmp_path: Path, cut: Any
) -> None:
    path = tmp_path / "backup"
    asyncio.run(cut(state, path))
    assert leftovers(path) == []
    asyncio.run(run_backup(state, path))
    assert_whole_backup(state, path)


def test_a_leftover_of_a_crashed_backup_is_cleared(state: ShardState, tmp_path: Path) -> None:
    path = tmp_path / "backup"
    make_leftover(tmp_path / f"backup{PARTIAL_SUFFIX}")
    asyncio.run(run_backup(state, path))
    assert_whole_backup(state, path)
    (tmp_path / f"again{PARTIAL_SUFFIX}").mkdir()  # killed before it wrote anything
    asyncio.run(run_backup(state, tmp_path / "again"))
    assert_whole_backup(state, tmp_path / "again")


@pytest.mark.parametrize("kind", ["unmarked leveldb", "other files", "a file"])
def test_a_partial_name_that_is_not_a_leftover_is_refused_and_kept(
    state: ShardState, tmp_path: Path, kind: str
) -> None:
    partial = tmp_path / f"backup{PARTIAL_SUFFIX}"
    if kind == "unmarked leveldb":
        make_leftover(partial, marked=False)
    elif kind == "other files":
        make_leftover(partial)
        (partial / "notes.txt").write_text("mine")
    else:
        partial.write_text("mine")
    before = sorted(os.listdir(partial)) if partial.is_dir() else partial.read_text()
    with pytest.raises(ServiceError) as caught:
        asyncio.run(run_backup(state, tmp_path / "backup"))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert f"{partial} exists on shard {SHARD_ID} and is not an unfinished backup" in str(
        caught.value
    )
    after = sorted(os.listdir(partial)) if partial.is_dir() else partial.read_text()
    assert after == before and not (tmp_path / "backup").exists()


def test_a_second_backup_to_the_same_path_is_refused_while_one_runs(
    state: ShardState, tmp_path: Path
) -> None:
    path = tmp_path / "backup"

    async def both() -> None:
        first = backup(state, str(path))
        await anext(first)
        with pytest.raises(ServiceError) as caught:
            await run_backup(state, path)
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert f"a backup to {path} is already running on shard {SHARD_ID}" in str(caught.value)
        assert [s async for s in first][-1].done

    asyncio.run(both())
    assert_whole_backup(state, path)


HOLD_OPEN = (
    "import plyvel, sys\ndb = plyvel.DB(sys.argv[1])\nprint('open', flush=True)\nsys.stdin.read()\n"
)


def test_a_leftover_another_process_holds_open_is_refused(
    state: ShardState, tmp_path: Path
) -> None:
    partial = tmp_path / f"backup{PARTIAL_SUFFIX}"
    make_leftover(partial)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(partial)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(ServiceError) as caught:
            asyncio.run(run_backup(state, tmp_path / "backup"))
    finally:
        holder.communicate("", timeout=20)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert f"{partial} is in use by another process" in str(caught.value)
    assert (partial / UNFINISHED_MARKER).exists() and read_all(partial)
    assert not (tmp_path / "backup").exists()


# publishing ------------------------------------------------------------------------


@pytest.mark.parametrize("renameat2", ["supported", "unsupported by the filesystem"])
def test_a_folder_made_at_the_path_during_the_backup_is_never_replaced(
    state: ShardState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: str
) -> None:
    if renameat2 != "supported":
        monkeypatch.setattr(backups, "_renameat2_noreplace", lambda source, target: False)
    path = tmp_path / "backup"

    async def meanwhile() -> None:
        statuses = backup(state, str(path))
        await anext(statuses)
        path.mkdir()  # an empty folder: a plain rename would replace it silently
        with pytest.raises(ServiceError) as caught:
            async for _ in statuses:
                pass
        assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS
        assert f"backup path {path} was created on shard {SHARD_ID} during the backup" in str(
            caught.value
        )

    asyncio.run(meanwhile())
    assert path.is_dir() and os.listdir(path) == []
    assert not (tmp_path / f"backup{PARTIAL_SUFFIX}").exists()


# a failing backup disk -------------------------------------------------------------


class Context:
    """What the shard's stream handlers use of a ``grpc.aio`` context."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code, self.details = code, details
        raise grpc.aio.AbortError(details)

    def time_remaining(self) -> float | None:
        return None


class FailingDisk:
    """A backup LevelDB whose writes fail, from the ``fail_from``-th on, as
    LevelDB reports a full or broken disk."""

    def __init__(self, db: plyvel.DB, error: bytes, fail_from: int) -> None:
        self.db, self.error, self.writes = db, error, fail_from

    def write_batch(self, **options: Any) -> Any:
        self.writes -= 1
        if self.writes > 0:
            return self.db.write_batch(**options)
        raise plyvel.IOError(self.error)

    def close(self) -> None:
        self.db.close()


async def call_backup(servicer: ShardServicer, path: Path) -> tuple[list, Context]:
    context = Context()
    statuses = []
    with pytest.raises(grpc.aio.AbortError):
        async for status in servicer.Backup(shard_pb2.BackupRequest(path=str(path)), context):
            statuses.append(status)
    return statuses, context


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            b"IO error: /backups/backup.partial/000005.log: No space left on device",
            "RESOURCE_EXHAUSTED",
        ),
        (
            b"IO error: /backups/backup.partial/000005.log: Disk quota exceeded",
            "RESOURCE_EXHAUSTED",
        ),
        (
            b"IO error: /backups/backup.partial/000005.log: Input/output error",
            "FAILED_PRECONDITION",
        ),
    ],
)
@pytest.mark.parametrize("fail_from", [1, 3])
def test_a_failing_backup_disk_is_named_and_leaves_nothing(
    state: ShardState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: bytes,
    code: str,
    fail_from: int,
) -> None:
    path = tmp_path / "backup"
    real_db = plyvel.DB
    monkeypatch.setattr(
        plyvel,
        "DB",
        lambda folder, **options: FailingDisk(real_db(folder, **options), error, fail_from),
    )
    servicer = ShardServicer(state, DeliveryApplier(state))
    statuses, context = asyncio.run(call_backup(servicer, path))
    assert len(statuses) == fail_from - 1
    assert context.code is getattr(grpc.StatusCode, code), context.details
    assert context.details.startswith(f"shard {SHARD_ID} could not write the backup at {path}: ")
    assert "the shard's own data is unaffected" in context.details
    assert "cannot write to its storage" not in context.details
    assert leftovers(path) == []
    monkeypatch.setattr(plyvel, "DB", real_db)
    asyncio.run(run_backup(state, path))
    assert_whole_backup(state, path)


def test_the_shards_own_storage_failing_is_named_by_shard(
    state: ShardState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise plyvel.IOError(b"IO error: 000042.log: Input/output error")

    monkeypatch.setattr(state.inbox, "store_tallies", broken)
    servicer = ShardServicer(state, DeliveryApplier(state))
    _, context = asyncio.run(call_backup(servicer, tmp_path / "backup"))
    assert context.code is grpc.StatusCode.UNAVAILABLE
    assert context.details.startswith(f"shard {SHARD_ID} cannot write to its storage")
    assert leftovers(tmp_path / "backup") == []


def test_closing_the_handler_removes_the_unfinished_copy_at_once(
    state: ShardState, tmp_path: Path
) -> None:
    path = tmp_path / "backup"
    servicer = ShardServicer(state, DeliveryApplier(state))

    async def close_early() -> None:
        stream = servicer.Backup(shard_pb2.BackupRequest(path=str(path)), Context())
        await anext(stream)
        assert leftovers(path) == [f"backup{PARTIAL_SUFFIX}"]
        await stream.aclose()
        assert leftovers(path) == []  # not left to the garbage collector

    asyncio.run(close_early())


# disk_bytes --------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before its first stat", "after its first stat"])
def test_disk_bytes_skips_a_file_leveldb_deletes_while_it_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    (tmp_path / "000007.ldb").write_bytes(b"x" * 100)
    (tmp_path / "000008.ldb").write_bytes(b"y" * 30)
    (tmp_path / "sub").mkdir()  # folders are not counted
    real_stat = os.stat
    seen: list[str] = []

    def compacting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        """Deletes 000007.ldb as a compaction would, around its first stat."""
        name = os.path.basename(os.fspath(path))
        if name == "000007.ldb" and when == "before its first stat":
            os.remove(path)
        result = real_stat(path, *args, **kwargs)
        if name == "000007.ldb" and not seen:
            seen.append(name)
            os.remove(path)
        return result

    monkeypatch.setattr(os, "stat", compacting_stat)
    total = disk_bytes(str(tmp_path))
    monkeypatch.undo()
    assert total in (30, 130)
    assert not (tmp_path / "000007.ldb").exists()


def test_every_file_of_a_finished_copy_is_synced_before_it_is_named(
    state: ShardState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LevelDB syncs its current log on a synced write, not a log it retired
    when a memtable filled: the copy's files are each synced before the
    rename, so a published backup holds what it copied after a power cut."""
    path = tmp_path / "backup"
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    asyncio.run(run_backup(state, path))
    partial = str(path) + PARTIAL_SUFFIX
    files = {os.path.join(partial, name) for name in os.listdir(path)}
    assert files and files <= set(synced)

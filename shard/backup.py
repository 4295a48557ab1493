"""Backups: a consistent snapshot of one shard, in a new folder, whole or not at all.

The copy is built beside its path and named only once complete, synced and
closed, so whatever is at the path restores as the shard it was copied from;
a copy cut short (deadline, cancel, shutdown, full disk) is removed. The
Backup RPC in ``shard/servicer.py`` streams this module's progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator

import grpc
import plyvel

from murmur.backup_paths import backup_path_problem
from murmur.errors import ServiceError
from murmur.rpc_errors import storage_full, storage_reason
from murmur.v1 import shard_pb2
from shard.state import ShardState

BACKUP_BATCH = 5_000
PARTIAL_SUFFIX = ".partial"
# in a backup's folder until it is complete: proof that a leftover is ours
UNFINISHED_MARKER = "MURMUR-BACKUP-UNFINISHED"
# every name LevelDB gives the files of a database folder
LEVELDB_FILE = re.compile(r"CURRENT|LOCK|LOG(\.old)?|MANIFEST-\d+|\d+\.(log|ldb|sst|dbtmp)")
RENAME_NOREPLACE = 1  # linux/fs.h
AT_FDCWD = -100

log = logging.getLogger("murmur.shard.backup")
# partial backup folders this process is writing (real paths): another
# backup must not take them for abandoned, nor open their LOCK file
_building: set[str] = set()


def check_backup_path(state: ShardState, path: str) -> None:
    """Refuse, naming the problem, a path a backup cannot (or must not) go
    to: LevelDB's own errors for these reach nobody clearly."""
    where = f"on shard {state.shard_id}"
    problem = backup_path_problem(path)
    if problem is not None:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, problem)
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
    database = _database_around(parent)
    if database is not None:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"backup path {path} is inside the LevelDB folder {database} (another shard's "
            "data?): a backup there would be lost with it, or taken for its files",
        )


def _database_around(folder: str) -> str | None:
    """The LevelDB folder ``folder`` is in (or is), if any: one that holds
    CURRENT and LOCK."""
    here = os.path.realpath(folder)
    while True:
        if all(os.path.isfile(os.path.join(here, name)) for name in ("CURRENT", "LOCK")):
            return here
        up = os.path.dirname(here)
        if up == here:
            return None
        here = up


def _target_failure(state: ShardState, path: str, exc: BaseException) -> ServiceError:
    """A full or failing backup disk is for the operator to fix there: the
    generic storage message would read as the shard's own store failing."""
    reason = storage_reason(exc)
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED
        if storage_full(exc)
        else grpc.StatusCode.FAILED_PRECONDITION,
        f"shard {state.shard_id} could not write the backup at {path}: {reason}; "
        f"no backup was made at {path}, and the shard's own data is unaffected",
    )


def _is_unfinished_backup(folder: str) -> bool:
    """Only a real folder that is empty, or holds our marker and otherwise
    nothing but LevelDB's files, is a backup an earlier attempt left:
    anything else (another shard's data folder, say) may be precious."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    names = set(os.listdir(folder))
    if not names:
        return True
    others = names - {UNFINISHED_MARKER}
    return others != names and all(LEVELDB_FILE.fullmatch(name) for name in others)


def _remove_abandoned(state: ShardState, path: str, partial: str) -> None:
    """Clear the ``.partial`` folder a crashed or killed earlier backup to
    ``path`` left, so that repeating the backup just works; refuse, naming
    it, one that is not clearly such a leftover or that a backup still writes.

    LevelDB holds an fcntl lock on LOCK while a database is open, so a lock
    taken here proves no other process writes the folder; it is kept until
    the folder is gone. (Backups of this process are known from
    ``_building`` instead: closing any descriptor of LOCK here would drop
    their LevelDB's lock.)"""
    if _real(partial) in _building:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"a backup to {path} is already running on shard {state.shard_id}",
        )
    if not _is_unfinished_backup(partial):
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{partial} exists on shard {state.shard_id} and is not an unfinished backup; "
            "remove or rename it, or choose another backup path",
        )
    with _locked(path, partial):
        shutil.rmtree(partial)
    log.warning(
        "shard %s: removed %s, an unfinished backup an earlier attempt left",
        state.shard_id,
        partial,
    )


@contextlib.contextmanager
def _locked(path: str, folder: str) -> Iterator[None]:
    """Hold LevelDB's lock on ``folder`` (if it has a LOCK file yet)."""
    try:
        fd = os.open(os.path.join(folder, "LOCK"), os.O_RDWR)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{folder} is in use by another process (a backup to {path} from another shard?)",
        ) from None
    try:
        yield
    finally:
        os.close(fd)


def _real(folder: str) -> str:
    """One name per folder however the request spelt its parent."""
    return os.path.join(os.path.realpath(os.path.dirname(folder)), os.path.basename(folder))


def _claim_partial(state: ShardState, path: str) -> str:
    """Create, as this backup's own, the sibling folder it is built in.

    The copy reaches ``path`` only whole: a folder cut short (deadline,
    cancel, shutdown, full disk) holds a prefix of the keys without the
    shard's own (id, slot map, settings, outbox sort last), which would
    restore as a shard silently missing data."""
    partial = os.path.normpath(path) + PARTIAL_SUFFIX
    if os.path.lexists(partial):
        try:
            _remove_abandoned(state, path, partial)
        except OSError as exc:
            raise _target_failure(state, path, exc) from exc
    try:
        os.mkdir(partial)
    except FileExistsError:  # another process claimed it since
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION, f"another backup to {path} began at the same time"
        ) from None
    except OSError as exc:
        raise _target_failure(state, path, exc) from exc
    _building.add(_real(partial))
    return partial


def _discard(state: ShardState, partial: str) -> None:
    """Remove an unfinished copy; if that fails, say where it stays (it is
    harmless there, never at the backup path, and the next backup to the
    same path clears it)."""
    try:
        shutil.rmtree(partial)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error(
            "shard %s: could not remove the unfinished backup %s: %s; remove it by hand",
            state.shard_id,
            partial,
            exc,
        )


def _renameat2_noreplace(source: str, target: str) -> bool:
    """Rename unless something is at ``target`` (then FileExistsError), in
    one step the kernel does; False where it cannot (a C library without
    renameat2, or a filesystem without RENAME_NOREPLACE, such as NFS)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    if renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS):
            return False
        raise OSError(code, os.strerror(code), source, None, target)
    return True


def _rename_noreplace(source: str, target: str) -> None:
    """Move ``source`` to ``target``, never over something there: a plain
    rename silently replaces an empty directory. Where the kernel cannot
    refuse for us, check just before a plain rename (nothing in this
    process runs in between), which still refuses a file or a non-empty
    directory that another process makes in that instant."""
    if _renameat2_noreplace(source, target):
        return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), source, None, target)
    os.rename(source, target)


def _sync_files(state: ShardState, path: str, partial: str) -> None:
    """Fsync every file of the closed copy. The last chunk's synced write
    covers LevelDB's current log only: a log it retired when a memtable
    filled, and whose flush to a table the close cut short, would otherwise
    be published unsynced (see ``shard/retired_logs.py``)."""
    try:
        for name in os.listdir(partial):
            fd = os.open(os.path.join(partial, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise _target_failure(state, path, exc) from exc


def _publish(state: ShardState, path: str, partial: str) -> None:
    """Give the finished, closed copy its name, durably: the rename is an
    entry in the parent folder, on disk only once that folder is synced."""
    final = os.path.normpath(path)
    try:
        os.remove(os.path.join(partial, UNFINISHED_MARKER))
        _rename_noreplace(partial, final)
    except FileExistsError:
        raise ServiceError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"backup path {path} was created on shard {state.shard_id} during the backup; "
            "the copy was discarded",
        ) from None
    except OSError as exc:
        raise _target_failure(state, path, exc) from exc
    try:
        parent = os.open(os.path.dirname(final), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
    except OSError as exc:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the backup at {path} is complete but shard {state.shard_id} could not sync its "
            f"parent folder ({storage_reason(exc)}): after a power loss it may be missing",
        ) from exc


def _open_target(state: ShardState, path: str, partial: str) -> plyvel.DB:
    """Mark the folder as an unfinished backup (for whoever finds it after
    a crash, and for the next backup, which then clears it), then open it."""
    note = f"An unfinished backup of shard {state.shard_id} to {path}: safe to delete.\n"
    try:
        with open(os.path.join(partial, UNFINISHED_MARKER), "w", encoding="utf-8") as marker:
            marker.write(note)
        return plyvel.DB(partial, create_if_missing=True, error_if_exists=True)
    except (plyvel.Error, OSError) as exc:
        raise _target_failure(state, path, exc) from exc


def _write(state: ShardState, path: str, target: plyvel.DB, chunk: list, sync: bool) -> None:
    """Errors here are the backup disk's, not the shard's: name them so."""
    try:
        with target.write_batch(sync=sync) as batch:
            for key, value in chunk:
                batch.put(key, value)
    except (plyvel.Error, OSError) as exc:
        raise _target_failure(state, path, exc) from exc


@contextlib.contextmanager
def _snapshot_items(state: ShardState) -> Iterator[Iterator[tuple[bytes, bytes]]]:
    """Every key and value as of now, however long the copy takes."""
    snapshot = state.store.db.snapshot()
    iterator = snapshot.iterator()
    try:
        yield iterator
    finally:
        iterator.close()
        snapshot.close()


def _copy_chunk(state: ShardState, path: str, source: Iterator, target: plyvel.DB) -> int:
    """Copy up to BACKUP_BATCH keys. The last (short) chunk is written
    synced: with the tables LevelDB synced as it wrote them, that puts the
    whole copy on disk before it is published."""
    chunk = list(itertools.islice(source, BACKUP_BATCH))
    _write(state, path, target, chunk, sync=len(chunk) < BACKUP_BATCH)
    return len(chunk)


async def backup(state: ShardState, path: str) -> AsyncIterator[shard_pb2.BackupStatus]:
    """Copy a consistent snapshot into a new LevelDB at ``path``.

    Restoring is starting ``murmur-shard --data-dir <path> --shard-id <same id>``
    (or copying the folder over a lost shard's data folder). The inbox
    sizes counted in memory are stored first, so the copy loads them without
    counting keys. The copy is built in ``<path>.partial`` and renamed to
    ``path`` only once complete, synced and closed; a copy cut short is
    removed, so whatever is at ``path`` is a whole backup.
    """
    check_backup_path(state, path)
    partial = _claim_partial(state, path)
    claimed = _real(partial)
    try:
        state.inbox.store_tallies()
        target = _open_target(state, path, partial)
        with contextlib.closing(target), _snapshot_items(state) as source:
            copied = 0
            while (count := _copy_chunk(state, path, source, target)) == BACKUP_BATCH:
                copied += count
                yield shard_pb2.BackupStatus(keys_copied=copied, path=path)
                await asyncio.sleep(0)
            copied += count
        _sync_files(state, path, partial)
        _publish(state, path, partial)
    except BaseException:  # failed, cancelled or closed: leave nothing half-made
        _discard(state, partial)
        raise
    finally:
        _building.discard(claimed)
    yield shard_pb2.BackupStatus(keys_copied=copied, path=path, done=True)

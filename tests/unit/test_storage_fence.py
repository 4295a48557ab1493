"""The storage fence: after one failed LevelDB write or fsync a shard writes
nothing more to LevelDB until it restarts (shard/storage_fence.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import plyvel
import pytest

from murmur.errors import StorageFailed
from murmur.rpc_errors import _unexpected
from shard.group_commit import GroupCommit
from shard.storage_fence import FencedDB
from shard.store import Store


class Flaky:
    """A LevelDB whose next ``failures`` writes fail as a full disk does."""

    def __init__(self, db: plyvel.DB, failures: int = 1) -> None:
        self.db = db
        self.failures = failures
        self.writes = 0

    def _maybe_fail(self) -> None:
        self.writes += 1
        if self.failures > 0:
            self.failures -= 1
            raise plyvel.IOError(b"IO error: 000003.log: No space left on device")

    def write_batch(self, **options: Any) -> Any:
        inner = self.db.write_batch(**options)
        flaky = self

        class Batch:
            put, delete, clear = inner.put, inner.delete, inner.clear

            def write(self) -> None:
                flaky._maybe_fail()
                inner.write()

            def __enter__(self) -> Batch:
                return self

            def __exit__(self, exc_type: Any, *_: Any) -> None:
                if exc_type is None:
                    self.write()

        return Batch()

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        self._maybe_fail()
        self.db.put(key, value, sync=sync)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"))
    yield opened
    opened.close()


def flaky(store: Store, failures: int = 1) -> Flaky:
    inner = Flaky(store.db._db, failures)
    store.db = FencedDB(inner)  # type: ignore[arg-type]
    return inner


def commit(store: Store, key: bytes, sync: bool = False) -> None:
    txn = store.txn()
    txn.put(key, b"v")
    txn.commit(sync=sync)


def test_after_a_failed_write_nothing_more_reaches_leveldb(store: Store) -> None:
    commit(store, b"before")
    inner = flaky(store)
    with pytest.raises(plyvel.IOError):  # the write that failed: not applied, as before
        commit(store, b"failed")
    writes = inner.writes
    for write in (
        lambda: commit(store, b"after"),
        lambda: store.db.put(b"after", b"v", sync=True),
        lambda: store.db.delete(b"before"),
        store.sync,
    ):
        with pytest.raises(StorageFailed, match="refuses writes: a write to its storage failed"):
            write()
    assert inner.writes == writes, "a write reached LevelDB past the fence"
    assert store.get(b"before") == b"v" and store.get(b"after") is None  # reads go on


def test_a_failed_fsync_leaves_the_outcome_unknown_and_closes_the_fence(store: Store) -> None:
    commit(store, b"k")
    flaky(store)
    with pytest.raises(StorageFailed, match="may or may not have been applied"):
        store.sync()
    with pytest.raises(StorageFailed, match="refuses writes"):
        commit(store, b"later")


def test_the_writes_waiting_on_a_failed_fsync_and_after_it_all_fail(store: Store) -> None:
    group = GroupCommit(store)

    async def scenario() -> list[BaseException | None]:
        commit(store, b"a")
        flaky(store)
        first = await asyncio.gather(group.durable(), group.durable(), return_exceptions=True)
        later = await asyncio.gather(group.durable(), return_exceptions=True)
        return [*first, *later]

    outcomes = asyncio.run(scenario())
    assert all(isinstance(outcome, StorageFailed) for outcome in outcomes), outcomes


def test_a_transaction_batch_whose_block_raised_is_not_written(store: Store) -> None:
    with pytest.raises(KeyError), store.db.write_batch(transaction=True) as batch:
        batch.put(b"t", b"v")
        raise KeyError("stop")
    with pytest.raises(KeyError), store.db.write_batch() as batch:
        batch.put(b"plain", b"v")
        raise KeyError("stop")
    assert store.get(b"t") is None and store.get(b"plain") == b"v"  # plyvel's own rule


def test_callers_hear_unavailable_naming_the_shard_and_the_restart(store: Store) -> None:
    flaky(store)
    with pytest.raises(plyvel.IOError):
        commit(store, b"failed")
    with pytest.raises(StorageFailed) as refused:
        commit(store, b"after")
    code, message = _unexpected(refused.value, "shard 3", "PostTweet")
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message.startswith("shard 3 refuses writes: a write to its storage failed (IO error")
    assert "restart it" in message

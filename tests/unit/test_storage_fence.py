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
from murmur.v1 import murmur_pb2, shard_pb2
from shard.group_commit import GroupCommit
from shard.storage_fence import FencedDB
from shard.store import Store

NO_SPACE = b"No space left on device"


class Flaky:
    """A LevelDB whose next ``failures`` writes fail as a full disk does
    (or for ``reason``)."""

    def __init__(
        self, db: plyvel.DB, failures: int = 1, after: int = 0, reason: bytes = NO_SPACE
    ) -> None:
        self.db = db
        self.failures = failures
        self.after = after  # writes that succeed before the failures begin
        self.reason = reason
        self.writes = 0

    def _maybe_fail(self) -> None:
        self.writes += 1
        if self.writes > self.after and self.failures > 0:
            self.failures -= 1
            raise plyvel.IOError(b"IO error: 000003.log: " + self.reason)

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


def flaky(store: Store, failures: int = 1, after: int = 0, reason: bytes = NO_SPACE) -> Flaky:
    inner = Flaky(store.db._db, failures, after, reason)
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
    ):
        with pytest.raises(StorageFailed, match="refuses writes: a write to its storage failed"):
            write()
    with pytest.raises(StorageFailed, match="an earlier write failed: IO error.*may or may not"):
        store.sync()  # for writes committed before the failure, waiting on the group fsync
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
    assert all("may or may not have been applied" in str(outcome) for outcome in outcomes)


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


@pytest.mark.parametrize("reason", [NO_SPACE, b"File too large", b"Input/output error"])
def test_an_fsync_that_meets_a_full_disk_names_the_storage_and_its_cause(
    store: Store, reason: bytes
) -> None:
    """The synced write appends to the log as the unsynced one does, so
    either may be the one to meet a full disk (a file size limit's EFBIG
    too). The fsync's callers cannot know whether their writes landed:
    UNAVAILABLE, full disk or not (RESOURCE_EXHAUSTED says "not applied"),
    with the storage and its cause named for the operator."""
    commit(store, b"k")
    flaky(store, reason=reason)
    with pytest.raises(StorageFailed) as failed:
        store.sync()
    got, message = _unexpected(failed.value, "shard 3", "PostTweet")
    assert got == grpc.StatusCode.UNAVAILABLE
    assert message.startswith(
        "shard 3 could not make the write durable: its storage failed (IO error"
    )
    assert reason.decode() in message and "may or may not have been applied" in message


def test_a_fenced_store_skips_storing_inbox_sizes_so_stop_and_backup_go_on(store: Store) -> None:
    """A clean stop and a backup both store the counted inbox sizes first;
    behind the fence they leave them marked, to be counted at the next load."""
    from shard.inbox import InboxStore

    inbox = InboxStore(store)
    flaky(store)
    with pytest.raises(plyvel.IOError):
        commit(store, b"failed")
    assert inbox.store_tallies() == 0


def test_a_post_whose_own_inbox_trim_fails_says_its_outcome_is_unknown(tmp_path: Path) -> None:
    """The post's batch landed, then its inbox trim hit the full disk. The
    caller used to hear RESOURCE_EXHAUSTED ("not applied", not retried) for
    a post that was kept and fanned out; now the group fsync behind the
    closed fence answers that it may or may not have been applied."""
    from shard.settings import ShardSettings
    from tests.unit.test_shard_servicer import Shard

    shard = Shard(tmp_path / "shard", ShardSettings(inbox_cap=1))
    try:
        author = shard.create_user("carol")
        for n in range(2):  # the next post makes 3 entries, past the cap's trim line (2)
            shard.post(author, f"post {n}")
        flaky(shard.state.store, failures=1, after=1)  # the post's batch lands, the trim's fails
        request = murmur_pb2.PostTweetRequest(user_id=author, text="kept")
        details = shard.fails("PostTweet", request, grpc.StatusCode.UNAVAILABLE)
        assert "may or may not have been applied" in details
        reopened = shard.reopen()
        assert reopened.user(author).user.tweet_count == 3
    finally:
        shard.close()


def test_a_fenced_shard_says_so_in_its_stats_and_metrics(tmp_path: Path) -> None:
    """Health stays SERVING (reads go on); the stats (and from them the
    router's status) and a gauge name the refusal."""
    from types import SimpleNamespace

    from shard.fanout import FanoutStats
    from shard.metrics import ShardCollector
    from shard.settings import ShardSettings
    from tests.unit.test_shard_servicer import Shard

    shard = Shard(tmp_path / "shard", ShardSettings())
    shard.servicer.worker = SimpleNamespace(stats=FanoutStats())  # no fan-out worker here
    try:
        author = shard.create_user("dora")

        def refused() -> tuple[str, float]:
            stats = shard.ok("GetStats", shard_pb2.GetStatsRequest())
            collector = ShardCollector(shard.state, shard.servicer.worker, shard.servicer.commits)
            gauge = next(
                m for m in collector.collect() if m.name == "murmur_storage_writes_refused"
            )
            return stats.writes_refused, gauge.samples[0].value

        assert refused() == ("", 0)
        flaky(shard.state.store)
        shard.fails(
            "PostTweet",
            murmur_pb2.PostTweetRequest(user_id=author, text="x"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        reason, gauge = refused()
        assert "No space left on device" in reason and gauge == 1
    finally:
        shard.close()

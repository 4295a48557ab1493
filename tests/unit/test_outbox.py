"""The outbox's in-memory index of queued records, which the metrics scrape
and slot moves read instead of scanning the records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from shard import keys
from shard.outbox import Outbox, add_follower_record, record_slot
from shard.storage_fence import FencedDB
from shard.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"))
    yield opened
    opened.close()


def fanout_record(author: int) -> shard_pb2.OutboxRecord:
    tweet = murmur_pb2.Tweet(tweet_id=1, user_id=author, text="hi")
    return shard_pb2.OutboxRecord(
        tweet_fanout=shard_pb2.TweetFanout(kind=shard_pb2.FANOUT_PUT, tweet=tweet)
    )


def queue(outbox: Outbox, store: Store, count: int, author: int = 1) -> list[int]:
    txn = store.txn()
    seqs = [outbox.append(txn, fanout_record(author)) for _ in range(count)]
    txn.commit()
    return seqs


def scanned(store: Store) -> dict[int, int | None]:
    """What the index must say, read from the records themselves."""
    return {
        keys.last_u64(key): record_slot(shard_pb2.OutboxRecord.FromString(raw))
        for key, raw in store.scan(keys.outbox_prefix())
    }


def indexed(outbox: Outbox, slots: set[int]) -> dict[int, set[int]]:
    return {slot: outbox.queued_for({slot}) for slot in slots}


def test_the_backlog_counts_what_is_still_queued(store: Store) -> None:
    outbox = Outbox(store)
    seqs = queue(outbox, store, 8)
    assert outbox.backlog() == 8
    outbox.finish(seqs[:5], {})
    assert outbox.backlog() == 3
    assert Outbox(store).backlog() == 3  # reopened: read back from the records


def test_queued_for_names_the_records_that_read_the_slots(store: Store) -> None:
    outbox = Outbox(store)
    mine, other = 11, 12
    assert slot_for_user(mine) != slot_for_user(other)
    first = queue(outbox, store, 3, author=mine)
    second = queue(outbox, store, 2, author=other)
    follow = queue_follow(outbox, store, followee=other, follower=mine)

    assert outbox.queued_for({slot_for_user(mine)}) == {*first, follow}
    assert outbox.queued_for({slot_for_user(other)}) == set(second)
    assert outbox.queued_for({slot_for_user(mine), slot_for_user(other)}) == {
        *first,
        *second,
        follow,
    }
    outbox.finish(first[:2], {})
    assert outbox.queued_for({slot_for_user(mine)}) == {first[2], follow}
    assert Outbox(store).queued_for({slot_for_user(mine)}) == {first[2], follow}


def queue_follow(outbox: Outbox, store: Store, followee: int, follower: int) -> int:
    txn = store.txn()
    seq = outbox.append(txn, add_follower_record(followee, follower))
    txn.commit()
    return seq


def test_a_record_whose_commit_never_came_or_failed_is_not_queued(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that appends and then fails never commits; a commit that
    fails writes nothing. Either way a move must not wait on the record."""
    outbox = Outbox(store)
    author = 21
    outbox.append(store.txn(), fanout_record(author))  # dropped uncommitted
    txn = store.txn()
    outbox.append(txn, fanout_record(author))
    monkeypatch.setattr(store, "db", FencedDB(FullDisk(store.db._db)))
    with pytest.raises(plyvel.IOError):
        txn.commit(sync=False)  # handlers commit so, then wait for the group fsync
    monkeypatch.undo()

    assert outbox.queued_for({slot_for_user(author)}) == set()
    assert outbox.backlog() == 0
    assert scanned(store) == {}


class FullDisk:
    """The store's LevelDB, whose batches fail as LevelDB reports a full disk."""

    def __init__(self, db: plyvel.DB) -> None:
        self.db = db

    def write_batch(self, **_options: object) -> None:
        raise plyvel.IOError(b"IO error: No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_progress_keeps_a_partly_delivered_record_queued(store: Store) -> None:
    outbox = Outbox(store)
    author = 31
    (seq,) = queue(outbox, store, 1, author=author)
    record = fanout_record(author)
    record.tweet_fanout.after_follower = 500
    outbox.finish([], {seq: record})
    assert outbox.queued_for({slot_for_user(author)}) == {seq}
    outbox.finish([seq], {})
    assert outbox.queued_for({slot_for_user(author)}) == set()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["append", "finish", "drop", "reopen"]), st.integers(0, 5)),
        max_size=30,
    )
)
def test_the_index_always_matches_the_records_on_disk(tmp_path_factory, steps) -> None:
    """Appends committed or dropped, prefixes delivered, reopens: the index
    and a scan of the records agree after every step."""
    store = Store(str(tmp_path_factory.mktemp("db")))
    try:
        outbox = Outbox(store)
        authors = range(1, 7)
        for action, n in steps:
            if action == "append":
                queue(outbox, store, n % 3 + 1, author=authors[n])
            elif action == "drop":
                outbox.append(store.txn(), fanout_record(authors[n]))
            elif action == "finish":
                queued = sorted(scanned(store))
                outbox.finish(queued[: n + 1], {})
            else:
                outbox = Outbox(store)
            on_disk = scanned(store)
            assert outbox.backlog() == len(on_disk)
            slots = {slot_for_user(a) for a in authors}
            assert indexed(outbox, slots) == {
                slot: {seq for seq, s in on_disk.items() if s == slot} for slot in slots
            }
    finally:
        store.close()


@pytest.mark.parametrize(
    "raw",
    [
        bytes([2 << 3 | 2, 2, 7 << 3 | 2, 0]),  # a direct op of a kind a newer version added
        b"\xff\xff\xff",  # not a record at all
    ],
)
def test_a_record_this_version_cannot_read_does_not_stop_the_shard_starting(
    store: Store, raw: bytes
) -> None:
    """It is counted, reads no known slot, and the fan-out worker reports it
    when it gets there; the shard must still open."""
    store.db.put(keys.outbox(1), raw)
    outbox = Outbox(store)
    assert outbox.backlog() == 1 and outbox.next_seq == 2

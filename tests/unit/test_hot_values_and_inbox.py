"""The in-memory copy of hot keys (edges, inbox metadata) and the inbox
tallies: both skip LevelDB work on fan-out's hot path. The hot values must
never disagree with what is on disk; the tallies run ahead of it, and
whatever drops them (a crash, a failed commit, a slot that moves) leaves
the inbox marked so that the next load counts it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import plyvel
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from shard import keys
from shard.graph import FollowGraph
from shard.inbox import InboxStore
from shard.inbox_tally import RECENT_IDS, InboxTallies, Tally
from shard.migration import _drop_slots, import_entries
from shard.settings import ShardSettings
from shard.state import ShardState
from shard.storage_fence import FencedDB
from shard.store import MISSING, ChangeCapture, HotValues, Store, Txn

OWNER = 1_234_567
AUTHOR = 7_654_321


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"))
    yield opened
    opened.close()


def tweet(tweet_id: int, author: int = AUTHOR) -> murmur_pb2.Tweet:
    return murmur_pb2.Tweet(tweet_id=tweet_id, user_id=author, text=f"tweet {tweet_id}")


def inbox_ids(store: Store, owner: int = OWNER) -> list[int]:
    prefix = keys.inbox_prefix(slot_for_user(owner), owner)
    return [keys.last_inverted(k) for k in store.scan(prefix, include_value=False)]


# HotValues ---------------------------------------------------------------------


def test_hot_get_reads_disk_once_then_memory(store: Store) -> None:
    store.db.put(b"k", b"on-disk")
    assert store.txn().get_hot(b"k") == b"on-disk"
    store.db.put(b"k", b"changed behind the cache's back")
    assert store.txn().get_hot(b"k") == b"on-disk"  # served from memory
    assert store.txn().get_hot(b"absent") is None
    assert store.hot.lookup(b"absent") is None  # absence is remembered too


def test_only_committed_hot_writes_reach_memory(store: Store) -> None:
    store.db.put(b"k", b"old")
    dropped = store.txn()
    dropped.put_hot(b"k", b"never committed")
    assert dropped.get_hot(b"k") == b"never committed"  # a txn reads its own writes
    del dropped
    assert store.txn().get_hot(b"k") == b"old"

    txn = store.txn()
    txn.put_hot(b"k", b"new")
    txn.commit(sync=False)
    assert store.txn().get_hot(b"k") == b"new" == store.db.get(b"k")

    txn = store.txn()
    txn.delete_hot(b"k")
    txn.commit(sync=False)
    assert store.txn().get_hot(b"k") is None and store.db.get(b"k") is None


def test_a_failed_commit_leaves_memory_as_it_was(store: Store) -> None:
    store.db.put(b"k", b"old")
    txn = store.txn()
    txn.put_hot(b"k", b"new")
    store.close()
    with pytest.raises(RuntimeError):
        txn.commit(sync=False)
    assert store.hot.lookup(b"k") is MISSING
    store.db = FencedDB(plyvel.DB(store.path))  # reopen for the fixture's close


def test_a_failed_commit_sends_nothing_with_a_slot_move(store: Store) -> None:
    """A write whose commit failed was refused to its caller; if a slot
    move still carried it, the new owner would hold what the old one never
    did (a tweet without its fan-out record, say)."""
    capture = ChangeCapture({5})
    store.captures.append(capture)
    txn = store.txn()
    txn.put(keys.user(5, 42), b"record")
    store.close()
    with pytest.raises(RuntimeError):
        txn.commit(sync=False)
    store.db = FencedDB(plyvel.DB(store.path))  # reopen for the fixture's close
    assert capture.take() == []
    txn = store.txn()
    txn.put(keys.user(5, 43), b"landed")
    txn.commit(sync=False)
    assert capture.take() == [(keys.user(5, 43), b"landed")]


def test_hot_values_stay_bounded_and_correct() -> None:
    hot = HotValues(capacity=64)
    for n in range(1000):
        hot.remember(n.to_bytes(4, "big"), str(n).encode())
    assert len(hot._values) <= 64
    newest = (999).to_bytes(4, "big")
    assert hot.lookup(newest) == b"999"
    assert hot.lookup((0).to_bytes(4, "big")) is MISSING  # forgotten, read again on demand


def test_remember_all_takes_each_value_and_stays_bounded() -> None:
    hot = HotValues(capacity=64)
    for start in range(0, 1000, 50):
        batch = {n.to_bytes(4, "big"): str(n).encode() for n in range(start, start + 50)}
        batch[b"deleted"] = None
        hot.remember_all(list(batch), batch)
        assert len(hot._values) <= 64
    assert hot.lookup((999).to_bytes(4, "big")) == b"999"
    assert hot.lookup(b"deleted") is None  # a deletion is remembered as absence
    assert hot.lookup((0).to_bytes(4, "big")) is MISSING


# listings: the followed celebrities every home read asks for ----------------


def follow(store: Store, follower: int, followee: int, celebrity: bool) -> None:
    txn = store.txn()
    edge = shard_pb2.FollowEdge(celebrity=celebrity)
    FollowGraph(store).put_following(txn, follower, followee, edge)
    txn.commit(sync=False)


def test_followed_celebrities_are_remembered_and_forgotten_as_edges_change(store: Store) -> None:
    graph = FollowGraph(store)
    star, other_star, friend = 11, 22, 33
    assert graph.followed_celebrities(OWNER) == ()
    follow(store, OWNER, star, celebrity=True)
    follow(store, OWNER, friend, celebrity=False)
    assert graph.followed_celebrities(OWNER) == (star,)
    prefix = keys.celebrity_followed_prefix(slot_for_user(OWNER), OWNER)
    assert store.hot.listing(prefix) == (star,)  # the next read costs no scan
    follow(store, OWNER, other_star, celebrity=True)
    assert graph.followed_celebrities(OWNER) == (star, other_star)
    follow(store, OWNER, star, celebrity=False)  # demoted
    assert graph.followed_celebrities(OWNER) == (other_star,)
    txn = store.txn()
    graph.delete_following(txn, OWNER, other_star)  # unfollowed
    txn.commit(sync=False)
    assert graph.followed_celebrities(OWNER) == ()


def test_an_uncommitted_change_leaves_the_listing_as_on_disk(store: Store) -> None:
    graph = FollowGraph(store)
    follow(store, OWNER, 11, celebrity=True)
    assert graph.followed_celebrities(OWNER) == (11,)
    dropped = store.txn()
    graph.put_following(dropped, OWNER, 22, shard_pb2.FollowEdge(celebrity=True))
    assert graph.followed_celebrities(OWNER) == (11,)  # never committed


def test_writes_around_txn_forget_every_listing(store: Store) -> None:
    """Slot import and drop write LevelDB directly and clear the hot values:
    listings go with them."""
    graph = FollowGraph(store)
    assert graph.followed_celebrities(OWNER) == ()
    store.db.put(keys.celebrity_followed(slot_for_user(OWNER), OWNER, 11), b"")
    assert graph.followed_celebrities(OWNER) == ()  # remembered: not seen yet
    store.hot.clear()
    assert graph.followed_celebrities(OWNER) == (11,)


def test_listings_stay_bounded() -> None:
    hot = HotValues(capacity=64)
    for n in range(1000):
        hot.remember_listing(n.to_bytes(4, "big"), (n,))
    assert len(hot._listings) <= 64
    assert hot.listing((999).to_bytes(4, "big")) == (999,)
    assert hot.listing((0).to_bytes(4, "big")) is None


def test_listings_stay_within_their_id_budget() -> None:
    hot = HotValues(capacity=64, listed_ids=100)
    for n in range(50):
        hot.remember_listing(n.to_bytes(4, "big"), tuple(range(n, n + 30)))
        assert hot.listed_ids == sum(len(ids) for ids in hot._listings.values()) <= 100
    assert hot.listing((49).to_bytes(4, "big")) == tuple(range(49, 79))  # the newest stays
    assert hot.listing((0).to_bytes(4, "big")) is None
    hot.remember_listing(b"huge", tuple(range(101)))  # over the whole budget: not kept
    assert hot.listing(b"huge") is None
    hot.forget_listings([(49).to_bytes(4, "big")])
    assert hot.listed_ids == sum(len(ids) for ids in hot._listings.values())
    hot.clear()
    assert hot.listed_ids == 0


# listings: an ordinary author's followers, which every post's fan-out reads ---


def add_follower(store: Store, followee: int, follower: int) -> None:
    txn = store.txn()
    FollowGraph(store).put_follower(txn, followee, follower)
    txn.commit(sync=False)


def test_followers_are_remembered_whole_and_forgotten_as_follows_commit(store: Store) -> None:
    graph = FollowGraph(store)
    for fan in (5, 3, 9):
        add_follower(store, AUTHOR, fan)
    assert graph.page_followers(AUTHOR, 0, 100) == ([3, 5, 9], False)
    prefix = keys.followers_prefix(slot_for_user(AUTHOR), AUTHOR)
    assert list(store.hot.listing(prefix)) == [3, 5, 9]  # the next post's fan-out scans nothing
    assert graph.page_followers(AUTHOR, 0, 2) == ([3, 5], True)  # pages from the listing
    assert graph.page_followers(AUTHOR, 5, 2) == ([9], False)
    assert graph.page_followers(AUTHOR, 4, 1) == ([5], True)
    dropped = store.txn()
    graph.put_follower(dropped, AUTHOR, 7)  # never committed: the listing stays as on disk
    assert graph.page_followers(AUTHOR, 0, 100) == ([3, 5, 9], False)
    add_follower(store, AUTHOR, 7)
    assert store.hot.listing(prefix) is None
    assert graph.page_followers(AUTHOR, 0, 100) == ([3, 5, 7, 9], False)
    txn = store.txn()
    graph.delete_follower(txn, AUTHOR, 3)
    txn.commit(sync=False)
    assert graph.page_followers(AUTHOR, 0, 100) == ([5, 7, 9], False)


def test_followers_read_in_part_or_over_the_limit_are_not_remembered(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shard.graph.FOLLOWER_LISTING_MAX", 3)
    graph = FollowGraph(store)
    prefix = keys.followers_prefix(slot_for_user(AUTHOR), AUTHOR)
    for fan in range(1, 5):
        add_follower(store, AUTHOR, fan)
    assert graph.page_followers(AUTHOR, 0, 2) == ([1, 2], True)  # a first page only
    assert store.hot.listing(prefix) is None
    assert graph.page_followers(AUTHOR, 0, 10) == ([1, 2, 3, 4], False)  # whole, but 4 > 3
    assert store.hot.listing(prefix) is None
    assert graph.page_followers(AUTHOR, 2, 10) == ([3, 4], False)  # a later page
    assert store.hot.listing(prefix) is None


# the inbox tallies: newest id and size in memory ------------------------------


def put(store: Store, inbox: InboxStore, tweet_id: int, owner: int = OWNER) -> int:
    txn = store.txn()
    size = inbox.put(txn, owner, tweet(tweet_id))
    txn.commit(sync=False)
    return size


def meta(store: Store, inbox: InboxStore, owner: int = OWNER) -> shard_pb2.InboxMeta:
    return inbox.meta(store.txn(), owner)


def stored_meta(store: Store, owner: int = OWNER) -> shard_pb2.InboxMeta:
    raw = store.get(keys.inbox_meta(slot_for_user(owner), owner))
    return shard_pb2.InboxMeta.FromString(raw or b"")


def tally(inbox: InboxStore, owner: int = OWNER) -> Tally:
    found = inbox.tallies.get(owner)
    assert found is not None
    return found


def test_newer_tweets_count_without_lookup_and_redeliveries_do_not(store: Store) -> None:
    inbox = InboxStore(store)
    assert [put(store, inbox, t) for t in (100, 200, 300)] == [1, 2, 3]
    assert tally(inbox).newest_id == 300
    assert put(store, inbox, 200) == 0  # a redelivery of an older tweet: looked up
    assert put(store, inbox, 300) == 0  # a redelivery of the newest
    assert put(store, inbox, 150) == 4  # older but new: out-of-order delivery
    assert meta(store, inbox).size == 4 == len(inbox_ids(store))
    assert tally(inbox).newest_id == 300


def test_removing_the_newest_keeps_redelivery_exact(store: Store) -> None:
    inbox = InboxStore(store)
    put(store, inbox, 100)
    put(store, inbox, 200)
    txn = store.txn()
    inbox.remove(txn, OWNER, 200)
    txn.commit(sync=False)
    assert put(store, inbox, 200) == 2  # below newest_id, so looked up: it is new again
    assert meta(store, inbox).size == 2 == len(inbox_ids(store))


def merged_streams(first: list[int], second: list[int], rng: random.Random) -> list[int]:
    """Two senders' ids, each stream in order, interleaved at random."""
    merged, a, b = [], list(first), list(second)
    while a or b:
        merged.append((a if a and (not b or rng.random() < 0.5) else b).pop(0))
    return merged


def test_two_senders_merged_streams_count_exactly_without_lookups(store: Store) -> None:
    """Fan-out from two shards reaches an inbox as two ordered streams,
    merged: every copy that is older than the newest, but new, was looked up
    in LevelDB only to learn that it was new."""
    inbox = InboxStore(store)
    rng = random.Random(3)
    arrivals = merged_streams(list(range(1000, 1060, 2)), list(range(1001, 1061, 2)), rng)
    assert arrivals != sorted(arrivals)
    with mock.patch.object(Txn, "get", side_effect=AssertionError("looked up")):
        sizes = [put(store, inbox, t) for t in arrivals]
    assert sizes == list(range(1, 61))
    redelivered = [put(store, inbox, t) for t in (1059, 1041, 1000)]  # some looked up
    assert redelivered == [0, 0, 0]
    assert meta(store, inbox).size == 60 == len(inbox_ids(store))


@settings(deadline=None, max_examples=200)
@given(
    st.integers(0, 50),
    st.lists(
        st.tuples(st.sampled_from(["put", "put", "put", "remove"]), st.integers(1, 120)),
        max_size=200,
    ),
)
def test_a_tally_knows_what_its_inbox_holds_or_says_it_cannot_tell(
    loaded_newest: int, steps: list[tuple[str, int]]
) -> None:
    """``holds`` against the plain definition: the set of ids in the inbox.
    Whenever it answers, the answer is right; above the newest it is never
    asked (those are new by the newest id alone)."""
    held = set(range(1, loaded_newest + 1, 3))  # what the inbox held at load
    tally = Tally(max(held, default=0), len(held), slot=0, marked=False, floor=max(held, default=0))
    for action, tweet_id in steps:
        if action == "put":
            if tweet_id > tally.newest_id:
                tally.newest_id = tweet_id
                new = True
            else:
                known = tally.holds(tweet_id)
                if known is not None:
                    assert known == (tweet_id in held)
                new = tweet_id not in held
            if new:
                held.add(tweet_id)
                tally.added(tweet_id)
        elif tweet_id in held:
            held.discard(tweet_id)
            tally.removed(tweet_id)
        assert tally.size == len(held)
        assert len(tally.recent) < RECENT_IDS
        assert {t for t in held if t > tally.floor} == set(tally.recent)


def test_a_loaded_inbox_learns_its_newest_id_from_its_first_key(store: Store) -> None:
    slot = slot_for_user(OWNER)
    for tweet_id in (500, 400):  # on disk before this process counted anything
        store.db.put(keys.inbox(slot, OWNER, tweet_id), tweet(tweet_id).SerializeToString())
    store.db.put(keys.inbox_meta(slot, OWNER), shard_pb2.InboxMeta(size=2).SerializeToString())
    inbox = InboxStore(store)
    assert put(store, inbox, 400) == 0  # already there: not counted twice
    assert tally(inbox).newest_id == 500 and tally(inbox).size == 2
    assert put(store, inbox, 450) == 3
    assert put(store, inbox, 600) == 4
    assert inbox_ids(store) == [600, 500, 450, 400]


def test_the_first_change_marks_the_inbox_counted_and_no_later_one_writes(
    store: Store,
) -> None:
    inbox = InboxStore(store)
    put(store, inbox, 1)
    assert stored_meta(store).counting and stored_meta(store).size == 1
    for tweet_id in (2, 3, 4):
        put(store, inbox, tweet_id)
    assert stored_meta(store).size == 1  # no metadata write per entry
    assert meta(store, inbox).size == 4 == len(inbox_ids(store))


def test_a_clean_stop_stores_every_counted_size(store: Store) -> None:
    inbox = InboxStore(store)
    for tweet_id in (1, 2, 3):
        put(store, inbox, tweet_id)
        put(store, inbox, tweet_id, owner=AUTHOR)
    assert inbox.store_tallies() == 2
    for owner in (OWNER, AUTHOR):
        assert stored_meta(store, owner).size == 3 and not stored_meta(store, owner).counting
    assert inbox.store_tallies() == 0  # nothing left to store
    put(store, inbox, 4)  # counting again: marked again
    assert stored_meta(store).counting


def test_after_a_crash_an_inbox_being_counted_is_counted_from_its_keys(store: Store) -> None:
    inbox = InboxStore(store)
    for tweet_id in range(1, 41):
        put(store, inbox, tweet_id)
    restarted = InboxStore(store)  # a crash: the tallies are gone, the entries are not
    assert put(store, restarted, 41) == 41
    restarted.trim(OWNER, 10)
    assert inbox_ids(store) == list(range(41, 31, -1))
    assert stored_meta(store).size == 10 and stored_meta(store).exact_from == 32


def test_a_stored_size_is_trusted_only_when_not_being_counted(store: Store) -> None:
    slot = slot_for_user(OWNER)
    for tweet_id in (1, 2, 3):
        store.db.put(keys.inbox(slot, OWNER, tweet_id), tweet(tweet_id).SerializeToString())
    counting = shard_pb2.InboxMeta(size=100, counting=True).SerializeToString()
    store.db.put(keys.inbox_meta(slot, OWNER), counting)
    assert put(store, InboxStore(store), 4) == 4  # counted from the keys
    store.db.put(keys.inbox_meta(slot, OWNER), shard_pb2.InboxMeta(size=4).SerializeToString())
    store.hot.clear()
    assert put(store, InboxStore(store), 5) == 5  # the stored size, trusted


def test_an_inbox_with_keys_but_no_metadata_is_counted(store: Store) -> None:
    slot = slot_for_user(OWNER)
    for tweet_id in (1, 2):
        store.db.put(keys.inbox(slot, OWNER, tweet_id), tweet(tweet_id).SerializeToString())
    assert put(store, InboxStore(store), 3) == 3


def test_a_failed_commit_forgets_the_counts_it_made(store: Store) -> None:
    inbox = InboxStore(store)
    put(store, inbox, 1)
    txn = store.txn()
    assert inbox.put(txn, OWNER, tweet(2)) == 2
    txn.writes[b"not bytes"] = 7  # type: ignore[assignment]  # makes the batch fail
    with pytest.raises(TypeError):
        txn.commit(sync=False)
    assert inbox.tallies.get(OWNER) is None
    assert put(store, inbox, 3) == 2  # counted again from disk: tweet 2 never landed


def test_tallies_are_bounded_and_forget_the_slots_that_move() -> None:
    tallies = InboxTallies(capacity=16)
    for owner in range(100):
        tallies.add(owner, Tally(newest_id=owner, size=1, slot=owner % 4, marked=owner % 2 == 0))
        tallies.shrink()
        assert len(tallies) <= 16
    assert tallies.get(99) is not None and tallies.get(0) is None
    held = [owner for owner in range(100) if tallies.get(owner)]
    assert [owner for owner, _ in tallies.marked()] == [o for o in held if o % 2 == 0]
    tallies.forget_slots({1, 3})
    assert [owner for owner in range(100) if tallies.get(owner)] == [o for o in held if o % 2 == 0]


def test_a_tally_changed_by_the_transaction_being_built_is_not_dropped(store: Store) -> None:
    """Review finding: one transaction changed an inbox, loaded enough other
    inboxes to push its tally out, and changed it again; loaded again, the
    tally counted only the keys on disk, and a clean stop stored that short
    count as exact. Tallies now shrink only between transactions."""
    inbox = InboxStore(store)
    inbox.tallies.capacity = 4
    for tweet_id in (10, 20, 30):
        put(store, inbox, tweet_id)
    inbox.store_tallies()  # stored size 3, exact
    txn = store.txn()
    inbox.put(txn, OWNER, tweet(40))
    for other in range(2_000_001, 2_000_005):
        inbox.put(txn, other, tweet(40))
    assert inbox.put(txn, OWNER, tweet(50)) == 5
    txn.commit(sync=False)
    assert len(inbox.tallies) <= 4  # bounded again once it landed
    inbox.store_tallies()  # a clean stop
    stored = stored_meta(store)  # exact, or marked to be counted (its tally was let go)
    assert stored.counting or stored.size == len(inbox_ids(store)) == 5
    assert put(store, InboxStore(store), 60) == 6  # after a restart, loaded right


def test_a_transaction_dropped_before_its_commit_leaves_no_count_behind(store: Store) -> None:
    """Review finding: an exception between an inbox's changes and the
    commit (here an entry that does not parse, part-way through an
    unfollow) left the tally's count and its on-disk marker in memory only;
    later commits carried no marker, and after a crash the stale stored size
    was trusted. The next change with another transaction drops the
    tallies, and the inbox is counted from disk."""
    inbox = InboxStore(store)
    for tweet_id in (5, 10, 20, 30):
        put(store, inbox, tweet_id)
    inbox.store_tallies()  # stored size 4, exact
    store.db.put(keys.inbox(slot_for_user(OWNER), OWNER, 5), b"\xff\xff not a tweet")
    with pytest.raises(DecodeError):
        inbox.remove_author(store.txn(), OWNER, AUTHOR)  # removes 30, 20, 10, fails on 5
    assert put(store, inbox, 40) == 5  # counted again from disk: nothing was removed
    assert stored_meta(store).counting  # marked on disk with the change
    assert put(store, InboxStore(store), 50) == 6 == len(inbox_ids(store))  # after a crash


def test_a_slot_that_moves_away_takes_its_tallies(tmp_path: Path) -> None:
    state = owned_state(tmp_path, owned=True)
    txn = state.store.txn()
    state.inbox.put(txn, OWNER, tweet(5))
    txn.commit(sync=False)
    assert state.inbox.tallies.get(OWNER) is not None
    owners = [0] * 4096
    owners[slot_for_user(OWNER)] = 1
    state.ownership.adopt(shard_pb2.SlotMap(version=2, addresses={0: "a", 1: "b"}, owners=owners))
    assert state.inbox.tallies.get(OWNER) is None
    assert state.inbox.store_tallies() == 0  # nothing written into a slot it left
    state.store.close()


# writers that go around Txn forget the memory copy ------------------------------


def owned_state(tmp_path: Path, owned: bool) -> ShardState:
    state = ShardState.open(str(tmp_path / "shard"), 0, ShardSettings())
    owners = [0 if owned else 1] * 4096
    state.ownership.adopt(shard_pb2.SlotMap(version=1, addresses={0: "a", 1: "b"}, owners=owners))
    return state


def test_import_and_drop_of_slots_forget_remembered_values(tmp_path: Path) -> None:
    state = owned_state(tmp_path, owned=False)
    slot = slot_for_user(OWNER)
    key = keys.inbox_meta(slot, OWNER)
    state.store.txn().get_hot(key)  # remembered as absent
    fresh = shard_pb2.InboxMeta(size=7).SerializeToString()
    import_entries(
        state,
        shard_pb2.ImportEntriesRequest(
            slots=[slot], entries=[shard_pb2.KeyValue(key=key, value=fresh)]
        ),
    )
    assert state.store.txn().get_hot(key) == fresh

    asyncio.run(_drop_slots(state, {slot}))
    assert state.store.txn().get_hot(key) is None
    state.store.close()


# the outbox reads from its floor, not over its delivered tombstones -------------


def test_outbox_reads_from_its_floor_and_keeps_every_record(store: Store) -> None:
    from shard.outbox import FULL_SCAN_EVERY, Outbox

    def record(n: int) -> shard_pb2.OutboxRecord:
        return shard_pb2.OutboxRecord(created_ms=n + 1)

    outbox = Outbox(store)
    for n in range(5):
        txn = store.txn()
        outbox.append(txn, record(n))
        txn.commit(sync=False)
    seqs = [seq for seq, _ in outbox.peek(3)]
    outbox.finish(seqs, {})
    assert outbox.floor == seqs[-1] + 1
    txn = store.txn()
    newer = outbox.append(txn, record(9))
    txn.commit(sync=False)
    assert [seq for seq, _ in outbox.peek(10)] == [seqs[-1] + 1, seqs[-1] + 2, newer]

    # a restart finds the floor again from the first key
    assert Outbox(store).floor == seqs[-1] + 1

    # should a record ever land below the floor, a periodic full read finds it
    store.db.put(keys.outbox(1), record(0).SerializeToString())
    seen = [any(seq == 1 for seq, _ in outbox.peek(10)) for _ in range(FULL_SCAN_EVERY)]
    assert any(seen)


# the page a home read takes from the inbox ------------------------------------


@settings(
    deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(st.integers(1, 400), st.sampled_from([1, 2, 3, 4]), max_size=60),
    st.integers(0, 420),
    st.integers(1, 30),
    st.integers(0, 420),
    st.sets(st.sampled_from([1, 2, 3, 4]), max_size=2),
)
def test_page_is_the_plain_definition(
    tmp_path_factory, authors_by_id, before_id, limit, exact_from, skip_authors
) -> None:
    """Newest first, below ``before_id``, at or above ``exact_from``, without
    ``skip_authors``, at most ``limit``; flagged when it stopped short."""
    store = Store(str(tmp_path_factory.mktemp("page") / "db"))
    try:
        inbox = InboxStore(store)
        txn = store.txn()
        for tweet_id, author in authors_by_id.items():
            inbox.put(txn, OWNER, tweet(tweet_id, author))
        txn.commit(sync=False)
        entries, short = inbox.page(OWNER, before_id, limit, skip_authors, exact_from)
        eligible = [
            tweet_id
            for tweet_id in sorted(authors_by_id, reverse=True)
            if (not before_id or tweet_id < before_id) and tweet_id >= exact_from
        ]
        wanted = [t for t in eligible if authors_by_id[t] not in skip_authors][:limit]
        assert [tweet_id for tweet_id, _ in entries] == wanted
        assert all(murmur_pb2.Tweet.FromString(raw).tweet_id == t for t, raw in entries)
        assert short == (len(wanted) < limit)
    finally:
        store.close()

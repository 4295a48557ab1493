"""Capped home inboxes: copies of tweets, newest first, on the reader's slot.

Each inbox keeps ``exact_from``: every home-timeline tweet with an id at or
above it is present. Trimming the oldest entries and backfills cut short both
raise it; a read that reaches below it is finished by pulling (see
``server/home_timeline.py``), so scrolling far back stays exact, only slower.
Each inbox's size and newest id are counted in memory
(``shard/inbox_tally.py``): they decide when to trim and when a delivery
needs a lookup, never what a reader sees.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

from murmur.raw_tweets import RawTweet
from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from shard import keys
from shard.inbox_tally import InboxTallies, Tally
from shard.store import Store, Txn

log = logging.getLogger("murmur.shard.inbox")


class InboxStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.tallies = InboxTallies()
        # the transaction whose uncommitted changes the tallies hold
        self._building: Txn | None = None
        # a failed commit may have counted puts that never landed: count again
        store.on_failed_commit.append(self._forget_all)

    def _forget_all(self) -> None:
        self.tallies.clear()
        self._building = None

    def _changing(self, txn: Txn) -> None:
        """The tallies are about to change with ``txn``. If they still hold
        changes of an earlier transaction that never committed (an exception
        between its changes and its commit), those counts never landed and
        its inboxes were never marked on disk: every tally is dropped, to be
        loaded again from what is stored. Handlers build and commit a
        transaction without awaiting in between, so only one is ever being
        built."""
        if txn is self._building:
            return
        if self._building is not None:
            log.warning("a transaction that changed inbox tallies never committed: recounting")
            self.tallies.clear()
        self._building = txn
        txn.on_commit.append(self._landed)

    def _landed(self) -> None:
        self._building = None
        self.tallies.shrink()

    def meta(self, txn: Txn, owner: int) -> shard_pb2.InboxMeta:
        """The inbox's stored metadata, its size replaced by the tally's
        when the inbox is loaded (see ``shard/inbox_tally.py``)."""
        meta = self._meta_at(txn, keys.inbox_meta(slot_for_user(owner), owner))
        tally = self.tallies.get(owner)
        if tally is not None:
            meta.size = tally.size
        return meta

    @staticmethod
    def _meta_at(txn: Txn, meta_key: bytes) -> shard_pb2.InboxMeta:
        raw = txn.get_hot(meta_key)
        if raw is None:
            return shard_pb2.InboxMeta()
        return shard_pb2.InboxMeta.FromString(raw)

    @staticmethod
    def _save_meta(txn: Txn, meta_key: bytes, meta: shard_pb2.InboxMeta, tally: Tally) -> None:
        """Write ``meta`` with the tally's size and whether it is being counted."""
        meta.size = tally.size
        meta.counting = tally.marked
        txn.put_hot(meta_key, meta.SerializeToString())

    def _tally(self, txn: Txn, owner: int, slot: int) -> Tally:
        """The inbox's tally, for a change (or a metadata write, which
        carries its size) made with ``txn``."""
        self._changing(txn)
        tally = self.tallies.get(owner)
        return tally if tally is not None else self._load(txn, owner, slot)

    def _load(self, txn: Txn, owner: int, slot: int) -> Tally:
        """Start tallying an inbox: the stored size if it is exact, else a
        count of the keys; the newest id from the first key (inbox keys
        hold inverted ids). Metadata is written with an inbox's first
        entry, so an inbox with keys but none (copied in by hand) is
        counted too."""
        raw = txn.get_hot(keys.inbox_meta(slot, owner))
        meta = shard_pb2.InboxMeta.FromString(raw) if raw is not None else shard_pb2.InboxMeta()
        prefix = keys.inbox_prefix(slot, owner)
        newest = 0
        for key in self.store.scan(prefix, include_value=False, limit=1):
            newest = keys.last_inverted(key)
        size = meta.size
        if meta.counting or (raw is None and newest):
            size = sum(1 for _ in self.store.scan(prefix, include_value=False))
        return self.tallies.add(owner, Tally(newest, size, slot, meta.counting, floor=newest))

    def _mark(self, txn: Txn, owner: int, tally: Tally) -> None:
        """Note on disk, with the first change to a loaded tally, that its
        inbox is being counted in memory (see ``shard/inbox_tally.py``)."""
        meta_key = keys.inbox_meta(tally.slot, owner)
        tally.marked = True
        self._save_meta(txn, meta_key, self._meta_at(txn, meta_key), tally)

    def put(self, txn: Txn, owner: int, tweet: murmur_pb2.Tweet) -> int:
        """Insert or refresh a copy. Returns the inbox's new size if the entry
        is new, else 0 (so callers know whom to trim without reading again)."""
        slot = slot_for_user(owner)
        copy = (owner, slot, keys.inbox(slot, owner, tweet.tweet_id))
        grown = self.put_copies(txn, tweet.tweet_id, tweet.SerializeToString(), [copy])
        return grown[0][1] if grown else 0

    def put_copies(
        self, txn: Txn, tweet_id: int, raw: bytes, copies: Iterable[tuple[int, int, bytes]]
    ) -> list[tuple[int, int]]:
        """Put one tweet (``raw``) into many inboxes, each given as (owner,
        slot, inbox key); returns (owner, new size) for each copy that is
        new, leaving out redeliveries (refreshed, not counted).

        This is fan-out's inner loop, run once per entry, so it writes to
        the transaction's dict and looks tallies up inline. Fan-out nearly
        always brings a tweet newer than anything in the inbox (the tally's
        ``newest_id`` tells so) or a little older, from another sender that
        ran behind (its ``recent`` ids tell); only a redelivery or backfill
        of an older one pays a lookup of its key."""
        self._changing(txn)
        writes, tally_of = txn.writes, self.tallies.get
        grown: list[tuple[int, int]] = []
        for owner, slot, key in copies:
            tally = tally_of(owner) or self._load(txn, owner, slot)
            if tweet_id > tally.newest_id:
                tally.newest_id = tweet_id
            else:
                held = tally.holds(tweet_id)
                if held or (held is None and txn.get(key) is not None):
                    writes[key] = raw
                    continue
            writes[key] = raw
            tally.added(tweet_id)
            if not tally.marked:
                self._mark(txn, owner, tally)
            grown.append((owner, tally.size))
        return grown

    def replace(self, txn: Txn, owner: int, tweet: murmur_pb2.Tweet) -> None:
        """Update a copy after an edit, only where the copy exists."""
        key = keys.inbox(slot_for_user(owner), owner, tweet.tweet_id)
        if txn.get(key) is not None:
            txn.put(key, tweet.SerializeToString())

    def remove(self, txn: Txn, owner: int, tweet_id: int) -> None:
        slot = slot_for_user(owner)
        key = keys.inbox(slot, owner, tweet_id)
        if txn.get(key) is None:
            return
        txn.delete(key)
        tally = self._tally(txn, owner, slot)
        tally.removed(tweet_id)
        if not tally.marked:
            self._mark(txn, owner, tally)

    def remove_author(self, txn: Txn, owner: int, author: int) -> None:
        """Drop every copy by ``author`` (unfollow, or the author became a celebrity)."""
        prefix = keys.inbox_prefix(slot_for_user(owner), owner)
        for key, raw in self.store.scan(prefix):
            if key in txn.writes:
                continue
            if murmur_pb2.Tweet.FromString(raw).user_id == author:
                self.remove(txn, owner, keys.last_inverted(key))

    def raise_exact_from(self, txn: Txn, owner: int, tweet_id: int) -> None:
        slot = slot_for_user(owner)
        meta_key = keys.inbox_meta(slot, owner)
        meta = self._meta_at(txn, meta_key)
        if tweet_id > meta.exact_from:
            meta.exact_from = tweet_id
            self._save_meta(txn, meta_key, meta, self._tally(txn, owner, slot))

    def trim(self, owner: int, cap: int) -> None:
        """Cut the inbox to ``cap`` entries, oldest first; commits on its own."""
        slot = slot_for_user(owner)
        txn = self.store.txn()
        tally = self._tally(txn, owner, slot)
        excess = tally.size - cap
        if excess <= 0:
            txn.commit(sync=False)  # nothing to write: lets the tallies know it is done
            return
        prefix, meta_key = keys.inbox_prefix(slot, owner), keys.inbox_meta(slot, owner)
        meta = self._meta_at(txn, meta_key)
        oldest_kept_floor = meta.exact_from
        for key in self.store.scan(prefix, include_value=False, reverse=True, limit=excess):
            txn.delete(key)
            tweet_id = keys.last_inverted(key)
            oldest_kept_floor = max(oldest_kept_floor, tweet_id + 1)
            tally.removed(tweet_id)
        meta.exact_from = oldest_kept_floor
        self._save_meta(txn, meta_key, meta, tally)
        txn.commit(sync=False)

    def store_tallies(self) -> int:
        """Store the size of every inbox being counted and clear its
        ``counting``, durably, so that a restart (or a copy of the store)
        loads it without counting keys; returns how many. Call with no
        transaction in progress: its puts would be stored as landed.

        Behind a closed storage fence nothing can be stored: the sizes stay
        marked ``counting`` on disk, so the next start (or a backup's copy)
        counts those inboxes from their keys instead."""
        if self.store.db.closed:
            log.warning("storage fence closed: inbox sizes not stored; they are counted at load")
            return 0
        txn = self.store.txn()
        self._changing(txn)
        written = 0
        for owner, tally in list(self.tallies.marked()):
            meta_key = keys.inbox_meta(tally.slot, owner)
            tally.marked = False
            self._save_meta(txn, meta_key, self._meta_at(txn, meta_key), tally)
            written += 1
        txn.commit(sync=False)
        self.store.sync()  # with any retired log, so the sizes never run ahead of the entries
        return written

    def page(
        self, owner: int, before_id: int, limit: int, skip_authors: set[int], exact_from: int
    ) -> tuple[list[RawTweet], bool]:
        """Up to ``limit`` entries older than ``before_id`` and at or above
        ``exact_from``, leaving out ``skip_authors``, as (tweet_id, stored
        bytes) pairs. The flag is True when the page stopped at
        ``exact_from`` (or the end) before filling up.

        Entries come off the iterator as many at a time as the page still
        needs (``islice`` runs in C) and each id is read from its key inline:
        a Python call and a length check per entry showed in the read's
        profile. Only a reader who follows celebrities has authors to skip,
        and only then is each entry parsed (for its author)."""
        slot = slot_for_user(owner)
        prefix = keys.inbox_prefix(slot, owner)
        start = keys.inbox(slot, owner, before_id - 1) if before_id else prefix
        scan = self.store.scan(prefix, start=start)
        id_at, unpack = len(prefix), keys.U64.unpack_from  # the key ends in the inverted id
        parse = murmur_pb2.Tweet.FromString
        entries: list[RawTweet] = []
        while len(entries) < limit:
            wanted = limit - len(entries)
            found = [
                (keys.MAX_U64 - unpack(key, id_at)[0], raw)
                for key, raw in itertools.islice(scan, wanted)
            ]
            ended = len(found) < wanted
            if found and found[-1][0] < exact_from:  # ids descend: cut at the first below
                found = [entry for entry in found if entry[0] >= exact_from]
                ended = True
            if skip_authors:
                found = [entry for entry in found if parse(entry[1]).user_id not in skip_authors]
            entries.extend(found)
            if ended:
                return entries, True
        return entries, False

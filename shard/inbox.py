"""Capped home inboxes: copies of tweets, newest first, on the reader's slot.

Each inbox keeps ``exact_from``: every home-timeline tweet with an id at or
above it is present. Trimming the oldest entries and backfills cut short both
raise it; a read that reaches below it is finished by pulling (see
``server/home_timeline.py``), so scrolling far back stays exact, only slower.
"""

from __future__ import annotations

from murmur.raw_tweets import RawTweet
from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from shard import keys
from shard.store import Store, Txn


class InboxStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def meta(self, txn: Txn, owner: int, slot: int | None = None) -> shard_pb2.InboxMeta:
        slot = slot_for_user(owner) if slot is None else slot
        return self._meta_at(txn, keys.inbox_meta(slot, owner))

    @staticmethod
    def _meta_at(txn: Txn, meta_key: bytes) -> shard_pb2.InboxMeta:
        raw = txn.get_hot(meta_key)
        if raw is None:  # every put writes the meta, so no meta means no entries
            return shard_pb2.InboxMeta(newest_tracked=True)
        return shard_pb2.InboxMeta.FromString(raw)

    def _save_meta(
        self, txn: Txn, owner: int, meta: shard_pb2.InboxMeta, slot: int | None = None
    ) -> None:
        slot = slot_for_user(owner) if slot is None else slot
        txn.put_hot(keys.inbox_meta(slot, owner), meta.SerializeToString())

    def put(
        self,
        txn: Txn,
        owner: int,
        tweet: murmur_pb2.Tweet,
        raw: bytes | None = None,
        slot: int | None = None,
    ) -> int:
        """Insert or refresh a copy. Returns the inbox's new size if the entry
        is new, else 0 (so callers know whom to trim without reading again).
        ``raw`` (the serialized tweet) and ``slot`` save work in fan-out loops.

        Fan-out nearly always brings a tweet newer than anything in the
        inbox; ``newest_id`` tells so from the (cached) metadata, and only an
        older tweet (a redelivery, a backfill) pays a lookup of its key."""
        slot = slot_for_user(owner) if slot is None else slot
        tweet_id = tweet.tweet_id
        return self.put_at(
            txn,
            keys.inbox(slot, owner, tweet_id),
            keys.inbox_meta(slot, owner),
            tweet_id,
            raw if raw is not None else tweet.SerializeToString(),
            owner,
            slot,
        )

    def put_at(
        self,
        txn: Txn,
        key: bytes,
        meta_key: bytes,
        tweet_id: int,
        raw: bytes,
        owner: int,
        slot: int,
    ) -> int:
        """``put`` with the keys built by the caller (fan-out builds them from
        parts shared by the batch, see ``keys.delivery_keys``)."""
        meta = self._meta_at(txn, meta_key)
        learned = not meta.newest_tracked
        if learned:
            meta.newest_id = self._newest_entry(owner, slot)
            meta.newest_tracked = True
        if tweet_id > meta.newest_id:
            meta.newest_id = tweet_id
            is_new = True
        else:
            is_new = txn.get(key) is None
        txn.put(key, raw)
        if is_new:
            meta.size += 1
        if is_new or learned:
            txn.put_hot(meta_key, meta.SerializeToString())
        return meta.size if is_new else 0

    def _newest_entry(self, owner: int, slot: int) -> int:
        """The newest committed entry's id (0 if none): the first key, as
        inbox keys hold inverted ids."""
        for key in self.store.scan(keys.inbox_prefix(slot, owner), include_value=False, limit=1):
            return keys.last_inverted(key)
        return 0

    def replace(self, txn: Txn, owner: int, tweet: murmur_pb2.Tweet) -> None:
        """Update a copy after an edit, only where the copy exists."""
        key = keys.inbox(slot_for_user(owner), owner, tweet.tweet_id)
        if txn.get(key) is not None:
            txn.put(key, tweet.SerializeToString())

    def remove(self, txn: Txn, owner: int, tweet_id: int) -> None:
        key = keys.inbox(slot_for_user(owner), owner, tweet_id)
        if txn.get(key) is None:
            return
        txn.delete(key)
        meta = self.meta(txn, owner)
        meta.size = max(0, meta.size - 1)
        self._save_meta(txn, owner, meta)

    def remove_author(self, txn: Txn, owner: int, author: int) -> None:
        """Drop every copy by ``author`` (unfollow, or the author became a celebrity)."""
        prefix = keys.inbox_prefix(slot_for_user(owner), owner)
        for key, raw in self.store.scan(prefix):
            if key in txn.writes:
                continue
            if murmur_pb2.Tweet.FromString(raw).user_id == author:
                self.remove(txn, owner, keys.last_inverted(key))

    def raise_exact_from(self, txn: Txn, owner: int, tweet_id: int) -> None:
        meta = self.meta(txn, owner)
        if tweet_id > meta.exact_from:
            meta.exact_from = tweet_id
            self._save_meta(txn, owner, meta)

    def trim(self, owner: int, cap: int) -> None:
        """Cut the inbox to ``cap`` entries, oldest first; commits on its own."""
        txn = self.store.txn()
        meta = self.meta(txn, owner)
        excess = meta.size - cap
        if excess <= 0:
            return
        prefix = keys.inbox_prefix(slot_for_user(owner), owner)
        oldest_kept_floor = meta.exact_from
        removed = 0
        for key in self.store.scan(prefix, include_value=False, reverse=True, limit=excess):
            txn.delete(key)
            oldest_kept_floor = max(oldest_kept_floor, keys.last_inverted(key) + 1)
            removed += 1
        meta.size -= removed
        meta.exact_from = oldest_kept_floor
        self._save_meta(txn, owner, meta)
        txn.commit(sync=False)

    def page(
        self, owner: int, before_id: int, limit: int, skip_authors: set[int], exact_from: int
    ) -> tuple[list[RawTweet], bool]:
        """Up to ``limit`` entries older than ``before_id`` and at or above
        ``exact_from``, leaving out ``skip_authors``, as (tweet_id, stored
        bytes) pairs. The flag is True when the page stopped at
        ``exact_from`` (or the end) before filling up.

        Only a reader who follows celebrities has authors to skip, and only
        then is each entry parsed (for its author)."""
        slot = slot_for_user(owner)
        prefix = keys.inbox_prefix(slot, owner)
        start = keys.inbox(slot, owner, before_id - 1) if before_id else prefix
        entries: list[RawTweet] = []
        parse = murmur_pb2.Tweet.FromString
        for key, raw in self.store.scan(prefix, start=start):
            tweet_id = keys.last_inverted(key)
            if tweet_id < exact_from:
                return entries, True
            if skip_authors and parse(raw).user_id in skip_authors:
                continue
            entries.append((tweet_id, raw))
            if len(entries) >= limit:
                return entries, False
        return entries, True

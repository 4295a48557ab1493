"""Follow edges: ``following`` on the follower's slot, ``followers`` on the
followee's slot, plus the follower-side index of followed celebrities that
the home-timeline read pulls from."""

from __future__ import annotations

import array
import bisect

from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2
from shard import keys
from shard.store import Store, Txn

FOLLOWER_LISTING_MAX = 1_000
"""Followers of one account kept as an in-memory listing; bigger lists are
paged from LevelDB (their fan-outs span several rounds anyway)."""


class FollowGraph:
    def __init__(self, store: Store) -> None:
        self.store = store

    # following side (the follower's slot) ---------------------------------
    def following_edge(self, txn: Txn, follower: int, followee: int) -> shard_pb2.FollowEdge | None:
        raw = txn.get_hot(keys.following(slot_for_user(follower), follower, followee))
        return shard_pb2.FollowEdge.FromString(raw) if raw is not None else None

    def put_following(
        self, txn: Txn, follower: int, followee: int, edge: shard_pb2.FollowEdge
    ) -> None:
        slot = slot_for_user(follower)
        txn.put_hot(keys.following(slot, follower, followee), edge.SerializeToString())
        marker = keys.celebrity_followed(slot, follower, followee)
        if edge.celebrity:
            txn.put(marker, b"")
        elif txn.get(marker) is not None:
            txn.delete(marker)
        else:
            return
        txn.relist(keys.celebrity_followed_prefix(slot, follower))

    def delete_following(self, txn: Txn, follower: int, followee: int) -> None:
        slot = slot_for_user(follower)
        txn.delete_hot(keys.following(slot, follower, followee))
        txn.delete(keys.celebrity_followed(slot, follower, followee))
        txn.relist(keys.celebrity_followed_prefix(slot, follower))

    def followed_celebrities(self, follower: int) -> tuple[int, ...]:
        """Every home read asks, so the answer is remembered in memory
        (``HotValues`` listings); the writes above forget it as they commit."""
        prefix = keys.celebrity_followed_prefix(slot_for_user(follower), follower)
        hot = self.store.hot
        ids = hot.listing(prefix)
        if ids is None:
            ids = tuple(keys.last_u64(k) for k in self.store.scan(prefix, include_value=False))
            hot.remember_listing(prefix, ids)
        return ids

    def followees(self, follower: int) -> list[int]:
        prefix = keys.following_prefix(slot_for_user(follower), follower)
        return [keys.last_u64(k) for k in self.store.scan(prefix, include_value=False)]

    # followers side (the followee's slot) ---------------------------------
    def has_follower(self, txn: Txn, followee: int, follower: int) -> bool:
        return txn.get(keys.followers(slot_for_user(followee), followee, follower)) is not None

    def put_follower(self, txn: Txn, followee: int, follower: int) -> None:
        slot = slot_for_user(followee)
        txn.put(keys.followers(slot, followee, follower), b"")
        txn.relist(keys.followers_prefix(slot, followee))

    def delete_follower(self, txn: Txn, followee: int, follower: int) -> None:
        slot = slot_for_user(followee)
        txn.delete(keys.followers(slot, followee, follower))
        txn.relist(keys.followers_prefix(slot, followee))

    def page_followers(self, followee: int, after: int, limit: int) -> tuple[list[int], bool]:
        """Followers above ``after``, in id order, and whether more follow.

        Every post's fan-out starts here, so an ordinary author's whole list
        (up to ``FOLLOWER_LISTING_MAX``) is remembered in memory once read
        (``HotValues`` listings, 8 bytes an id; follows and unfollows forget
        it as they commit): reading 100 followers that way takes 2.5 µs
        against 35 µs for the scan (micro-benchmark). Bigger lists are read
        page by page."""
        prefix = keys.followers_prefix(slot_for_user(followee), followee)
        hot = self.store.hot
        listed = hot.listing(prefix)
        if listed is not None:
            start = bisect.bisect_right(listed, after) if after else 0
            return list(listed[start : start + limit]), start + limit < len(listed)
        ids, more = self._page(prefix, after, limit)
        if not after and not more and len(ids) <= FOLLOWER_LISTING_MAX:
            hot.remember_listing(prefix, array.array("Q", ids))
        return ids, more

    def page_following(self, follower: int, after: int, limit: int) -> tuple[list[int], bool]:
        prefix = keys.following_prefix(slot_for_user(follower), follower)
        return self._page(prefix, after, limit)

    def _page(self, prefix: bytes, after: int, limit: int) -> tuple[list[int], bool]:
        if after >= keys.MAX_U64:
            return [], False
        start = prefix + keys.u64(after + 1) if after else prefix
        ids = [
            keys.last_u64(k)
            for k in self.store.scan(prefix, start=start, limit=limit + 1, include_value=False)
        ]
        return ids[:limit], len(ids) > limit

"""Applies fan-out operations on the shard that owns their users.

Every operation is idempotent, and each checks the follower's own edge on
this shard before touching an inbox, so a delivery that races an unfollow, or
a status change, or arrives twice after a crash, leaves the same state as one
delivered once in order.
"""

from __future__ import annotations

import logging

from murmur.errors import invalid
from murmur.slots import slots_for_users
from murmur.v1 import murmur_pb2, shard_pb2
from shard import keys
from shard.celebrity import recheck_celebrity
from shard.delivery_ops import op_users
from shard.state import ShardState
from shard.store import MISSING, Txn

FollowEdge = shard_pb2.FollowEdge

log = logging.getLogger("murmur.shard.delivery")


def trim_threshold(cap: int) -> int:
    """Inboxes are cut back to ``cap`` once they are an eighth over it, so a
    full inbox pays for one trim per batch of new entries, not per entry."""
    return cap + max(1, cap // 8)


class DeliveryApplier:
    def __init__(self, state: ShardState) -> None:
        self.state = state

    def apply(self, ops: list[shard_pb2.DeliveryOp], local: bool = False) -> int:
        """Apply ``ops`` in order, without fsync: a remote sender awaits the
        group commit before acknowledging; for local deliveries LevelDB's log
        order already guarantees the outbox deletion never outlives them."""
        slots = [self._check_slots(op, local) for op in ops]
        # an op that fails part-way leaves its puts counted in the tallies
        # but never committed: InboxStore notices and counts those inboxes again
        return sum(self._apply_one(op, op_slots) for op, op_slots in zip(ops, slots, strict=True))

    def _check_slots(self, op: shard_pb2.DeliveryOp, local: bool) -> list[int]:
        """The slot of each user ``op`` touches, in order, once every one of
        them is known to be served here (fan-out reuses them for its keys)."""
        if op.WhichOneof("op") is None:
            raise invalid("a delivery op carries no operation this shard knows (newer peer?)")
        slots = slots_for_users(op_users(op))
        self.state.ownership.check_all(set(slots), local_delivery=local)
        return slots

    def _apply_one(self, op: shard_pb2.DeliveryOp, slots: list[int]) -> int:
        kind = op.WhichOneof("op")
        txn = self.state.store.txn()
        written = 0
        touched: list[int] = []
        if kind == "inbox_put":
            written, touched = self._inbox_put(txn, op.inbox_put, slots)
        elif kind == "inbox_edit":
            for owner in op.inbox_edit.owner_ids:
                self.state.inbox.replace(txn, owner, op.inbox_edit.tweet)
        elif kind == "inbox_delete":
            for owner in op.inbox_delete.owner_ids:
                self.state.inbox.remove(txn, owner, op.inbox_delete.tweet_id)
        elif kind == "add_follower":
            self._add_follower(txn, op.add_follower)
        elif kind == "remove_follower":
            self._remove_follower(txn, op.remove_follower)
        elif kind == "follow_sync":
            touched, written = self._follow_sync(txn, op.follow_sync)
        txn.commit(sync=False)
        for owner in touched:  # only inboxes that grew past the cap
            self.state.inbox.trim(owner, self.state.settings.inbox_cap)
        return written

    def _inbox_put(
        self, txn: Txn, put: shard_pb2.InboxPut, slots: list[int]
    ) -> tuple[int, list[int]]:
        """Copy one tweet to many inboxes: the hot loop of fan-out, so the
        tweet is serialized once, each owner packed and hashed once, and the
        keys built a list at a time."""
        tweet = put.tweet
        owners = list(put.owner_ids)
        parts = [keys.U64.pack(owner) for owner in owners]
        ordinary = self._ordinary_edges(txn, keys.following_keys(slots, parts, tweet.user_id))
        copies = [
            (owner, slot, key)
            for owner, slot, key, keep in zip(
                owners, slots, keys.inbox_keys(slots, parts, tweet.tweet_id), ordinary, strict=True
            )
            if keep
        ]
        grown = self.state.inbox.put_copies(txn, tweet.tweet_id, tweet.SerializeToString(), copies)
        cap = trim_threshold(self.state.settings.inbox_cap)
        return len(grown), [owner for owner, size in grown if size > cap]

    def _ordinary_edges(self, txn: Txn, edge_keys: list[bytes]) -> list[bool]:
        """For each follower's edge, whether it still follows the author as an
        ordinary account (no edge: unfollowed; a celebrity is pulled, not
        copied). Edges are read from memory (``HotValues``) when there: the
        delivery's transaction is new, so none of them is written in it."""
        known, parse = self.state.store.hot.get, FollowEdge.FromString
        edges = [known(key, MISSING) for key in edge_keys]
        for index, edge in enumerate(edges):
            if edge is MISSING:
                edges[index] = txn.get_hot(edge_keys[index])
        return [edge is not None and not parse(edge).celebrity for edge in edges]

    def _add_follower(self, txn: Txn, add: shard_pb2.AddFollower) -> None:
        graph, users = self.state.graph, self.state.users
        if graph.has_follower(txn, add.followee_id, add.follower_id):
            return
        record = users.get(txn, add.followee_id)
        if record is None:
            log.warning("add_follower for unknown user %d dropped", add.followee_id)
            return
        graph.put_follower(txn, add.followee_id, add.follower_id)
        record.user.follower_count += 1
        recheck_celebrity(self.state, txn, record)
        users.put(txn, record)
        self.state.outbox.append(
            txn,
            shard_pb2.OutboxRecord(
                status_sync=shard_pb2.StatusSync(
                    followee_id=add.followee_id,
                    follower_id=add.follower_id,
                    followed_ms=add.followed_ms,
                )
            ),
        )

    def _remove_follower(self, txn: Txn, remove: shard_pb2.RemoveFollower) -> None:
        graph, users = self.state.graph, self.state.users
        if not graph.has_follower(txn, remove.followee_id, remove.follower_id):
            return
        graph.delete_follower(txn, remove.followee_id, remove.follower_id)
        record = users.get(txn, remove.followee_id)
        if record is None:
            return
        record.user.follower_count = max(0, record.user.follower_count - 1)
        recheck_celebrity(self.state, txn, record)
        users.put(txn, record)

    def _follow_sync(self, txn: Txn, sync: shard_pb2.FollowSync) -> tuple[list[int], int]:
        """Adopt the followee's status on each follower's edge, newest version
        wins; returns the followers whose inboxes grew past the trim
        threshold and the new entries."""
        over_cap = []
        written = 0
        cap = trim_threshold(self.state.settings.inbox_cap)
        for follower in sync.follower_ids:
            edge = self.state.graph.following_edge(txn, follower, sync.followee_id)
            if edge is None or sync.celebrity_version < edge.celebrity_version:
                continue
            if sync.followed_ms and sync.followed_ms != edge.followed_ms:
                continue  # it answers an earlier follow of the pair; this one's sync follows
            flipped = sync.celebrity_version > edge.celebrity_version
            edge.celebrity = sync.celebrity
            edge.celebrity_version = sync.celebrity_version
            self.state.graph.put_following(txn, follower, sync.followee_id, edge)
            if sync.celebrity or flipped:
                # A promotion drops the copies. So does news that the author
                # flipped since this edge last heard, even to ordinary: a
                # promotion's sync planned after the demotion goes out as
                # ordinary, and the copies it never removed may be of tweets
                # deleted (or edited) meanwhile without fan-out, as
                # celebrities' are. The backfill brings the live ones back.
                self.state.inbox.remove_author(txn, follower, sync.followee_id)
            if sync.celebrity:
                continue
            new, size = self._backfill(txn, follower, sync)
            written += new
            if size > cap:
                over_cap.append(follower)
        return over_cap, written

    def _backfill(self, txn: Txn, follower: int, sync: shard_pb2.FollowSync) -> tuple[int, int]:
        """Copy the followee's recent tweets; returns the new entries and the
        inbox's largest size on the way (0 if nothing was new)."""
        tweets: list[murmur_pb2.Tweet] = list(sync.tweets)
        sizes = [self.state.inbox.put(txn, follower, tweet) for tweet in tweets]
        if not sync.complete:
            exact_from = sync.exact_from or (tweets[-1].tweet_id if tweets else 0)
            self.state.inbox.raise_exact_from(txn, follower, exact_from)
        return sum(1 for size in sizes if size), max(sizes, default=0)

"""What each kind of fan-out delivery op touches: the users whose data it
changes (which decide the shard that applies it), and the sender's data it
is rebuilt from when it was parked (``shard/parked.py``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from murmur.ids import slot_of_tweet
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2

DeliveryOp = shard_pb2.DeliveryOp


# Per kind of op, the field naming the users whose data it changes: they
# decide which shard applies it.
USERS_FIELD = {
    "inbox_put": "owner_ids",
    "inbox_edit": "owner_ids",
    "inbox_delete": "owner_ids",
    "follow_sync": "follower_ids",
    "add_follower": "followee_id",
    "remove_follower": "followee_id",
}


def op_users(op: shard_pb2.DeliveryOp) -> list[int]:
    """The users whose data ``op`` changes."""
    kind = op.WhichOneof("op")
    users = getattr(getattr(op, kind), USERS_FIELD[kind])
    return [users] if isinstance(users, int) else list(users)


def source_slot(op: DeliveryOp) -> int:
    """The slot of the sender's data an operation is rebuilt from before it
    is sent (``FanoutWorker._refreshed``): the tweet's, the followee's whose
    status it carries, or the follower's whose edge it mirrors."""
    kind = op.WhichOneof("op")
    if kind == "inbox_delete":
        return slot_of_tweet(op.inbox_delete.tweet_id)
    if kind in ("inbox_put", "inbox_edit"):
        return slot_of_tweet(getattr(op, kind).tweet.tweet_id)
    if kind == "follow_sync":
        return slot_for_user(op.follow_sync.followee_id)
    return slot_for_user(getattr(op, kind).follower_id)


def split_by_owner(op: DeliveryOp, owner_of: Callable[[int], int]) -> dict[int, DeliveryOp]:
    """``op`` cut into one operation per shard owning its users now."""
    kind = op.WhichOneof("op")
    body = getattr(op, kind)
    field = USERS_FIELD[kind]
    users = getattr(body, field)
    if isinstance(users, int):
        return {owner_of(slot_for_user(users)): op}
    groups: dict[int, list[int]] = defaultdict(list)
    for user in users:
        groups[owner_of(slot_for_user(user))].append(user)
    parts = {}
    for owner, members in groups.items():
        part = DeliveryOp()
        part.CopyFrom(op)
        getattr(getattr(part, kind), field)[:] = members
        parts[owner] = part
    return parts

"""Consistency checks and repair for one shard's slots.

Counters are recomputed from the edges and tweets they count. Follow edges
have a side on each user's slot; this shard reports the sides it holds so the
router can ask the other shard for the matching side (``CheckEdges``). A side
that the outbox is still carrying is not an error, so edges are reported only
when the outbox is empty, and stale outbox records are counted separately.
Slots sealed for a move are skipped and named in a finding: a repair written
there after the move's last capture would be deleted with the source's copy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from murmur.ids import now_ms
from murmur.slots import SLOT_COUNT, describe_slots, slot_for_user
from murmur.v1 import shard_pb2
from shard import keys
from shard.outbox import add_follower_record, remove_follower_record
from shard.state import ShardState

STALE_OUTBOX_MS = 60_000
MAX_FINDINGS = 100
DROP_BATCH = 10_000


def _count(state: ShardState, prefix: bytes) -> int:
    return sum(1 for _ in state.store.scan(prefix, include_value=False))


def check_slots(
    state: ShardState, request: shard_pb2.CheckSlotsRequest
) -> shard_pb2.CheckSlotsResponse:
    slots = list(request.slots) or [s for s in range(SLOT_COUNT) if state.ownership.owned[s]]
    response = shard_pb2.CheckSlotsResponse()
    sealed = [s for s in slots if state.ownership.owned[s] and s in state.ownership.sealed]
    if sealed:
        response.findings.append(skipped_finding(sealed))
    elsewhere = [s for s in slots if not state.ownership.owned[s]]
    if elsewhere:
        response.findings.append(
            f"slots {describe_slots(elsewhere)} skipped: shard {state.shard_id} does not own "
            "them (the router's slot map is behind); check them again"
        )
    txn = state.store.txn()
    inbox_tweets: Counter[int] = Counter()
    for slot in checkable(state, slots):
        inbox_tweets.update(keys.last_inverted(key) for key, _owner in inbox_keys(state, slot))
        for _key, raw in state.store.scan(keys.slot_prefix(slot) + keys.USER):
            record = shard_pb2.UserRecord.FromString(raw)
            _check_counters(state, record, response, request.repair, txn)
        for key in state.store.scan(keys.slot_prefix(slot) + keys.FOLLOWING, include_value=False):
            follower, followee = keys.read_u64(key, 3), keys.read_u64(key, 11)
            response.following_edges.add(follower_id=follower, followee_id=followee)
        for key in state.store.scan(keys.slot_prefix(slot) + keys.FOLLOWERS, include_value=False):
            followee, follower = keys.read_u64(key, 3), keys.read_u64(key, 11)
            response.follower_edges.add(follower_id=follower, followee_id=followee)
    held = sorted(inbox_tweets)
    response.inbox_tweet_ids.extend(held)
    response.inbox_tweet_copies.extend(inbox_tweets[t] for t in held)
    if request.repair:
        txn.commit()
    cutoff = now_ms() - STALE_OUTBOX_MS
    response.stale_outbox_records = sum(
        1 for _seq, record in state.outbox.peek(1_000_000) if record.created_ms < cutoff
    )
    return response


def checkable(state: ShardState, slots) -> list[int]:
    """The slots a check or repair may touch: owned, and not sealed for a
    hand-over (a repair written there would be deleted with the source's
    copy)."""
    ownership = state.ownership
    return [s for s in slots if ownership.owned[s] and s not in ownership.sealed]


def inbox_keys(state: ShardState, slot: int) -> Iterator[tuple[bytes, int]]:
    """Every inbox entry's key in ``slot``, with the inbox's owner."""
    for key in state.store.scan(keys.slot_prefix(slot) + keys.INBOX, include_value=False):
        yield key, keys.read_u64(key, 3)


def drop_inbox_copies(
    state: ShardState, request: shard_pb2.DropInboxCopiesRequest
) -> shard_pb2.DropInboxCopiesResponse:
    """Remove the inbox copies of ``request.tweet_ids`` (tweets that no longer
    exist) through ``InboxStore.remove``, so the inboxes' counts follow."""
    doomed = set(request.tweet_ids)
    txn = state.store.txn()
    removed = 0
    for slot in checkable(state, request.slots):
        for key, owner in inbox_keys(state, slot):
            tweet_id = keys.last_inverted(key)
            if tweet_id in doomed:
                state.inbox.remove(txn, owner, tweet_id)
                removed += 1
                if removed % DROP_BATCH == 0:  # bounded write batches
                    txn.commit()
                    txn = state.store.txn()
    txn.commit()
    return shard_pb2.DropInboxCopiesResponse(removed=removed)


def skipped_finding(slots: list[int]) -> str:
    """Name the slots left unchecked, so an operator knows to check them
    again (on their new owner) instead of taking silence for health."""
    ranges = describe_slots(slots)
    return (
        f"slots {ranges} skipped: they are being handed over to another shard; "
        "check them again when the move is done"
    )


def _check_counters(state, record, response, repair: bool, txn) -> None:
    user = record.user
    slot = slot_for_user(user.user_id)
    actual = {
        "following_count": _count(state, keys.following_prefix(slot, user.user_id)),
        "follower_count": _count(state, keys.followers_prefix(slot, user.user_id)),
        "tweet_count": _count(state, keys.timeline_prefix(slot, user.user_id)),
    }
    wrong = {name: value for name, value in actual.items() if getattr(user, name) != value}
    if not wrong:
        return
    response.wrong_counters += 1
    if len(response.findings) < MAX_FINDINGS:
        detail = ", ".join(f"{n} {getattr(user, n)} should be {v}" for n, v in wrong.items())
        response.findings.append(f"user {user.user_id}: {detail}")
    if repair:
        for name, value in wrong.items():
            setattr(user, name, value)
        state.users.put(txn, record)
        response.repaired += 1


def check_edges(
    state: ShardState, request: shard_pb2.CheckEdgesRequest
) -> shard_pb2.CheckEdgesResponse:
    """Which edges lack their ``side`` here; with repair, add missing followers sides."""
    response = shard_pb2.CheckEdgesResponse()
    txn = state.store.txn()
    for edge in request.edges:
        if request.side == shard_pb2.FOLLOWERS:
            present = state.graph.has_follower(txn, edge.followee_id, edge.follower_id)
        else:
            present = (
                state.graph.following_edge(txn, edge.follower_id, edge.followee_id) is not None
            )
        if present:
            continue
        response.missing.append(edge)
        if request.repair:
            # a missing followers side is added again; a followers side with no
            # following side is a follow that was undone, so it goes
            make = (
                add_follower_record
                if request.side == shard_pb2.FOLLOWERS
                else remove_follower_record
            )
            state.outbox.append(txn, make(edge.followee_id, edge.follower_id))
            response.repaired += 1
    txn.commit()
    return response

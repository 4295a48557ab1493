"""Who is a celebrity, and how a change of status reaches the followers.

A flip bumps the user's ``celebrity_version`` and queues a status sync to
every follower in the same batch, so followers' shards switch between inbox
copies and read-time pulls in order and never lose or double a tweet.

A threshold change skips slots sealed for a move: their last changes have
already been sent to the target, so a write there now would be deleted with
the source's copy. Whoever owns such a slot when the move ends re-applies the
threshold: the target for the slots a new map gives it (``adopt_map``; not
when the source checked their users against the target's own threshold),
the source for slots a failed move gives back (``migration.release_slots``).

The source vouches only for a threshold it has applied to every user it
owns (``vouched_threshold``): a new threshold is saved before its re-check
runs, a re-check can fail or be cut short by a crash, and one that skipped a
sealed slot leaves a duty that only memory holds (``recheck_owed``: the mark
comes back once those slots have left, or been re-checked when their move
failed). Until then, the target checks every user it takes, and a start
re-checks them all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from murmur.slots import SLOT_COUNT
from murmur.v1 import shard_pb2
from shard import keys
from shard.settings import is_celebrity
from shard.state import ShardState
from shard.store import Txn

log = logging.getLogger("murmur.shard.celebrity")


def recheck_celebrity(state: ShardState, txn: Txn, record: shard_pb2.UserRecord) -> bool:
    """Apply the threshold (with hysteresis) to ``record``; True if it flipped.

    The caller saves ``record`` in the same ``txn``.
    """
    user = record.user
    now = is_celebrity(user.celebrity, user.follower_count, state.settings.celebrity_threshold)
    if now == user.celebrity:
        return False
    user.celebrity = now
    record.celebrity_version += 1
    log.info(
        "user %d %s a celebrity at %d followers (version %d)",
        user.user_id,
        "became" if now else "is no longer",
        user.follower_count,
        record.celebrity_version,
    )
    state.outbox.append(
        txn,
        shard_pb2.OutboxRecord(status_sync=shard_pb2.StatusSync(followee_id=user.user_id)),
    )
    return True


def reevaluate_all(state: ShardState, batch: int = 500) -> int:
    """Re-apply the threshold to every user this shard owns; returns the flips.

    Slots sealed for a move are skipped (see the module's docstring). The
    applied mark is cleared (synced) before the first flip, so a re-check cut
    short leaves none, even if the next start brings the old threshold back;
    and it is set again only when no slot was skipped, since the duty to
    re-check a sealed slot if its move fails lives in memory and dies with
    the process (``settle_owed`` sets it once that duty is done). Until it
    is set, no move vouches for its slots' users (``vouched_threshold``)."""
    ownership = state.ownership
    owned = [s for s in range(SLOT_COUNT) if ownership.owned[s]]
    skipped = {s for s in owned if s in ownership.sealed}
    unmark(state)
    flips = reevaluate_slots(state, [s for s in owned if s not in skipped], batch)
    if skipped:
        state.recheck_owed = (state.settings.celebrity_threshold, skipped)
    else:
        mark_applied(state)
    return flips


def settle_owed(state: ShardState, slots: Iterable[int]) -> None:
    """``slots`` left this shard, or were re-checked after their move failed;
    once no slot the last re-check skipped is left, every owned user is
    checked against the threshold again, and moves may vouch for them."""
    if state.recheck_owed is None:
        return
    threshold, owed = state.recheck_owed
    owed.difference_update(slots)
    if owed:
        return
    state.recheck_owed = None
    if threshold == state.settings.celebrity_threshold and state.threshold_applied is None:
        mark_applied(state)


def mark_applied(state: ShardState) -> None:
    """Record that every owned user is checked against the current threshold.
    Synced: it also syncs the flips written before it (one log, in order)."""
    threshold = state.settings.celebrity_threshold
    state.store.db.put(keys.THRESHOLD_APPLIED, keys.u64(threshold), sync=True)
    state.threshold_applied = threshold


def unmark(state: ShardState) -> None:
    """No longer claim that every owned user is checked (synced), nor that
    settling an earlier re-check's skipped slots would make it so: that one
    may have been under another threshold, or this one may fail."""
    state.threshold_applied = None
    state.recheck_owed = None
    state.store.db.delete(keys.THRESHOLD_APPLIED, sync=True)


def forget_applied(state: ShardState) -> None:
    """Some owned users may not be checked against the current threshold (a
    re-check failed): no move vouches for them, and the next start re-checks
    every user. Called where a failure is already being reported, so it
    only logs a failure of its own."""
    try:
        unmark(state)
    except Exception:
        log.exception("forgetting the applied celebrity threshold failed")


def vouched_threshold(state: ShardState) -> int | None:
    """The threshold a move's source may tell its target that the users of
    the slots it hands over were checked against: the current one, if every
    user was; None (vouch for nothing) while a change is still being applied
    or a re-check failed."""
    threshold = state.settings.celebrity_threshold
    return threshold if state.threshold_applied == threshold else None


def reevaluate_slots(state: ShardState, slots: Iterable[int], batch: int = 500) -> int:
    """Re-apply the threshold to the users of ``slots``; returns the flips.

    The caller makes sure these writes count: this shard owns the slots, or
    is about to adopt a map that gives them to it, and none is sealed."""
    flips = 0
    txn = state.store.txn()
    pending = 0
    for slot in slots:
        prefix = keys.slot_prefix(slot) + keys.USER
        for _key, raw in state.store.scan(prefix):
            record = shard_pb2.UserRecord.FromString(raw)
            if recheck_celebrity(state, txn, record):
                state.users.put(txn, record)
                flips += 1
                pending += 1
            if pending >= batch:
                txn.commit()
                txn, pending = state.store.txn(), 0
    txn.commit()
    return flips


def consistent_slots(state: ShardState, request: shard_pb2.AssignSlotsRequest) -> list[int]:
    """The slots whose users the sender of ``request`` vouches for under the
    threshold this shard has now (see ``AssignSlotsRequest``); none if it
    checked them against another one, or vouches for nothing."""
    if not request.HasField("evaluated_threshold"):
        return []
    if request.evaluated_threshold != state.settings.celebrity_threshold:
        return []
    return list(request.evaluated_slots)


def adopt_map(
    state: ShardState,
    slot_map: shard_pb2.SlotMap,
    gained: list[int],
    consistent: Iterable[int] = (),
) -> None:
    """Adopt ``slot_map``, first re-applying the threshold to the users of the
    slots it gives this shard (``gained``): the source skipped them if they
    were sealed when the threshold changed, and nothing else re-checks a user
    until its follower count changes. Done before the map is stored (and in
    the same turn of the event loop), so once the map is on disk so are the
    flips. It reads every user record of those slots (~1 µs each) while the
    source holds them frozen, so a move's source names the slots whose users
    it vouches for (``consistent``: checked against this shard's threshold
    when it sealed them), and only the other gained slots are read."""
    skipped = set(consistent)
    reevaluate_slots(state, [slot for slot in gained if slot not in skipped])
    state.ownership.adopt(slot_map)

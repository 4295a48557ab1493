"""Who is a celebrity, and how a change of status reaches the followers.

A flip bumps the user's ``celebrity_version`` and queues a status sync to
every follower in the same batch, so followers' shards switch between inbox
copies and read-time pulls in order and never lose or double a tweet.
"""

from __future__ import annotations

import logging

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
    """Re-apply the threshold to every user this shard owns; returns the flips."""
    flips = 0
    txn = state.store.txn()
    pending = 0
    for slot in range(SLOT_COUNT):
        if not state.ownership.owned[slot]:
            continue
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

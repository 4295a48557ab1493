"""A follow's backfill against an unfollow and a new follow of the same pair.

Found by test_home_timelines_converge_under_concurrent_writes (once, in a
clean-clone run): a reader's home kept a tweet its author had deleted. The
race: the reader follows, the author's shard plans the sync for that follow
and reads the author's recent tweets; the reader unfollows and follows again;
the author deletes a tweet while the second follow has not reached its shard,
so the delete's fan-out skips the reader; then the first follow's sync
arrives, finds an edge (the second follow's) and backfills the deleted tweet.
A sync now names the follow it answers, and a later follow ignores it: its
own sync, planned after its follow reached the author's shard, is on the way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from murmur.v1 import murmur_pb2, shard_pb2
from shard import servicer as servicer_module
from shard.delivery import DeliveryApplier
from shard.fanout import FanoutWorker, RoundPlan
from shard.settings import ShardSettings
from tests.unit.test_shard_servicer import Shard, follow_sync


def records_of(shard: Shard, kind: str) -> list:
    """The outbox's direct ops of ``kind``, or its status syncs, oldest first."""
    found = []
    for _seq, record in shard.outbox():
        if kind == "status_sync" and record.HasField("status_sync"):
            found.append(record.status_sync)
        elif record.HasField("direct") and record.direct.WhichOneof("op") == kind:
            found.append(getattr(record.direct, kind))
    return found


def sync_for(star: int, fan: int, tweets: list, followed_ms: int) -> shard_pb2.DeliveryOp:
    op = follow_sync(star, [fan], celebrity=False, version=0, tweets=tweets)
    op.follow_sync.followed_ms = followed_ms
    return op


def test_a_sync_for_an_earlier_follow_does_not_backfill_a_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000]
    monkeypatch.setattr(servicer_module, "now_ms", lambda: now[0])
    shard = Shard(tmp_path / "db", ShardSettings())
    star, fan = shard.create_user("star"), shard.create_user("fan")
    shard.follow(fan, star)
    deleted = shard.post(star, "deleted before the second follow reached the author")
    stale = sync_for(star, fan, [deleted], followed_ms=1_000)  # planned for the first follow
    shard.ok("Unfollow", murmur_pb2.UnfollowRequest(follower_id=fan, followee_id=star))
    now[0] = 2_000
    shard.follow(fan, star)
    assert [a.followed_ms for a in records_of(shard, "add_follower")] == [1_000, 2_000]

    shard.deliver(stale)
    assert shard.stored_inbox_ids(fan) == []

    kept = shard.post(star, "live")
    shard.deliver(sync_for(star, fan, [kept], followed_ms=2_000))  # the second follow's own
    assert shard.stored_inbox_ids(fan) == [kept.tweet_id]
    later = shard.post(star, "sent to every follower")
    shard.deliver(sync_for(star, fan, [later, kept], followed_ms=0))  # a change of status
    assert shard.stored_inbox_ids(fan) == [later.tweet_id, kept.tweet_id]
    shard.close()


def test_the_followee_shard_passes_the_follow_on_to_its_sync(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "db", ShardSettings())
    star, fan = shard.create_user("star"), shard.create_user("fan")
    shard.follow(fan, star)
    (add,) = records_of(shard, "add_follower")
    assert add.followed_ms > 0
    shard.deliver(shard_pb2.DeliveryOp(add_follower=add))
    (status,) = records_of(shard, "status_sync")
    assert (status.follower_id, status.followed_ms) == (fan, add.followed_ms)
    shard.close()


def test_the_fan_out_plans_the_sync_for_the_follow_it_answers(tmp_path: Path) -> None:
    shard = Shard(tmp_path / "db", ShardSettings())
    star, fan = shard.create_user("star"), shard.create_user("fan")
    worker = FanoutWorker(shard.state, DeliveryApplier(shard.state), peers=None)  # type: ignore[arg-type]
    plan = RoundPlan()
    status = shard_pb2.StatusSync(followee_id=star, follower_id=fan, followed_ms=1_234)
    finished, _cost = worker._plan_status(plan, status, budget=100)
    ((op,),) = plan.ops.values()
    assert finished and list(op.follow_sync.follower_ids) == [fan]
    assert op.follow_sync.followed_ms == 1_234
    shard.close()

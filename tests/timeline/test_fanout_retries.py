"""A fan-out round that fails at one destination is retried as planned, at
that destination only (``FanoutWorker.run_round``)."""

from __future__ import annotations

from murmur.v1 import murmur_pb2 as pb
from tests.timeline.model import Model


def user_on(model: Model, cluster, shard: int, key) -> int:
    """A new user whose slot lives on ``shard``."""
    n = 0
    while True:
        user_id = model.user((key, n))
        if cluster.shard_of(user_id) == shard:
            return user_id
        n += 1


def home_ids(model: Model, user_id: int) -> list[int]:
    return [t.tweet_id for t in model.home_page(user_id).tweets]


def attempt(model: Model, worker) -> str:
    try:
        model.run(worker.run_round())
    except ConnectionError as exc:
        return f"failed: {exc}"
    return "delivered"


def test_a_deleted_tweet_stays_deleted_while_a_round_is_retried(make_cluster, loop) -> None:
    """Round 1 carries x's post, y's tweet and its delete to shards 1 and 2;
    shard 2 is down. x then gains followers, so the round planned again would
    end after y's put: shard 1 would show the deleted tweet again."""
    cluster = make_cluster(shards=3, fanout_batch_entries=200)
    model = Model(cluster, loop)
    x, y = user_on(model, cluster, 0, "x"), user_on(model, cluster, 0, "y")
    near, far = user_on(model, cluster, 1, "near"), user_on(model, cluster, 2, "far")
    for n in range(150):
        model.call("Follow", pb.FollowRequest(follower_id=model.user(("fan", n)), followee_id=x))
    for follower in (near, far):
        model.call("Follow", pb.FollowRequest(follower_id=follower, followee_id=y))
    later_fans = [user_on(model, cluster, 1, ("later", n)) for n in range(49)]
    model.settle()

    cluster.pool.down.add(2)
    model.call("PostTweet", pb.PostTweetRequest(user_id=x, text="x's post"))
    doomed = model.call("PostTweet", pb.PostTweetRequest(user_id=y, text="doomed")).tweet_id
    model.call("DeleteTweet", pb.DeleteTweetRequest(tweet_id=doomed, user_id=y))
    sender = cluster.workers[0]
    assert attempt(model, sender).startswith("failed")
    assert doomed not in home_ids(model, near)

    for fan in later_fans:
        model.call("Follow", pb.FollowRequest(follower_id=fan, followee_id=x))
    model.run(cluster.workers[1].run_round())  # the follows reach x's shard
    for _ in range(3):
        assert attempt(model, sender).startswith("failed")
        assert doomed not in home_ids(model, near)
    # the retried round took the first new follows' backfills along to
    # shard 1 (as far as its budget reached), though shard 2 is still down
    assert any(home_ids(model, fan) for fan in later_fans)

    cluster.pool.down.discard(2)
    model.settle()
    assert doomed not in home_ids(model, near) and doomed not in home_ids(model, far)

"""Every call the router makes to a shard carries the caller's remaining
deadline, and celebrity pulls only a share of it (so a silent shard leaves
time to answer with a partial page)."""

from __future__ import annotations

import asyncio

import pytest

from murmur.v1 import murmur_pb2 as pb
from server.shard_pool import DEFAULT_TIMEOUT_S, ShardPool
from server.slot_map import RoutingTable
from tests.timeline.model import Model


def test_shard_calls_carry_the_callers_remaining_deadline(make_cluster, loop):
    cluster = make_cluster(shards=3, celebrity_threshold=2)
    model = Model(cluster, loop)
    stars = [f"star{n}" for n in range(6)]
    model.follow_all(["a", "b", "reader"], stars)
    model.follow("reader", "friend")
    model.post("friend", "hello")
    model.settle()
    reader = model.user("reader")
    # the reader's own shard merges its celebrities; the others are pulled
    assert {cluster.shard_of(model.user(s)) for s in stars} - {cluster.shard_of(reader)}
    cases = [
        ("GetUser", pb.GetUserRequest(user_id=reader)),
        ("Follow", pb.FollowRequest(follower_id=reader, followee_id=model.user("a"))),
        ("PostTweet", pb.PostTweetRequest(user_id=reader, text="on time")),
        ("GetUserTimeline", pb.GetUserTimelineRequest(user_id=reader)),
        ("ListFollowing", pb.ListFollowingRequest(user_id=reader)),
        ("GetHomeTimeline", pb.GetHomeTimelineRequest(user_id=reader)),
    ]
    for method, request in cases:
        cluster.pool.timeouts.clear()
        model.run(cluster.call(method, request, deadline=0.37))
        assert cluster.pool.timeouts, method
        for shard_method, timeout in cluster.pool.timeouts:
            assert timeout is not None and 0 < timeout <= 0.37, (method, shard_method, timeout)
    pulls = [t for m, t in cluster.pool.timeouts if m == "PullTimelines"]
    assert pulls and all(t == pytest.approx(0.37 * 0.8) for t in pulls)


def test_a_call_without_a_deadline_gets_the_default_one(make_cluster):
    seen: list[float] = []

    class Stub:
        async def Ping(self, request, timeout):  # noqa: N802
            seen.append(timeout)
            return pb.PingResponse(shard_id=0)

    cluster = make_cluster(shards=1)
    pool = ShardPool(RoutingTable(cluster.table.slot_map))
    pool.stub = lambda shard_id: Stub()
    asyncio.new_event_loop().run_until_complete(pool.call(0, "Ping", pb.PingRequest(), None))
    assert seen == [DEFAULT_TIMEOUT_S]

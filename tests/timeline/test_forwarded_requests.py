"""The router forwards only the fields it checked.

Unfollow, DeleteTweet and Ping went to the shards as the caller sent them,
fields unknown to the router included: up to 1 MB each, riding the
router's batched shard calls (128 of them could pass the shard's 64 MB
limit and fail every call in the batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from murmur.v1 import murmur_pb2
from tests.timeline.memory_cluster import MemoryCluster

PADDING = 99  # a field number no Murmur message has


def with_unknown_field(message: Any, size: int) -> Any:
    """``message`` as a newer (or hostile) client would send it: with a
    ``size``-byte field this version does not know."""
    tag = bytes([(PADDING << 3 | 2) & 0x7F | 0x80, PADDING >> 4])  # field 99, length-delimited
    length = bytearray()
    value = size
    while value >= 0x80:
        length.append(value & 0x7F | 0x80)
        value >>= 7
    length.append(value)
    raw = message.SerializeToString() + tag + bytes(length) + b"x" * size
    return type(message).FromString(raw)


def test_requests_reach_the_shards_without_fields_the_router_did_not_check(
    make_cluster: Callable[..., MemoryCluster], loop: asyncio.AbstractEventLoop
) -> None:
    cluster = make_cluster(shards=2)
    run = loop.run_until_complete
    alice = run(cluster.call("CreateUser", murmur_pb2.CreateUserRequest(handle="alice")))
    bob = run(cluster.call("CreateUser", murmur_pb2.CreateUserRequest(handle="bob")))
    follow = murmur_pb2.FollowRequest(follower_id=alice.user_id, followee_id=bob.user_id)
    run(cluster.call("Follow", follow))
    tweet = run(
        cluster.call("PostTweet", murmur_pb2.PostTweetRequest(user_id=bob.user_id, text="hi"))
    )
    sent: list[Any] = []
    call = cluster.pool.call

    async def recording(shard_id: int, method: str, request: Any, timeout: Any) -> Any:
        sent.append(request)
        return await call(shard_id, method, request, timeout)

    cluster.pool.call = recording  # type: ignore[method-assign]
    requests = {
        "Unfollow": murmur_pb2.UnfollowRequest(follower_id=alice.user_id, followee_id=bob.user_id),
        "DeleteTweet": murmur_pb2.DeleteTweetRequest(tweet_id=tweet.tweet_id, user_id=bob.user_id),
        "Ping": murmur_pb2.PingRequest(user_id=alice.user_id),
    }
    for method, request in requests.items():
        padded = with_unknown_field(request, 100_000)
        assert padded.ByteSize() > 100_000  # unknown to this version, yet carried along
        assert padded.ListFields() == request.ListFields()
        run(cluster.call(method, padded))
    assert sent, "no shard call was made"
    assert all(message.ByteSize() < 1_000 for message in sent), [m.ByteSize() for m in sent]

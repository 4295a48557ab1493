"""Per-user rate limits through real processes: an operator sets them with
murmur-admin, the router's coalesced batches carry a refusal's wait back to
the caller, and the Python client and the CLI show it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import ResourceExhausted
from murmur.v1 import murmur_pb2, murmur_pb2_grpc
from tests.integration.cluster import LocalCluster
from tests.integration.test_cli import Cli

TOKEN = "rate-limit-token"


def assert_wait(seconds: float, interval_s: float, since: float) -> None:
    """A full budget spent from ``since`` on refills its first write one
    interval after it: the wait is that, less the time the writes took."""
    assert interval_s - (time.monotonic() - since) <= seconds <= interval_s


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = tmp_path_factory.mktemp("limited")
    with LocalCluster(path, shards=2, router_args=["--admin-token", TOKEN]) as running:
        with AdminClient(running.target, TOKEN) as admin:
            settings = admin.update_settings(post_rate_limit=3, follow_rate_limit=2)
        assert (settings.post_rate_limit, settings.follow_rate_limit) == (3, 2)
        yield running


def test_a_fourth_post_in_a_minute_is_refused_with_when_to_retry(
    limited: LocalCluster,
) -> None:
    with MurmurClient(limited.target) as client:
        author = client.create_user(limited.handle_on_shard(0, "poster")).user_id
        bystander = client.create_user(limited.handle_on_shard(0, "bystander")).user_id
        started = time.monotonic()
        posted = [client.post_tweet(author, f"post {n}", request_id=f"r{n}") for n in range(3)]
        with pytest.raises(ResourceExhausted) as refused:
            client.post_tweet(author, "one too many")
        assert f"user {author} is over post_rate_limit: at most 3 posts" in refused.value.details
        assert_wait(refused.value.retry_after, 20, started)  # one post every 20 s
        # a retried post (its request_id) is answered, not refused
        again = client.post_tweet(author, "post 0", request_id="r0")
        assert again.tweet_id == posted[0].tweet_id
        client.post_tweet(bystander, "mine is my own budget")
        assert client.get_user(user_id=author).tweet_count == 3


def test_other_languages_read_the_wait_from_standard_status_details(
    limited: LocalCluster,
) -> None:
    """Callers that are not our client read google.rpc.RetryInfo."""
    with MurmurClient(limited.target) as client:
        author = client.create_user(limited.handle_on_shard(1, "raw")).user_id
        started = time.monotonic()
        for n in range(3):
            client.post_tweet(author, f"raw {n}")
    with grpc.insecure_channel(limited.target) as channel:
        stub = murmur_pb2_grpc.MurmurStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.PostTweet(murmur_pb2.PostTweetRequest(user_id=author, text="4"), timeout=10)
    status = rpc_status.from_call(refused.value)
    assert status is not None and status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert_wait(info.retry_delay.ToNanoseconds() / 1e9, 20, started)


def test_follow_changes_share_one_budget_and_the_cli_says_why(limited: LocalCluster) -> None:
    with MurmurClient(limited.target) as client:
        fan = client.create_user(limited.handle_on_shard(1, "fan")).user_id
        stars = [client.create_user(limited.handle_on_shard(0, "star")).user_id for _ in range(2)]
        started = time.monotonic()
        client.follow(fan, stars[0])
        client.follow(fan, stars[0])  # already following: not counted
        client.unfollow(fan, stars[0])
        with pytest.raises(ResourceExhausted) as refused:
            client.follow(fan, stars[1])
        assert "follow_rate_limit: at most 2 follows and unfollows" in refused.value.details
        assert_wait(refused.value.retry_after, 30, started)
        assert client.get_user(user_id=fan).following_count == 0
    result = Cli(limited.target).fails("follow", str(fan), str(stars[1]))
    assert "RESOURCE_EXHAUSTED" in result.stderr and "follow_rate_limit" in result.stderr
    assert "retry in" in result.stderr

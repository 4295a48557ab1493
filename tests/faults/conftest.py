from __future__ import annotations

import random

import pytest

from client import MurmurClient
from tests.datasets import load_edges, load_texts
from tests.integration.cluster import LocalCluster, eventually
from tests.timeline.oracle import JoinOracle

TOKEN = "fault-suite-operator-token"


def seed_graph(client: MurmurClient, oracle: JoinOracle, edges: int = 400) -> list[int]:
    """Users and follows from the real graph's first edges (or generated ones)."""
    ids: dict[int, int] = {}
    for n, (a, b) in enumerate(load_edges(max_edges=edges)):
        for node in (a, b):
            if node not in ids:
                ids[node] = client.create_user(f"g{node % 10**9}x{len(ids)}"[:15]).user_id
        client.follow(ids[a], ids[b])
        oracle.follow(ids[a], ids[b])
        if n % 97 == 0:
            client.post_tweet(ids[b], f"seed {n}", request_id=f"seed-{n}")
    return list(ids.values())


@pytest.fixture
def loaded(tmp_path):
    """A 3-shard cluster with a slice of the real graph, and its oracle.

    Everything after the processes start, seeding included, runs inside the
    cluster's context manager: a failure anywhere still stops all four."""
    with (
        LocalCluster(
            tmp_path, shards=3, celebrity_threshold=25, router_args=["--admin-token", TOKEN]
        ) as cluster,
        MurmurClient(cluster.target, timeout=10) as client,
    ):
        oracle = JoinOracle()
        users = seed_graph(client, oracle)
        # the seed posts went through the client, not the oracle: record them
        for user in users:
            for tweet in client.iter_user_timeline(user):
                oracle.post(tweet.tweet_id, tweet.user_id, tweet.text)
        texts = [t for t in load_texts(2000) if len(t) <= 280]
        yield cluster, client, oracle, users, texts, random.Random(7)


def settled(client: MurmurClient, oracle: JoinOracle, users: list[int]) -> None:
    """Fan-out has caught up: follower counts match the oracle."""

    def check() -> None:
        for user in users:
            assert client.get_user(user_id=user).follower_count == oracle.followers_of(user)

    eventually(check, timeout=60, interval=0.5)

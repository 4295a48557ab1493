"""Crash tests on real processes: kill -9 a shard in the middle of a large
fan-out (the author's and a destination's), and the router in the middle of
a workload; after restarts and settling, home timelines equal the join."""

from __future__ import annotations

import random
import time

import pytest

from client import MurmurClient
from client.errors import MurmurError
from tests.datasets import load_edges, load_texts
from tests.integration.cluster import LocalCluster, eventually
from tests.timeline.oracle import JoinOracle

pytestmark = pytest.mark.integration

FOLLOWERS = 240
BURST = 60


class LiveModel:
    """The oracle fed only with acknowledged operations."""

    def __init__(self, client: MurmurClient) -> None:
        self.client = client
        self.oracle = JoinOracle()
        self.users: dict[object, int] = {}

    def user(self, key: object, handle: str | None = None) -> int:
        if key not in self.users:
            self.users[key] = self.client.create_user(handle or f"k{len(self.users)}_{key}").user_id
        return self.users[key]

    def follow(self, a: object, b: object) -> None:
        self.client.follow(self.user(a), self.user(b))
        self.oracle.follow(self.user(a), self.user(b))

    def post(self, author: object, text: str, request_id: str = "") -> int:
        tweet = self.client.post_tweet(self.user(author), text, request_id=request_id)
        self.oracle.post(tweet.tweet_id, tweet.user_id, tweet.text)
        return tweet.tweet_id

    def matches(self, readers: list[int], pages: int = 2, size: int = 50) -> None:
        for reader in readers:
            token, before = "", 0
            for _ in range(pages):
                page = self.client.home_timeline(reader, page_size=size, page_token=token)
                got = [(t.tweet_id, t.user_id, t.text) for t in page.tweets]
                assert got == self.oracle.home(reader, before, size), f"reader {reader}"
                if not page.next_page_token:
                    break
                token, before = page.next_page_token, got[-1][0]


def load_graph(model: LiveModel, cluster: LocalCluster, author_shard: int) -> tuple[int, list[int]]:
    """A slice of the real graph, plus one author on ``author_shard`` followed
    by FOLLOWERS accounts spread over every shard."""
    for follower, followee in load_edges(max_edges=300):
        model.follow(follower, followee)
    author = model.user("author", cluster.handle_on_shard(author_shard, "author"))
    fans = [f"fan{i}" for i in range(FOLLOWERS)]
    for fan in fans:
        model.follow(fan, "author")
    eventually(lambda: _followers_settled(model, author), timeout=60, interval=0.2)
    return author, [model.users[f] for f in fans]


def _followers_settled(model: LiveModel, author: int) -> None:
    assert model.client.get_user(user_id=author).follower_count == FOLLOWERS


@pytest.mark.parametrize("victim", ["author_shard", "destination_shard"])
def test_kill9_shard_mid_fanout_then_timelines_equal_the_join(tmp_path, victim):
    with LocalCluster(tmp_path, shards=3, celebrity_threshold=1000) as cluster:
        client = MurmurClient(cluster.target, timeout=10)
        model = LiveModel(client)
        author, fans = load_graph(model, cluster, author_shard=0)
        texts = [t for t in load_texts(500) if len(t) <= 280]
        for i in range(BURST):
            model.post("author", texts[i % len(texts)], request_id=f"burst-{i}")
        down = 0 if victim == "author_shard" else 1
        cluster.kill_shard(down)  # the outbox holds ~BURST x FOLLOWERS deliveries
        time.sleep(0.5)
        cluster.restart_shard(down)
        readers = random.Random(1).sample(fans, 40) + [author]
        eventually(lambda: model.matches(readers), timeout=90, interval=0.5)
        others = random.Random(2).sample(list(model.users.values()), 40)
        model.matches(others)
        client.close()


def test_kill9_router_mid_workload_then_timelines_equal_the_join(tmp_path):
    with LocalCluster(tmp_path, shards=3, celebrity_threshold=20) as cluster:
        client = MurmurClient(cluster.target, timeout=10)
        model = LiveModel(client)
        author, fans = load_graph(model, cluster, author_shard=2)
        rng = random.Random(4)
        authors = list(model.users)
        for i in range(150):
            if i == 75:
                cluster.kill_router()
                cluster.restart_router()
                client.close()
                client = model.client = MurmurClient(cluster.target, timeout=10)
            try:
                model.post(rng.choice(authors), f"workload {i}", request_id=f"w{i}")
            except MurmurError:
                continue  # not acknowledged: the oracle does not count it
        readers = rng.sample(fans, 30) + rng.sample(list(model.users.values()), 30)
        eventually(lambda: model.matches(readers), timeout=60, interval=0.5)
        client.close()

"""Crash tests on real processes: kill -9 a shard in the middle of a large
fan-out (the author's and a destination's), and the router in the middle of
a workload; after restarts and settling, home timelines equal the join."""

from __future__ import annotations

import random
import time

import pytest

from client import MurmurClient
from tests.datasets import load_edges, load_texts
from tests.faults.workload import Workload
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


class PostsOnly(Workload):
    """The faults workload reduced to posts, one after another from a
    background thread: each carries its own request_id and is repeated,
    through whatever router ``cluster.target`` names, until acknowledged, and
    only then enters the oracle."""

    def step(self) -> None:
        self.post()


def test_kill9_router_mid_workload_then_timelines_equal_the_join(tmp_path):
    with LocalCluster(tmp_path, shards=3, celebrity_threshold=20) as cluster:
        client = MurmurClient(cluster.target, timeout=10)
        model = LiveModel(client)
        author, fans = load_graph(model, cluster, author_shard=2)
        rng = random.Random(4)
        authors = list(model.users.values())
        texts = [f"workload {i}" for i in range(50)]
        workload = PostsOnly(
            lambda: cluster.target, authors, model.oracle, texts, seed=4, give_up_s=20
        )

        def posted(at_least: int) -> None:
            if workload.failure is not None:  # a post never acknowledged: stop waiting
                pytest.fail(f"the workload failed: {workload.failure!r}")
            assert workload.ops["post"] >= at_least, workload.ops

        workload.start()
        try:
            eventually(lambda: posted(40), timeout=60, interval=0.05)
            # the workload never pauses between posts: the kill lands on one in flight
            cluster.kill_router()
            cluster.restart_router()  # on a new port: the workload follows ``target``
            restarted_at = workload.ops["post"]
            eventually(lambda: posted(restarted_at + 40), timeout=30, interval=0.05)
        finally:
            workload.stop()  # raises what the thread raised: a post never acknowledged
        client.close()
        client = model.client = MurmurClient(cluster.target, timeout=10)
        # the workload saw the dead router, retried, and was answered by the new one
        assert workload.errors, "no post failed: the kill never met the workload"
        assert set(workload.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}, (
            workload.errors
        )
        # the oracle holds exactly the acknowledged posts, once each, and so does the
        # cluster: a post repeated after the kill did not land twice, none was lost
        assert len(model.oracle.tweets) == workload.ops["post"], workload.ops
        for user in authors:
            mine = sum(1 for a, _ in model.oracle.tweets.values() if a == user)
            assert client.get_user(user_id=user).tweet_count == mine, f"tweet_count of {user}"
        readers = rng.sample(fans, 30) + rng.sample(authors, 30)
        eventually(lambda: model.matches(readers), timeout=60, interval=0.5)
        client.close()

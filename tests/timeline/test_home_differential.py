"""Home timelines equal the join's answer, on the real follow graph and real
texts, with a celebrity threshold low enough that both fan-out on write and
fan-out on read are exercised."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from murmur.errors import ServiceError
from murmur.v1 import murmur_pb2 as pb
from murmur.validation import MAX_TWEET
from tests.datasets import load_edges, load_texts
from tests.timeline.model import Model

THRESHOLD = 25


@pytest.fixture
def graph_model(make_cluster, loop):
    """A slice of the real graph loaded into a 3-shard cluster."""
    cluster = make_cluster(shards=3, celebrity_threshold=THRESHOLD, inbox_cap=60)
    model = Model(cluster, loop)
    edges = load_edges(max_edges=2500)
    for follower, followee in edges:
        model.follow(follower, followee)
    model.settle()
    return model, edges


def test_graph_has_both_kinds_of_account(graph_model):
    model, edges = graph_model
    in_degree = Counter(followee for _, followee in edges)
    celebrities = [u for u, n in in_degree.items() if n >= THRESHOLD]
    assert celebrities, "the slice must contain celebrities for this test to mean anything"
    user = model.call("GetUser", pb.GetUserRequest(user_id=model.users[celebrities[0]]))
    assert user.celebrity
    assert user.follower_count == in_degree[celebrities[0]]


def test_home_timelines_match_the_join(graph_model):
    model, edges = graph_model
    rng = random.Random(3)
    texts = [t for t in load_texts(3000) if len(t) <= MAX_TWEET]
    authors = list(model.users)
    posted = [model.post(rng.choice(authors), text) for text in texts[:1200]]
    model.settle()
    for tweet_id in rng.sample(posted, 60):
        model.edit(tweet_id, f"edited {tweet_id}")
    for tweet_id in rng.sample(posted, 60):
        if tweet_id in model.oracle.tweets:
            model.delete(tweet_id)
    for follower, followee in rng.sample(edges, 80):
        model.unfollow(follower, followee)
    for _ in range(80):
        model.follow(rng.choice(authors), rng.choice(authors[:200]))
    for text in texts[1200:1500]:
        model.post(rng.choice(authors), text)
    model.settle()
    assert model.cluster.backlog() == 0
    readers = rng.sample(list(model.users.values()), 150)
    for reader in readers:
        model.check_home(reader, pages=3, size=20)


def test_overlong_real_texts_are_refused(graph_model):
    model, _ = graph_model
    long_texts = [t for t in load_texts(20000) if len(t) > MAX_TWEET]
    if not long_texts:
        long_texts = ["x" * (MAX_TWEET + 1)]
    author = next(iter(model.users.values()))
    with pytest.raises(ServiceError) as caught:
        model.call("PostTweet", pb.PostTweetRequest(user_id=author, text=long_texts[0]))
    assert "text" in caught.value.message and "280" in caught.value.message


def test_scrolling_below_the_inbox_cap_still_equals_the_join(graph_model):
    """Inboxes hold 60 entries here; whole timelines are far longer, so the
    deep pages come from pulls below the exact watermark."""
    model, _ = graph_model
    rng = random.Random(5)
    authors = list(model.users)
    for index in range(1500):
        model.post(rng.choice(authors[:300]), f"tweet number {index}")
    model.settle()
    readers = sorted(
        model.users.values(), key=lambda u: len(model.oracle.home(u, limit=10_000)), reverse=True
    )[:15]
    deep = 0
    for reader in readers:
        total = len(model.oracle.home(reader, limit=10_000))
        deep += total > 60
        model.check_home(reader, pages=total // 20 + 2, size=20)
    assert deep, "some reader's timeline must be longer than the inbox cap"

"""Crossing the celebrity threshold, both ways, and paging while tweets arrive."""

from __future__ import annotations

from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import shard_pb2
from tests.timeline.model import Model


def set_threshold(model: Model, value: int) -> None:
    """The celebrity threshold, changed at runtime on every shard."""
    cluster = model.cluster
    for shard_id in cluster.states:
        model.run(
            cluster.pool.call(
                shard_id,
                "UpdateSettings",
                shard_pb2.UpdateSettingsRequest(celebrity_threshold=value),
                None,
            )
        )


def test_crossing_the_threshold_both_ways_keeps_timelines_exact(make_cluster, loop):
    cluster = make_cluster(shards=3, celebrity_threshold=5, inbox_cap=100)
    model = Model(cluster, loop)
    star = model.user("star")
    fans = [f"fan{i}" for i in range(9)]
    for fan in fans:
        model.user(fan)
        model.follow(fan, "other")
    model.post("other", "from an ordinary account")
    flips = []
    for count, fan in enumerate(fans, start=1):
        model.follow(fan, "star")
        model.post("star", f"star tweet with {count} followers")
        model.settle()
        flips.append(model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity)
        for reader in [model.users[f] for f in fans] + [star]:
            model.check_home(reader, pages=2, size=10)
    assert flips == [False] * 4 + [True] * 5
    tweets = list(model.oracle.tweets)
    model.edit(tweets[1], "a star edits an early tweet")
    model.delete(tweets[2])
    flips = []
    for count, fan in enumerate(reversed(fans)):
        model.unfollow(fan, "star")
        model.post("star", f"star tweet after losing {count + 1}")
        model.settle()
        flips.append(model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity)
        for reader in [model.users[f] for f in fans] + [star]:
            model.check_home(reader, pages=2, size=10)
    # demoted only below 5 - max(1, 5 // 10) = 4 followers: hysteresis
    assert flips == [True, True, True, True, True, False, False, False, False]


def test_hovering_at_the_line_does_not_flap(make_cluster, loop):
    cluster = make_cluster(shards=2, celebrity_threshold=10)
    model = Model(cluster, loop)
    star = model.user("star")
    for i in range(10):
        model.follow(f"f{i}", "star")
    model.settle()
    states = []
    for _ in range(5):
        model.unfollow("f0", "star")
        model.settle()
        states.append(model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity)
        model.follow("f0", "star")
        model.settle()
        states.append(model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity)
    assert states == [True] * 10


def test_unsettled_reads_never_show_a_tweet_twice(make_cluster, loop):
    cluster = make_cluster(shards=3, celebrity_threshold=3)
    model = Model(cluster, loop)
    for i in range(6):
        model.follow(f"f{i}", "star")
        model.post("star", f"post {i}")
        for j in range(i + 1):
            ids = [t.tweet_id for t in model.home_page(model.user(f"f{j}"), size=50).tweets]
            assert len(ids) == len(set(ids))
            assert ids == sorted(ids, reverse=True)
        model.run(cluster.workers[cluster.shard_of(model.user("star"))].run_round())


def test_paging_while_posts_arrive_never_repeats_or_skips(make_cluster, loop):
    cluster = make_cluster(shards=3, celebrity_threshold=4, inbox_cap=30)
    model = Model(cluster, loop)
    reader = model.user("reader")
    authors = [f"a{i}" for i in range(6)]
    for author in authors:
        model.follow("reader", author)
    for i in range(3):  # make a0 a celebrity so paging crosses the merge
        model.follow(f"fan{i}", "a0")
    for i in range(120):
        model.post(authors[i % len(authors)], f"old {i}")
    model.settle()
    first = model.home_page(reader, size=7)
    newest_at_start = first.tweets[0].tweet_id
    expected = [t for t, _, _ in model.oracle.home(reader, newest_at_start + 1, 10_000)]
    seen = [t.tweet_id for t in first.tweets]
    token = first.next_page_token
    posted = 0
    while token:
        model.post(authors[posted % len(authors)], f"new {posted}")
        posted += 1
        if posted % 3 == 0:
            model.settle()
        page = model.home_page(reader, token, size=7)
        seen.extend(t.tweet_id for t in page.tweets)
        token = page.next_page_token
    assert len(seen) == len(set(seen)), "a tweet repeated"
    assert seen == sorted(seen, reverse=True)
    assert seen == expected, "an older tweet was skipped"
    assert posted > 10


def test_changing_the_threshold_at_runtime_reclassifies_and_stays_exact(make_cluster, loop):
    cluster = make_cluster(shards=3, celebrity_threshold=1000)
    model = Model(cluster, loop)
    for i in range(8):
        model.follow(f"f{i}", "star")
        model.follow(f"f{i}", "plain")
    for i in range(30):
        model.post("star" if i % 2 else "plain", f"tweet {i}")
    model.settle()

    star = model.user("star")
    set_threshold(model, 5)
    model.settle()
    assert model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity
    model.post("star", "now pulled at read time")
    for i in range(8):
        model.check_home(model.user(f"f{i}"), pages=2, size=10)
    set_threshold(model, 1000)
    model.settle()
    assert not model.call("GetUser", pb.GetUserRequest(user_id=star)).celebrity
    model.post("star", "fanned out again")
    model.settle()
    for i in range(8):
        model.check_home(model.user(f"f{i}"), pages=3, size=10)


def test_a_reader_of_thousands_of_celebrities_gets_an_exact_page_in_one_pull_per_shard(
    make_cluster, loop
):
    cluster = make_cluster(shards=3, celebrity_threshold=1)
    model = Model(cluster, loop)
    reader = model.user("reader")
    stars = [f"star{i}" for i in range(1500)]
    for i, star in enumerate(stars):
        model.follow("reader", star)
        if i % 3 == 0:
            model.post(star, f"from {star}")
    model.settle()
    reader_shard = cluster.states[cluster.shard_of(reader)]
    assert len(reader_shard.graph.followed_celebrities(reader)) == 1500
    cluster.pool.calls.clear()
    model.check_home(reader, pages=3, size=50)
    pulls = {s: n for (method, s), n in cluster.pool.calls.items() if method == "PullTimelines"}
    # three pages: one pull per other shard per page, never one per
    # celebrity; the reader's own shard merges its celebrities into the page
    others = set(cluster.states) - {cluster.shard_of(reader)}
    assert set(pulls) == others and all(n == 3 for n in pulls.values()), pulls


def test_backfill_limits_down_to_zero_keep_home_timelines_exact(make_cluster, loop):
    """A follow (or a demotion) whose backfill leaves tweets out must mark the
    follower's inbox inexact below them, even when it carries none at all:
    with backfill_limit 0 the reader's shard then pulls them at read time."""
    for limit in (0, 1):
        cluster = make_cluster(shards=3, celebrity_threshold=1000, backfill_limit=limit)
        model = Model(cluster, loop)
        for i in range(3):
            model.post("author", f"before the follow {i}")
        model.post("other", "from an account followed from the start")
        for i in range(4):
            model.follow(f"fan{i}", "other")
        model.settle()
        for i in range(4):
            model.follow(f"fan{i}", "author")
        model.settle()
        for i in range(4):
            model.check_home(model.user(f"fan{i}"), pages=2, size=2)


def test_a_demotion_with_backfill_limit_zero_keeps_home_timelines_exact(make_cluster, loop):
    """Promotion removes an author's copies from inboxes; the demotion's
    backfill, with limit 0, brings none back, so the inboxes must say they
    no longer hold that author's older tweets."""
    cluster = make_cluster(shards=3, celebrity_threshold=1000, backfill_limit=0)
    model = Model(cluster, loop)
    for i in range(4):
        model.follow(f"f{i}", "author")
        model.follow(f"f{i}", "other")
    for i in range(3):
        model.post("author", f"ordinary {i}")
    model.post("other", "from other")
    model.settle()

    author = model.user("author")
    set_threshold(model, 2)
    model.settle()
    assert model.call("GetUser", pb.GetUserRequest(user_id=author)).celebrity
    set_threshold(model, 10_000)
    model.settle()
    assert not model.call("GetUser", pb.GetUserRequest(user_id=author)).celebrity
    for i in range(4):
        model.check_home(model.user(f"f{i}"), pages=2, size=10)

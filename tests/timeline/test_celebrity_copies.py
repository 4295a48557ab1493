"""The router's short-lived copies of celebrities' timelines: first pages
are served without pulls, the copies are renewed in the background, writes
through the router show at once, writes elsewhere within the copy's life,
and pages further back are always pulled."""

from __future__ import annotations

import asyncio

from murmur.v1 import murmur_pb2 as pb
from server import home_timeline
from server.celebrity_cache import CelebrityTimelines
from server.servicer import MurmurServicer
from tests.timeline.memory_cluster import FakeContext
from tests.timeline.model import Model

TTL = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def setup(make_cluster, loop, stars: int = 6):
    cluster = make_cluster(shards=3, celebrity_threshold=2)
    clock = Clock()
    cluster.router.celebrity_copies = CelebrityTimelines(ttl_s=TTL, clock=clock)
    model = Model(cluster, loop)
    names = [f"star{n}" for n in range(stars)]
    model.follow_all(["a", "b", "reader"], names)
    model.follow("reader", "friend")
    model.post("friend", "an ordinary tweet")
    model.settle()
    for n, star in enumerate(names):
        model.post(star, f"{star} says {n}")
    model.settle()
    return cluster, clock, model, names


def pulls(cluster) -> int:
    return sum(n for (method, _), n in cluster.pool.calls.items() if method == "PullTimelines")


def renewed_shards(cluster) -> set[int]:
    return {shard for (method, shard) in cluster.pool.calls if method == "PullTimelines"}


def let_renewals_run(model) -> None:
    """Give the background renewals a few turns of the loop to finish."""
    for _ in range(10):
        model.run(asyncio.sleep(0))


def test_first_pages_come_from_copies_without_pulls(make_cluster, loop):
    cluster, _clock, model, _ = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1)
    assert pulls(cluster) > 0  # the first read fills the copies
    cluster.pool.calls.clear()
    for who in ("reader", "a", "b"):
        model.check_home(model.user(who), pages=1)
    assert pulls(cluster) == 0
    assert cluster.router.celebrity_copies.hits > 0


def test_writes_elsewhere_show_within_the_copys_life_and_here_at_once(make_cluster, loop):
    cluster, clock, model, names = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1)
    star = model.user(names[0])
    other_router = MurmurServicer(cluster.table, cluster.pool)
    request = pb.PostTweetRequest(user_id=star, text="posted through another router")
    tweet = model.run(other_router.PostTweet(request, FakeContext()))
    model.oracle.post(tweet.tweet_id, star, tweet.text)
    first = model.home_page(reader)
    assert tweet.tweet_id not in [t.tweet_id for t in first.tweets]  # the copy is still young
    clock.now += TTL * 1.01
    model.check_home(reader, pages=1)  # now it shows, exactly as the join says

    model.post(names[1], "posted through this router")  # forgets that star's copy
    model.check_home(reader, pages=1)


def test_copies_are_renewed_in_the_background(make_cluster, loop):
    cluster, clock, model, _ = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1)
    clock.now += TTL * 0.6  # past half its life: served, and renewed meanwhile
    cluster.pool.calls.clear()
    model.check_home(reader, pages=1)
    let_renewals_run(model)
    renewed = renewed_shards(cluster)
    assert renewed and pulls(cluster) == len(renewed)  # one call per shard, not per read
    clock.now += TTL * 0.45  # the first copies have expired, the renewed ones are young
    cluster.pool.calls.clear()
    model.check_home(reader, pages=1)
    assert pulls(cluster) == 0


def test_a_renewal_round_takes_every_copy_reads_want_not_only_the_aging_one(make_cluster, loop):
    """fan1 finds star1's copy aging; the round that begins renews star0's
    copy too, which a read wanted within its life but none saw aging, so
    fan0's read past the first copy's life pulls nothing."""
    cluster, clock, model, names = setup(make_cluster, loop)
    model.follow("fan0", names[0])
    model.follow("fan1", names[1])
    model.settle()
    model.check_home(model.user("reader"), pages=1)  # every copy filled and wanted
    clock.now += TTL * 0.6
    cluster.pool.calls.clear()
    model.check_home(model.user("fan1"), pages=1)  # star1's copy is aging: a round
    let_renewals_run(model)
    renewed = renewed_shards(cluster)
    assert cluster.shard_of(model.user(names[0])) in renewed
    assert pulls(cluster) == len(renewed)  # one call per shard
    clock.now += TTL * 0.45  # the first copies have expired, the renewed ones are young
    cluster.pool.calls.clear()
    model.check_home(model.user("fan0"), pages=1)
    assert pulls(cluster) == 0


def test_a_renewal_bigger_than_one_call_may_carry_goes_in_several(make_cluster, loop, monkeypatch):
    """A call carries at most MAX_PER_AUTHOR_TWEETS tweets (here: one
    celebrity's copy): a round renews a shard's copies in as many calls, and
    keeps them all."""
    cluster, clock, model, names = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1)
    monkeypatch.setattr(
        home_timeline, "MAX_PER_AUTHOR_TWEETS", cluster.router.celebrity_copies.depth
    )
    clock.now += TTL * 0.6
    cluster.pool.calls.clear()
    model.check_home(reader, pages=1)
    let_renewals_run(model)
    assert pulls(cluster) == len(names)  # one call per celebrity
    clock.now += TTL * 0.45
    cluster.pool.calls.clear()
    model.check_home(reader, pages=1)
    assert pulls(cluster) == 0


def test_a_failed_renewal_leaves_its_shard_free_for_the_next(make_cluster, loop, monkeypatch):
    cluster, clock, model, names = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1)
    broken = cluster.shard_of(model.user(names[0]))
    real_call = cluster.pool.call
    failed = []

    async def failing_call(shard_id, method, request, timeout):
        if shard_id == broken and method == "PullTimelines":
            failed.append(shard_id)
            raise RuntimeError("the renewal breaks")
        return await real_call(shard_id, method, request, timeout)

    monkeypatch.setattr(cluster.pool, "call", failing_call)
    clock.now += TTL * 0.6
    model.check_home(reader, pages=1)  # served from copies; the round's call breaks
    let_renewals_run(model)
    assert failed == [broken]
    clock.now += TTL * 0.55
    assert cluster.router.celebrity_copies.start_refresh(broken)


def test_renewals_list_what_reads_wanted_within_a_life() -> None:
    clock = Clock()
    copies = CelebrityTimelines(ttl_s=TTL, clock=clock)
    tweet = (1, pb.Tweet(tweet_id=1, user_id=7, text="hi").SerializeToString())
    copies.store(clock(), {7: [tweet], 8: [tweet]})
    clock.now += TTL * 0.2
    assert copies.lookup([7])[2] is False  # young: no reason to renew yet
    clock.now += TTL * 0.4
    assert copies.lookup([8])[2] is True
    assert sorted(copies.renewals()) == [7, 8]
    assert copies.renewals() == []  # listed within the last quarter-life
    clock.now += TTL * 0.9
    assert copies.renewals() == [8]  # 7 was last wanted over a life ago
    clock.now += TTL * 2
    assert copies.renewals() == []  # nobody reads them now: nothing to renew


def test_a_round_takes_the_latest_wanted_up_to_the_capacity() -> None:
    clock = Clock()
    copies = CelebrityTimelines(ttl_s=TTL, capacity=3, clock=clock)
    for celebrity in range(1, 6):
        clock.now += TTL / 10
        copies.lookup([celebrity])
    assert sorted(copies.renewals()) == [3, 4, 5]


def test_a_shard_is_renewed_once_per_half_life_and_one_call_at_a_time() -> None:
    clock = Clock()
    copies = CelebrityTimelines(ttl_s=TTL, clock=clock)
    assert copies.start_refresh(1) and copies.start_refresh(2)
    clock.now += TTL
    assert not copies.start_refresh(1)  # still out
    copies.refresh_done(1)
    assert copies.start_refresh(1)
    copies.refresh_done(1)
    clock.now += TTL * 0.4
    assert not copies.start_refresh(1)  # began within the last half-life
    clock.now += TTL * 0.15
    assert copies.start_refresh(1)


def test_pages_further_back_are_pulled_exactly(make_cluster, loop):
    cluster, _clock, model, _ = setup(make_cluster, loop)
    reader = model.user("reader")
    model.check_home(reader, pages=1, size=3)
    cluster.pool.calls.clear()
    model.check_home(reader, pages=3, size=3)
    assert pulls(cluster) > 0  # page 2 and 3 have a before bound: no copies


def test_a_silent_shard_gives_a_partial_page_and_no_copy(make_cluster, loop):
    cluster, _clock, model, names = setup(make_cluster, loop)
    reader = model.user("reader")
    reader_shard = cluster.shard_of(reader)
    far = next(n for n in names if cluster.shard_of(model.user(n)) != reader_shard)
    silent = cluster.shard_of(model.user(far))
    cluster.pool.down.add(silent)
    page = model.home_page(reader)
    assert page.partial and list(page.unavailable_shards) == [silent]
    cluster.pool.down.clear()
    cluster.pool.calls.clear()
    model.check_home(reader, pages=1)  # nothing was kept for it: pulled now
    assert ("PullTimelines", silent) in cluster.pool.calls


def test_a_write_during_a_pull_keeps_the_old_copy_out() -> None:
    """A pull that began before the author wrote through this router must
    not store a copy that could miss that write."""
    clock = Clock()
    copies = CelebrityTimelines(ttl_s=TTL, clock=clock)
    early = (1, pb.Tweet(tweet_id=1, user_id=7, text="before").SerializeToString())
    other = (2, pb.Tweet(tweet_id=2, user_id=8, text="someone else").SerializeToString())
    fetched_at = copies.begin_fill()
    clock.now += 0.001
    copies.forget(7)  # 7 posts through this router while the pull is out
    copies.store(fetched_at, {7: [early], 8: [other]})
    copies.end_fill()
    tweets, missing, _ = copies.lookup([7, 8])
    assert missing == [7] and tweets == [other]
    fetched_at = copies.begin_fill()  # a pull begun after the write may be kept
    copies.store(fetched_at, {7: [early]})
    copies.end_fill()
    assert copies.lookup([7])[1] == []

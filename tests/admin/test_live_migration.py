"""Slots move under a live, mixed workload and nothing acknowledged is lost.

A 2-shard cluster (celebrity threshold 15, so both fan-out on write and on
read run) is loaded with users, follows (a few accounts with many followers,
a few just under the threshold) and posts. Then two workload threads post,
edit, delete, follow, unfollow and read through ``MurmurClient`` while the
operator starts a third shard, joins it (AddShard), rebalances, drains one of
the original shards, removes it and kills its process.

Afterwards, once fan-out has settled, every acknowledged write must be there:
each live tweet reads back with its last text, deleted ones are gone,
counters equal the lists they count, CheckConsistency is clean, and sampled
home timelines equal the join of the acknowledged operations.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import MurmurError, NotFound, Unavailable
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2, shard_pb2_grpc
from tests.admin.launcher import Processes, Server, eventually

pytestmark = pytest.mark.integration

THRESHOLD = 15
USERS = 300
STARS = 4  # accounts with ~40 followers: celebrities, pulled at read time
BORDERLINE = 3  # accounts just under the threshold: the workload may promote them
FOLLOWS_PER_USER = 4
INITIAL_POSTS = 600
PAGE = 20
SAMPLE = 30
RETRY_FOR_S = 30.0  # how long a workload thread insists on one write before failing


_T = TypeVar("_T")


@dataclass
class Oracle:
    """The acknowledged state: who follows whom, and every live tweet's text."""

    follows: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    tweets: dict[int, tuple[int, str]] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def home(self, reader: int, limit: int) -> list[tuple[int, int, str]]:
        authors = self.follows[reader] | {reader}
        rows = [(tid, a, text) for tid, (a, text) in self.tweets.items() if a in authors]
        return sorted(rows, reverse=True)[:limit]

    def own(self, author: int) -> list[int]:
        return sorted((tid for tid, (a, _) in self.tweets.items() if a == author), reverse=True)

    def follower_count(self, user: int) -> int:
        return sum(1 for followees in self.follows.values() if user in followees)


@dataclass
class Tally:
    """What the workload saw: operations done, errors by code, partial pages."""

    ops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    partial_pages: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str, exc: MurmurError) -> None:
        with self.lock:
            self.errors[exc.code.name] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{what}: {exc}")


class Workload(threading.Thread):
    """One thread of mixed traffic. It alone changes the follows of ``actors``
    and the tweets they write, so its acknowledged order is the true order."""

    def __init__(
        self,
        client: MurmurClient,
        oracle: Oracle,
        tally: Tally,
        actors: list[int],
        users: list[int],
        hot: list[int],
        seed: int,
    ) -> None:
        super().__init__(name=f"workload-{seed}", daemon=True)
        self.client = client
        self.oracle = oracle
        self.tally = tally
        self.actors = actors
        self.users = users
        self.hot = hot
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.own: dict[int, list[int]] = defaultdict(list)  # actor -> its live tweet ids

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.step()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def insist(self, what: str, call: Callable[[], _T], done_if: tuple = ()) -> _T | None:
        """Repeat a write until it is acknowledged: the client already retried
        UNAVAILABLE; what reaches us is counted, then tried again (safely: every
        write here is idempotent or carries a request id). ``done_if``: codes
        that, on a repeat, mean an earlier attempt did the work."""
        deadline = time.monotonic() + RETRY_FOR_S
        repeat = False
        while True:
            try:
                return call()
            except MurmurError as exc:
                if repeat and exc.code in done_if:
                    return None
                repeat = True
                self.tally.error(what, exc)
                if not isinstance(exc, Unavailable) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def read(self, what: str, call: Callable[[], _T]) -> _T | None:
        try:
            return call()
        except MurmurError as exc:
            self.tally.error(what, exc)
            if not isinstance(exc, Unavailable):
                raise
            return None

    def pick_followee(self) -> int:
        return self.rng.choice(self.hot) if self.rng.random() < 0.3 else self.rng.choice(self.users)

    def step(self) -> None:
        rng, oracle, actor = self.rng, self.oracle, self.rng.choice(self.actors)
        roll = rng.random()
        if roll < 0.30:
            text = f"live {uuid.uuid4().hex[:10]}"
            request_id = uuid.uuid4().hex
            tweet = self.insist(
                "post", lambda: self.client.post_tweet(actor, text, request_id=request_id)
            )
            with oracle.lock:
                oracle.tweets[tweet.tweet_id] = (actor, text)
            self.own[actor].append(tweet.tweet_id)
            self.tally.ops["post"] += 1
        elif roll < 0.40:
            followee = self.pick_followee()
            if followee == actor:
                return
            self.insist("follow", lambda: self.client.follow(actor, followee))
            with oracle.lock:
                oracle.follows[actor].add(followee)
            self.tally.ops["follow"] += 1
        elif roll < 0.47:
            with oracle.lock:
                followees = sorted(oracle.follows[actor])
            if not followees:
                return
            followee = rng.choice(followees)
            self.insist("unfollow", lambda: self.client.unfollow(actor, followee))
            with oracle.lock:
                oracle.follows[actor].discard(followee)
            self.tally.ops["unfollow"] += 1
        elif roll < 0.50:
            if not self.own[actor]:
                return
            tweet_id = rng.choice(self.own[actor])
            text = f"edited {uuid.uuid4().hex[:10]}"
            self.insist("edit", lambda: self.client.edit_tweet(tweet_id, actor, text))
            with oracle.lock:
                oracle.tweets[tweet_id] = (actor, text)
            self.tally.ops["edit"] += 1
        elif roll < 0.52:
            if not self.own[actor]:
                return
            tweet_id = self.own[actor].pop(rng.randrange(len(self.own[actor])))
            # a retry after a lost success finds the tweet gone already
            self.insist(
                "delete",
                lambda: self.client.delete_tweet(tweet_id, actor),
                done_if=(NotFound.code,),
            )
            with oracle.lock:
                del oracle.tweets[tweet_id]
                oracle.deleted.add(tweet_id)
            self.tally.ops["delete"] += 1
        elif roll < 0.60:
            if not self.own[actor]:
                return
            tweet_id = rng.choice(self.own[actor])
            tweet = self.read("get_tweet", lambda: self.client.get_tweet(tweet_id))
            if tweet is not None:
                with oracle.lock:
                    expected = oracle.tweets[tweet_id][1]
                assert tweet.text == expected, f"tweet {tweet_id} reads {tweet.text!r}"
            self.tally.ops["get_tweet"] += 1
        elif roll < 0.64:
            user = rng.choice(self.hot)
            self.read("followers", lambda: self.client.list_followers(user, 100))
            self.tally.ops["followers"] += 1
        elif roll < 0.85:
            reader = rng.choice(self.users)
            page = self.read("home", lambda: self.client.home_timeline(reader, PAGE))
            if page is not None and page.partial:
                with self.tally.lock:
                    self.tally.partial_pages += 1
            self.tally.ops["home"] += 1
        else:
            author = rng.choice(self.users)
            self.read("user_timeline", lambda: self.client.user_timeline(author, PAGE))
            self.tally.ops["user_timeline"] += 1


def parallel(fn: Callable[[Any], _T], items: list[Any], workers: int = 8) -> list[_T]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


@dataclass
class Setup:
    procs: Processes
    token: str
    shards: dict[int, Server]
    router: Server
    client: MurmurClient
    admin: AdminClient
    users: list[int]
    stars: list[int]
    borderline: list[int]
    oracle: Oracle


@pytest.fixture
def setup(tmp_path) -> Iterator[Setup]:
    token = secrets.token_hex(16)
    with Processes(tmp_path) as procs:
        shards = {i: procs.shard(i, celebrity_threshold=THRESHOLD) for i in (0, 1)}
        router = procs.router(
            [s.address for s in shards.values()], token, celebrity_threshold=THRESHOLD
        )
        with (
            MurmurClient(router.address, timeout=20) as client,
            AdminClient(router.address, token) as admin,
        ):
            yield _load(procs, token, shards, router, client, admin)


def _load(procs, token, shards, router, client, admin) -> Setup:
    rng = random.Random(7)
    oracle = Oracle()
    users = parallel(lambda i: client.create_user(f"m{i}").user_id, list(range(USERS)))
    stars, borderline = users[:STARS], users[STARS : STARS + BORDERLINE]
    edges: set[tuple[int, int]] = set()
    for star in stars:
        for follower in rng.sample(users[STARS:], 40):
            edges.add((follower, star))
    for account in borderline:
        for follower in rng.sample(users[STARS + BORDERLINE :], THRESHOLD - 2):
            edges.add((follower, account))
    for user in users:
        for followee in rng.sample(users, FOLLOWS_PER_USER):
            if followee != user:
                edges.add((user, followee))
    parallel(lambda e: client.follow(*e), sorted(edges))
    for follower, followee in edges:
        oracle.follows[follower].add(followee)

    def post(i: int) -> None:
        author = users[i % USERS] if i % 5 else rng.choice(stars)
        text = f"before {i}"
        tweet = client.post_tweet(author, text, request_id=f"init-{i}")
        with oracle.lock:
            oracle.tweets[tweet.tweet_id] = (author, text)

    parallel(post, list(range(INITIAL_POSTS)))
    return Setup(procs, token, shards, router, client, admin, users, stars, borderline, oracle)


def drain_stream(stream) -> list:
    return list(stream)


def wait_settled(admin: AdminClient, timeout: float = 30.0) -> None:
    """Until every shard's outbox is empty twice in a row, and consistency checks clean."""
    quiet = 0
    deadline = time.monotonic() + timeout
    while True:
        status = admin.get_cluster_status()
        backlog = sum(admin.get_shard_stats(s.shard_id).outbox_backlog for s in status.shards)
        quiet = quiet + 1 if backlog == 0 else 0
        if quiet >= 2:
            return
        assert time.monotonic() < deadline, f"fan-out did not settle: backlog {backlog}"
        time.sleep(0.2)


def shard_outbox(address: str) -> int:
    import grpc

    with grpc.insecure_channel(address) as channel:
        stats = shard_pb2_grpc.ShardStub(channel).GetStats(shard_pb2.GetStatsRequest(), timeout=10)
    return stats.outbox_backlog


def test_moves_under_load_lose_nothing(setup: Setup) -> None:
    s = setup
    started = time.monotonic()
    tally = Tally()
    actors = s.users[STARS:]
    workers = [
        Workload(s.client, s.oracle, tally, actors[k::2], s.users, s.stars + s.borderline, seed=k)
        for k in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        # a third shard joins and takes its share
        new_shard = s.procs.shard(2, celebrity_threshold=THRESHOLD)
        joined = s.admin.add_shard(new_shard.address)
        assert joined.shard_id == 2
        rebalance = drain_stream(s.admin.rebalance())
        assert rebalance[-1].slots_done == rebalance[-1].slots_total > 0
        counts = {x.shard_id: x.slot_count for x in s.admin.get_cluster_status().shards}
        assert sorted(counts.values()) == [1365, 1365, 1366], counts
        # shard 0 leaves: drained, removed, stopped
        drain = drain_stream(s.admin.drain_shard(0))
        assert drain[-1].slots_done == drain[-1].slots_total == counts[0]
        removed = s.admin.remove_shard(0)
        assert removed.map_version > joined.map_version
        # what shard 0's outbox still holds (deliveries to the other shards' users)
        # is delivered by shard 0 itself: stop it only once that is done
        eventually(lambda: _assert_equal(shard_outbox(s.shards[0].address), 0), timeout=20)
        s.shards[0].kill()
        time.sleep(1.0)
    finally:
        for worker in workers:
            worker.stop.set()
        for worker in workers:
            worker.join(RETRY_FOR_S + 10)
    for worker in workers:
        if worker.failure is not None:
            raise AssertionError(
                f"{worker.name} failed: {worker.failure!r}; errors {dict(tally.errors)}: "
                f"{tally.examples}"
            ) from worker.failure
    moving_s = time.monotonic() - started

    # the workload: only UNAVAILABLE got through the client's retries, and rarely
    total_ops = sum(tally.ops.values())
    assert total_ops > 300, tally.ops
    other = {code: n for code, n in tally.errors.items() if code != "UNAVAILABLE"}
    assert not other, f"unexpected errors {other}: {tally.examples}"
    assert tally.errors["UNAVAILABLE"] <= max(10, total_ops // 50), tally.examples

    status = s.admin.get_cluster_status()
    assert {x.shard_id: x.slot_count for x in status.shards} == {1: 2048, 2: 2048}
    assert all(x.health == "SERVING" for x in status.shards)
    wait_settled(s.admin)
    report = s.admin.check_consistency()
    assert (report.one_sided_edges, report.wrong_counters) == (0, 0), report.findings
    assert report.stale_outbox_records == 0

    oracle = s.oracle
    client = s.client

    # every acknowledged live tweet reads back with its last text; deleted ones are gone
    def read_back(tweet_id: int) -> None:
        assert client.get_tweet(tweet_id).text == oracle.tweets[tweet_id][1], tweet_id

    parallel(read_back, sorted(oracle.tweets))

    def gone(tweet_id: int) -> None:
        with pytest.raises(NotFound):
            client.get_tweet(tweet_id)

    parallel(gone, sorted(oracle.deleted))

    # counters equal the lists they count, and the oracle
    def counters(user_id: int) -> None:
        user = client.get_user(user_id=user_id)
        followers = [u.user_id for u in client.iter_followers(user_id, page_size=200)]
        following = [u.user_id for u in client.iter_following(user_id, page_size=200)]
        assert user.follower_count == len(followers) == oracle.follower_count(user_id), user
        assert sorted(following) == sorted(oracle.follows[user_id]), user_id
        assert user.following_count == len(following), user
        own = oracle.own(user_id)
        assert user.tweet_count == len(own), user
        timeline = [t.tweet_id for t in client.iter_user_timeline(user_id, limit=30)]
        assert timeline == own[:30], user_id

    parallel(counters, s.users)

    # home timelines: the first two pages equal the join of acknowledged operations
    rng = random.Random(11)
    sample = rng.sample(s.users[STARS:], SAMPLE - 2) + s.stars[:1] + s.borderline[:1]

    def home(reader: int) -> None:
        pages = [client.home_timeline(reader, PAGE)]
        if pages[0].next_page_token:
            pages.append(client.home_timeline(reader, PAGE, pages[0].next_page_token))
        assert not any(page.partial for page in pages), reader
        got = [(t.tweet_id, t.user_id, t.text) for page in pages for t in page.tweets]
        assert got == oracle.home(reader, 2 * PAGE), reader

    parallel(home, sample)
    celebrities = [u for u in s.users if client.get_user(user_id=u).celebrity]
    assert set(s.stars) <= set(celebrities)
    print(
        f"\nworkload {dict(tally.ops)} errors {dict(tally.errors)} partial pages "
        f"{tally.partial_pages}; "
        f"moves {moving_s:.1f}s; celebrities {len(celebrities)}"
    )


def _assert_equal(actual: Any, expected: Any) -> None:
    assert actual == expected, f"{actual!r} != {expected!r}"


# -- a router whose slot map is stale ------------------------------------------------


@dataclass
class TwoRouters:
    mover: MurmurClient  # the router that runs the moves
    other: MurmurClient  # a second router behind the same load balancer
    admin: AdminClient


@pytest.fixture
def two_routers(tmp_path) -> Iterator[TwoRouters]:
    token = secrets.token_hex(16)
    with Processes(tmp_path) as procs:
        addresses = [procs.shard(i).address for i in (0, 1)]
        mover = procs.router(addresses, token, celebrity_threshold=3)
        other = procs.router(addresses, None, name="router-b")
        with MurmurClient(mover.address) as a, MurmurClient(other.address) as b:
            with AdminClient(mover.address, token) as admin:
                yield TwoRouters(a, b, admin)


def _move_away(admin: AdminClient, user_id: int) -> None:
    slot = slot_for_user(user_id)
    owner = next(
        s.shard_id
        for s in admin.get_cluster_status().shards
        if any(r.start <= slot <= r.end for r in s.slots)
    )
    progress = list(admin.move_slots([slot], 1 - owner))
    assert progress[-1].slots_done == 1


def _celebrity_and_fans(routers: TwoRouters) -> tuple[int, list[int], int]:
    murmur = routers.mover
    star = murmur.create_user(f"star{secrets.token_hex(3)}").user_id
    fans = [murmur.create_user(f"fan{secrets.token_hex(3)}").user_id for _ in range(4)]
    for fan in fans:
        murmur.follow(fan, star)
    tweet = murmur.post_tweet(star, "from the star").tweet_id
    # the star turns celebrity at its third follower; wait for the fourth too
    eventually(lambda: _assert_equal(murmur.get_user(user_id=star).follower_count, len(fans)))
    eventually(lambda: _assert_equal(murmur.get_user(user_id=star).celebrity, True))
    # the fans' shards learn of the promotion through the outbox; until then a
    # tweet posted after it is neither in their inboxes nor pulled
    home = lambda fan: [t.tweet_id for t in murmur.home_timeline(fan).tweets]  # noqa: E731
    eventually(lambda: _assert_equal([home(fan) for fan in fans], [[tweet]] * len(fans)))
    return star, fans, tweet


def test_stale_router_home_timeline_after_move(two_routers: TwoRouters) -> None:
    star, fans, tweet = _celebrity_and_fans(two_routers)
    reader = next(f for f in fans if slot_for_user(f) != slot_for_user(star))
    assert [t.tweet_id for t in two_routers.other.home_timeline(reader).tweets] == [tweet]
    _move_away(two_routers.admin, star)
    # the second router still maps the star's slot to the old owner
    assert [t.tweet_id for t in two_routers.other.home_timeline(reader).tweets] == [tweet]


def test_stale_router_list_followers_after_move(two_routers: TwoRouters) -> None:
    star, fans, _ = _celebrity_and_fans(two_routers)
    listed = lambda: sorted(u.user_id for u in two_routers.other.iter_followers(star))  # noqa: E731
    assert listed() == sorted(fans)
    moved = next(f for f in fans if slot_for_user(f) != slot_for_user(star))
    _move_away(two_routers.admin, moved)
    assert listed() == sorted(fans)


def test_move_again_after_a_cancelled_move(two_routers: TwoRouters) -> None:
    murmur, admin = two_routers.mover, two_routers.admin
    users = parallel(lambda i: murmur.create_user(f"c{i}").user_id, list(range(200)))
    parallel(lambda i: murmur.post_tweet(users[i % 200], f"t{i}"), list(range(600)))
    before = {s.shard_id: s.slot_count for s in admin.get_cluster_status().shards}
    source = min(before)
    slots = range(source * 2048, source * 2048 + 256)
    stream = admin.move_slots(slots, 1 - source)
    for progress in stream:
        if progress.step.endswith("deleting source copy"):  # the first chunk was handed over
            break
    else:
        pytest.fail("the move ended without a 'deleting source copy' step: nothing was cancelled")
    stream.close()  # the operator pressed Ctrl-C

    # moving again at once: the new call first learns from the shards where the
    # slots are (the cancelled call's own clean-up may not have run yet)
    progress = list(admin.move_slots(slots, 1 - source))
    assert progress[-1].slots_done == progress[-1].slots_total == len(slots)
    status = admin.get_cluster_status()
    after = {s.shard_id: s.slot_count for s in status.shards}
    assert after == {source: before[source] - 256, 1 - source: before[1 - source] + 256}
    # the source dropped its copy of the chunk whose deletion the Ctrl-C cut short
    held = Counter()
    for shard in status.shards:
        held.update(shard.key_counts)
    assert (held["users"], held["tweets"]) == (200, 600), dict(held)

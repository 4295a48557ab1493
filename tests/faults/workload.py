"""A mixed workload whose every write is retried until acknowledged, so the
oracle knows the outcome of every operation even while processes die.

Posts carry request ids (a retry returns the first tweet), follows and
unfollows are idempotent, profile updates set a value (one workload thread
makes them in turn, so the last acknowledged is the one that must hold), and
a delete retried after an unknown outcome that answers NOT_FOUND was
applied. Reads tolerate failures and are counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from client import MurmurClient
from client.errors import MurmurError, NotFound
from tests.timeline.oracle import JoinOracle

RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
GIVE_UP_S = 90.0


class LostOutcome(AssertionError):
    """A write could not be acknowledged within ``give_up_s`` (GIVE_UP_S unless
    the test says otherwise): the test fails."""


class Workload:
    def __init__(
        self,
        target: Callable[[], str],
        users: list[int],
        oracle: JoinOracle,
        texts: list[str],
        seed: int = 1,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.target = target
        self.give_up_s = give_up_s
        self.users = users
        self.oracle = oracle
        self.texts = texts
        self.rng = random.Random(seed)
        self.errors: Counter = Counter()
        self.ops: Counter = Counter()
        self._client: MurmurClient | None = None
        self._client_target = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self._seq = 0
        self.bios: dict[int, str] = {}  # user -> the bio last acknowledged

    # plumbing ---------------------------------------------------------------
    def client(self) -> MurmurClient:
        target = self.target()
        if self._client is None or target != self._client_target:
            if self._client is not None:
                self._client.close()
            self._client = MurmurClient(target, timeout=5.0)
            self._client_target = target
        return self._client

    def until_acknowledged(self, name: str, call: Callable[[MurmurClient], object]) -> object:
        deadline = time.monotonic() + self.give_up_s
        attempt = 0
        while True:
            try:
                result = call(self.client())
                self.ops[name] += 1
                return result
            except NotFound:
                if name == "delete" and attempt > 0:
                    self.ops[name] += 1
                    return None
                raise
            except MurmurError as exc:
                self.errors[exc.code.name] += 1
                if exc.code.name not in RETRYABLE or time.monotonic() > deadline:
                    raise LostOutcome(f"{name} never acknowledged: {exc}") from exc
                attempt += 1
                time.sleep(min(1.0, 0.05 * 2**attempt))

    # operations -------------------------------------------------------------
    def post(self) -> None:
        author = self.rng.choice(self.users)
        self._seq += 1
        request_id = f"w{id(self)}-{self._seq}"
        text = self.texts[self._seq % len(self.texts)]
        tweet = self.until_acknowledged(
            "post", lambda c: c.post_tweet(author, text, request_id=request_id)
        )
        self.oracle.post(tweet.tweet_id, tweet.user_id, tweet.text)

    def follow(self) -> None:
        a, b = self.rng.sample(self.users, 2)
        self.until_acknowledged("follow", lambda c: c.follow(a, b))
        self.oracle.follow(a, b)

    def unfollow(self) -> None:
        a = self.rng.choice(self.users)
        if not self.oracle.follows[a]:
            return
        b = self.rng.choice(sorted(self.oracle.follows[a]))
        self.until_acknowledged("unfollow", lambda c: c.unfollow(a, b))
        self.oracle.unfollow(a, b)

    def edit(self) -> None:
        if not self.oracle.tweets:
            return
        tweet_id = self.rng.choice(list(self.oracle.tweets))
        author, _ = self.oracle.tweets[tweet_id]
        edited = self.until_acknowledged(
            "edit", lambda c: c.edit_tweet(tweet_id, author, f"edited {tweet_id}")
        )
        self.oracle.edit(tweet_id, edited.text)

    def update_profile(self) -> None:
        user = self.rng.choice(self.users)
        self._seq += 1
        bio = f"bio {self._seq}"
        self.until_acknowledged("update_user", lambda c: c.update_user(user, bio=bio))
        self.bios[user] = bio

    def delete(self) -> None:
        if not self.oracle.tweets:
            return
        tweet_id = self.rng.choice(list(self.oracle.tweets))
        author, _ = self.oracle.tweets[tweet_id]
        self.until_acknowledged("delete", lambda c: c.delete_tweet(tweet_id, author))
        self.oracle.delete(tweet_id)

    def read(self) -> None:
        reader = self.rng.choice(self.users)
        try:
            if self.rng.random() < 0.66:
                self.client().home_timeline(reader)
            else:
                self.client().user_timeline(reader)
            self.ops["read"] += 1
        except MurmurError as exc:
            self.errors[exc.code.name] += 1

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            self.post()
        elif roll < 0.45:
            self.follow()
        elif roll < 0.50:
            self.unfollow()
        elif roll < 0.53:
            self.edit()
        elif roll < 0.56:
            self.delete()
        elif roll < 0.58:
            self.update_profile()
        else:
            self.read()

    # running in the background ----------------------------------------------
    def start(self) -> None:
        def loop() -> None:
            try:
                while not self._stop.is_set():
                    self.step()
            except BaseException as exc:  # surfaced by stop()
                self.failure = exc

        self._thread = threading.Thread(target=loop, name="workload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.give_up_s + 30)
        if self._client is not None:
            self._client.close()
        if self.failure is not None:
            raise self.failure


def verify(
    client: MurmurClient,
    oracle: JoinOracle,
    users: list[int],
    readers: list[int],
    bios: dict[int, str] | None = None,
) -> None:
    """Every acknowledged write is there exactly once; counters are exact;
    home timelines equal the join; each profile holds its last acknowledged bio."""
    for tweet_id, (author, text) in oracle.tweets.items():
        tweet = client.get_tweet(tweet_id)
        assert (tweet.user_id, tweet.text) == (author, text), tweet_id
    for user in users:
        got = client.get_user(user_id=user)
        mine = sum(1 for author, _ in oracle.tweets.values() if author == user)
        assert got.tweet_count == mine, f"tweet_count of {user}"
        assert got.following_count == len(oracle.follows[user]), f"following_count of {user}"
        assert got.follower_count == oracle.followers_of(user), f"follower_count of {user}"
        if bios and user in bios:
            assert got.bio == bios[user], f"bio of {user}"
    for reader in readers:
        ids = [t.tweet_id for t in client.iter_home_timeline(reader, page_size=100, limit=300)]
        assert len(ids) == len(set(ids)), f"duplicate in home of {reader}"
        page = client.home_timeline(reader, page_size=50)
        got = [(t.tweet_id, t.user_id, t.text) for t in page.tweets]
        assert got == oracle.home(reader, 0, 50), f"home of {reader}"

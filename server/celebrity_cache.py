"""The router's short-lived copy of celebrities' recent tweets.

A celebrity is, by definition, read by many: without a copy, every home
read of each of their followers pulls their timeline from its shard, and
on one box those pulls cost as much as the reads themselves. The router
keeps each celebrity's newest ``depth`` tweets for ``ttl_s`` seconds, as
(tweet_id, serialized tweet) pairs that a page is built from without
copying messages, and pulls only those it has no fresh copy of.

What it costs: a celebrity's new tweet, edit or delete reaches home
timelines served by another router up to ``ttl_s`` later (50 ms by
default), the same kind of lag an ordinary author's tweet has while fan-out
delivers it (tens of milliseconds). Writes through this router drop the
author's copy at once. ``ttl_s = 0`` turns the cache off. Only first pages
use it; scrolling further back always pulls.

Renewal: reads drive it, so an idle router makes no calls. When a read finds
a copy past half its life, every celebrity some read wanted within the last
``ttl_s`` is renewed from each shard whose last renewal began at least a
half-life ago and has returned: one call per shard, or a few when its copies
pass the per-call tweet cap. Renewing only the copies a read happened to see
aging left the others to expire between reads: on the benchmark's graph at
c16, home reads then pulled 0.21 celebrities each themselves, against 0.01
this way. The price: a celebrity read less often than once per half-life is
renewed up to twice per read. Renewing only copies read since they were
taken would bound that at once per read, but it drops the renewal that keeps
a copy alive until its readers' next visit: in two alternating pairs of
runs, reads then pulled 0.05-0.63 celebrities each against 0.01-0.16 (the
machine's speed varied threefold across them).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from murmur.loop_metrics import LoopCounter
from murmur.raw_tweets import RawTweet

LOOKUPS = LoopCounter(
    "murmur_router_celebrity_copies",
    "Celebrity timelines a home read needed: served from the router's copy, or pulled",
    ["result"],
)
SERVED_FROM_COPY = LOOKUPS.labels("copy")
PULLED = LOOKUPS.labels("pulled")

DEFAULT_TTL_S = 0.05
# the largest first page served from copies: the default page size, read one
# deeper to learn whether a next page exists
DEFAULT_DEPTH = 21
DEFAULT_CAPACITY = 4_096  # celebrities kept; the oldest copies go first


class CelebrityTimelines:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        depth: int = DEFAULT_DEPTH,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.depth = depth
        self.capacity = capacity
        self.clock = clock
        self._copies: dict[int, tuple[float, list[RawTweet]]] = {}
        self._refreshing: set[int] = set()  # shards with a background refresh in flight
        self._started: dict[int, float] = {}  # shard -> when its last renewal began
        self._last_look = float("-inf")  # when renewals() last listed the wanted
        self._wanted_at: dict[int, float] = {}  # celebrity -> the last read that wanted it
        self._prune_at = capacity  # _wanted_at's size that makes store() prune it
        self._fills = 0  # pulls in flight whose results will be kept
        self._forgotten: dict[int, float] = {}  # author -> when, while pulls are in flight
        self.hits = 0
        self.misses = 0

    def serves(self, before_id: int, limit: int) -> bool:
        """Whether a page with these bounds can be answered from copies."""
        return self.ttl_s > 0 and before_id == 0 and limit <= self.depth

    def lookup(self, celebrities: list[int]) -> tuple[list[RawTweet], list[int], bool]:
        """The usable copies' tweets, the celebrities that must be pulled
        now (no copy, or one older than ``ttl_s``), and whether a copy
        served is past half its life: time to renew (``renewals``), so that
        a busy router's readers never wait for a pull."""
        now = self.clock()
        tweets: list[RawTweet] = []
        missing: list[int] = []
        aging = False
        wanted_at = self._wanted_at
        for celebrity in celebrities:
            wanted_at[celebrity] = now
            copy = self._copies.get(celebrity)
            age = now - copy[0] if copy is not None else self.ttl_s
            if age >= self.ttl_s:
                missing.append(celebrity)
                continue
            tweets.extend(copy[1])  # type: ignore[index]
            if age >= self.ttl_s / 2:
                aging = True
        served = len(celebrities) - len(missing)
        self.hits += served
        self.misses += len(missing)
        SERVED_FROM_COPY.inc(served)
        PULLED.inc(len(missing))
        return tweets, missing, aging

    def begin_fill(self) -> float:
        """Call before a pull whose results will be stored; the time it
        returns is the copies' age stamp (taken before the pull, so a copy
        never looks fresher than it is). Pair with ``end_fill``."""
        self._fills += 1
        return self.clock()

    def end_fill(self) -> None:
        self._fills -= 1
        if self._fills == 0:
            self._forgotten.clear()

    def store(self, fetched_at: float, pulled: dict[int, list[RawTweet]]) -> None:
        """Keep each celebrity's newest tweets (``depth`` of them, or all
        there are), except those who wrote through this router after the
        pull began: their copy could miss that write."""
        copies = self._copies
        if len(self._wanted_at) > self._prune_at:  # reads that found no copy to age
            self._forget_unwanted(self.clock())
        for celebrity, tweets in pulled.items():
            if self._forgotten.get(celebrity, float("-inf")) >= fetched_at:
                continue
            if celebrity not in copies and len(copies) >= self.capacity:
                for old in list(itertools.islice(copies, max(1, self.capacity // 8))):
                    del copies[old]
            copies[celebrity] = (fetched_at, tweets)

    def renewals(self) -> list[int]:
        """The celebrities to renew: every one a read wanted within the last
        ``ttl_s`` (the latest ``capacity`` of them), or none if they were
        listed within the last quarter-life. Call when a read found a copy
        aging; ``start_refresh`` then says which shards are due. The list is
        taken twice per half-life so that a shard skipped because its last
        renewal was still out is taken up soon after it returns."""
        now = self.clock()
        if now - self._last_look < self.ttl_s / 4:
            return []
        self._last_look = now
        self._forget_unwanted(now)
        wanted = self._wanted_at
        if len(wanted) > self.capacity:
            return heapq.nlargest(self.capacity, wanted, key=wanted.__getitem__)
        return list(wanted)

    def _forget_unwanted(self, now: float) -> None:
        cutoff = now - self.ttl_s
        self._wanted_at = {c: at for c, at in self._wanted_at.items() if at >= cutoff}
        self._prune_at = max(self.capacity, 2 * len(self._wanted_at))

    def start_refresh(self, shard_id: int) -> bool:
        """Whether a renewal from ``shard_id`` may start now: none is in
        flight and none began within the last half-life. Pair a True with
        ``refresh_done``."""
        now = self.clock()
        if shard_id in self._refreshing:
            return False
        if now - self._started.get(shard_id, float("-inf")) < self.ttl_s / 2:
            return False
        self._refreshing.add(shard_id)
        self._started[shard_id] = now
        return True

    def refresh_done(self, shard_id: int) -> None:
        self._refreshing.discard(shard_id)

    def forget(self, user_id: int) -> None:
        """The user wrote through this router: their next read pulls again,
        and a pull already in flight does not bring the old copy back."""
        self._copies.pop(user_id, None)
        if self._fills:
            self._forgotten[user_id] = self.clock()

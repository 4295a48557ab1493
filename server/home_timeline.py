"""The home-timeline merge: inbox page + celebrity pulls (+ pulls below the
inbox's exact watermark), merged by tweet id.

Why this is exact: the reader's inbox holds every tweet of ordinary followees
(and the reader's own) with id >= exact_from, so its page is the newest
ordinary part; celebrities are never in it and are pulled from their own
shards; if the page ran below exact_from, the ordinary followees are pulled
below that line too. The newest ``limit`` of the union is the join's answer.
Every pull is one batched call per shard, and each shard returns only its
newest ``limit`` (all the merge can use).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc

from murmur.errors import ServiceError
from murmur.raw_tweets import RawTweet, repeated_field
from murmur.v1 import murmur_pb2, shard_pb2
from murmur.validation import MAX_PER_AUTHOR_TWEETS
from server.celebrity_cache import CelebrityTimelines
from server.shard_pool import ShardPool

DEGRADABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
log = logging.getLogger("murmur.router.home")
_REFRESHES: set[asyncio.Task] = set()
PULL_BUDGET_S = 2.0  # a silent celebrity shard costs a read at most this, then "partial"


def pull_timeout(remaining: float | None) -> float:
    """Leave a fifth of the caller's time to answer with a partial page."""
    if remaining is None:
        return PULL_BUDGET_S
    return max(0.01, min(PULL_BUDGET_S, remaining * 0.8))


def merged_page(
    inbox: shard_pb2.ReadInboxResponse, others: Iterable[RawTweet], limit: int
) -> murmur_pb2.TimelineResponse:
    """The newest ``limit`` of the inbox page and ``others``, deduplicated
    by id (later copies win: pulled originals over inbox copies).

    Merging goes by the ids alone (``page_ids``) and builds the answer from
    serialized tweets: opening and copying every candidate message cost ~2x
    as much, and ~70% of home reads on the benchmark's graph follow a
    celebrity. The inbox page comes serialized (``page_raw``) from shards
    that were asked for it; from an older shard's ``page`` only the tweets
    that made the answer are serialized again."""
    ids = inbox.page_ids
    raws = inbox.page_raw
    tweets = inbox.page.tweets
    held = len(raws) or len(tweets)
    if len(ids) != held or (raws and tweets):
        raise ServiceError(
            grpc.StatusCode.INTERNAL,
            f"ReadInbox answered {len(tweets)} tweets and {len(raws)} serialized"
            f" with {len(ids)} page_ids",
        )
    by_id: dict[int, int | bytes] = dict(zip(ids, raws or range(held), strict=True))
    by_id.update(others)
    chosen = []
    for tweet_id in sorted(by_id, reverse=True)[:limit]:
        entry = by_id[tweet_id]
        chosen.append(entry if isinstance(entry, bytes) else tweets[entry].SerializeToString())
    return murmur_pb2.TimelineResponse.FromString(repeated_field(chosen))


def as_raw(tweets: Iterable[murmur_pb2.Tweet]) -> list[RawTweet]:
    """Pulled tweets in the form ``merged_page`` merges (pulls are the rarer
    path: cache misses and pages below an inbox's exact range)."""
    return [(tweet.tweet_id, tweet.SerializeToString()) for tweet in tweets]


async def pull_groups(
    pool: ShardPool,
    groups: dict[int, list[int]],
    before_id: int,
    limit: int,
    timeout: float | None,
    per_author: bool = False,
) -> tuple[list[murmur_pb2.Tweet], list[int]]:
    """One PullTimelines call per shard, in parallel. A shard that does not
    answer is reported, not fatal: the page is then marked partial."""
    shard_ids = list(groups)
    if not shard_ids:
        return [], []
    calls = [
        pool.call(
            shard_id,
            "PullTimelines",
            shard_pb2.PullTimelinesRequest(
                author_ids=groups[shard_id],
                before_id=before_id,
                limit=limit,
                per_author=per_author,
            ),
            timeout,
        )
        for shard_id in shard_ids
    ]
    if len(calls) == 1:
        try:
            results = [await calls[0]]
        except ServiceError as exc:
            results = [exc]
    else:
        results = await asyncio.gather(*calls, return_exceptions=True)
    tweets: list[murmur_pb2.Tweet] = []
    missing: list[int] = []
    for shard_id, result in zip(shard_ids, results, strict=True):
        if isinstance(result, ServiceError) and result.code in DEGRADABLE:
            missing.append(shard_id)
        elif isinstance(result, BaseException):
            raise result
        else:
            tweets.extend(result.tweets)
    return tweets, missing


async def pull_raw(
    pool: ShardPool,
    groups: dict[int, list[int]],
    before_id: int,
    limit: int,
    timeout: float | None,
) -> tuple[list[RawTweet], list[int]]:
    """``pull_groups`` for the merge: its tweets as (tweet_id, raw) pairs."""
    tweets, missing = await pull_groups(pool, groups, before_id, limit, timeout)
    return as_raw(tweets), missing


def copies_per_call(copies: CelebrityTimelines) -> int:
    """How many celebrities' copies one PullTimelines call may carry."""
    return max(1, MAX_PER_AUTHOR_TWEETS // copies.depth)


async def pull_into_copies(
    pool: ShardPool,
    copies: CelebrityTimelines,
    groups: dict[int, list[int]],
    limit: int,
    timeout: float | None,
) -> tuple[list[RawTweet], list[int]]:
    """Pull celebrities the router has no fresh copy of, each one's newest
    ``copies.depth`` tweets, and keep them. A shard holding more of them
    than one per-author call may carry is pulled the plain way, uncopied."""
    per_call = copies_per_call(copies)
    copied = {shard: ids for shard, ids in groups.items() if len(ids) <= per_call}
    plain = {shard: ids for shard, ids in groups.items() if len(ids) > per_call}
    pulls = [pull_groups(pool, copied, 0, copies.depth, timeout, per_author=True)]
    if plain:
        pulls.append(pull_groups(pool, plain, 0, limit, timeout))
    fetched_at = copies.begin_fill()
    try:
        results = await asyncio.gather(*pulls)
        tweets, missing = results[0]
        by_author: dict[int, list[RawTweet]] = {
            author: [] for shard, ids in copied.items() if shard not in missing for author in ids
        }
        for tweet in tweets:
            by_author[tweet.user_id].append((tweet.tweet_id, tweet.SerializeToString()))
        copies.store(fetched_at, by_author)
    finally:
        copies.end_fill()
    pulled = [pair for pairs in by_author.values() for pair in pairs]
    for more, more_missing in results[1:]:
        pulled.extend(as_raw(more))
        missing = [*missing, *more_missing]
    return pulled, missing


def refresh_in_background(pool: ShardPool, copies: CelebrityTimelines) -> None:
    """A read found a copy past half its life: renew the copies reads want,
    from each shard that is due (``CelebrityTimelines.start_refresh``)."""
    wanted = copies.renewals()
    if not wanted:
        return
    for shard_id, ids in pool.table.group_users(wanted).items():
        if not copies.start_refresh(shard_id):
            continue
        task = asyncio.get_running_loop().create_task(_refresh(pool, copies, shard_id, ids))
        _REFRESHES.add(task)  # keep a reference until it is done
        task.add_done_callback(_REFRESHES.discard)


async def _refresh(pool: ShardPool, copies: CelebrityTimelines, shard_id: int, ids: list[int]):
    """Renew one shard's copies: one call, or several in parallel when they
    pass the per-call tweet cap (one call of more would be pulled uncopied).
    A failed call is left alone: its copies expire and their readers pull
    (and re-learn the slot map, if that was stale)."""
    per_call = copies_per_call(copies)
    calls = [
        pull_into_copies(
            pool, copies, {shard_id: ids[i : i + per_call]}, copies.depth, PULL_BUDGET_S
        )
        for i in range(0, len(ids), per_call)
    ]
    try:
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        copies.refresh_done(shard_id)
    for result in results:
        if isinstance(result, Exception):
            log.debug("background refresh from shard %d failed: %s", shard_id, result)


async def merge_home(
    pool: ShardPool,
    inbox: shard_pb2.ReadInboxResponse,
    before_id: int,
    limit: int,
    timeout: float | None,
    copies: CelebrityTimelines | None = None,
) -> murmur_pb2.TimelineResponse:
    """The home page, without its next_page_token. In the common case the
    shard's page is already the answer and is returned as it is: copying
    20 tweets into a new message costs ~24 µs of the router's time."""
    if not inbox.celebrity_ids and not inbox.needs_pull_below:
        return inbox.page  # the common case: one shard read, done
    table = pool.table
    timeout = pull_timeout(timeout)
    celebrities = list(inbox.celebrity_ids)
    copied: list[RawTweet] = []
    pulls = []
    if copies is not None and copies.serves(before_id, limit):
        copied, celebrities, aging = copies.lookup(celebrities)
        if aging:
            refresh_in_background(pool, copies)
        if celebrities:
            groups = table.group_users(celebrities)
            pulls.append(pull_into_copies(pool, copies, groups, limit, timeout))
    elif celebrities:
        groups = table.group_users(celebrities)
        pulls.append(pull_raw(pool, groups, before_id, limit, timeout))
    if inbox.needs_pull_below:
        below = min(before_id, inbox.exact_from) if before_id else inbox.exact_from
        groups = table.group_users(list(inbox.pull_below_ids))
        pulls.append(pull_raw(pool, groups, below, limit, timeout))
    if not pulls:  # every celebrity's tweets were at hand
        return merged_page(inbox, copied, limit)
    results = [await pulls[0]] if len(pulls) == 1 else await asyncio.gather(*pulls)
    pulled = [pair for tweets, _ in results for pair in tweets]
    missing = sorted({shard for _, shards in results for shard in shards})
    page = merged_page(inbox, [*copied, *pulled], limit)
    page.partial = bool(missing)
    page.unavailable_shards.extend(missing)
    return page

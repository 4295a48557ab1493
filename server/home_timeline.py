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
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from murmur.errors import ServiceError
from murmur.v1 import murmur_pb2, shard_pb2
from server.shard_pool import ShardPool

DEGRADABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
PULL_BUDGET_S = 2.0  # a silent celebrity shard costs a read at most this, then "partial"


def pull_timeout(remaining: float | None) -> float:
    """Leave a fifth of the caller's time to answer with a partial page."""
    if remaining is None:
        return PULL_BUDGET_S
    return max(0.01, min(PULL_BUDGET_S, remaining * 0.8))


@dataclass
class MergedPage:
    tweets: list[murmur_pb2.Tweet]
    unavailable_shards: list[int] = field(default_factory=list)


def newest(tweets: Iterable[murmur_pb2.Tweet], limit: int) -> list[murmur_pb2.Tweet]:
    """Dedupe by id (later copies win: pulled originals over inbox copies)."""
    by_id: dict[int, murmur_pb2.Tweet] = {}
    for tweet in tweets:
        by_id[tweet.tweet_id] = tweet
    return sorted(by_id.values(), key=lambda t: t.tweet_id, reverse=True)[:limit]


async def pull_groups(
    pool: ShardPool,
    groups: dict[int, list[int]],
    before_id: int,
    limit: int,
    timeout: float | None,
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
                author_ids=groups[shard_id], before_id=before_id, limit=limit
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


async def merge_home(
    pool: ShardPool,
    inbox: shard_pb2.ReadInboxResponse,
    before_id: int,
    limit: int,
    timeout: float | None,
) -> MergedPage:
    if not inbox.celebrity_ids and not inbox.needs_pull_below:
        return MergedPage(list(inbox.entries))  # the common case: one shard read, done
    table = pool.table
    timeout = pull_timeout(timeout)
    pulls = [
        pull_groups(pool, table.group_users(list(inbox.celebrity_ids)), before_id, limit, timeout)
    ]
    if inbox.needs_pull_below:
        below = min(before_id, inbox.exact_from) if before_id else inbox.exact_from
        groups = table.group_users(list(inbox.pull_below_ids))
        pulls.append(pull_groups(pool, groups, below, limit, timeout))
    results = [await pulls[0]] if len(pulls) == 1 else await asyncio.gather(*pulls)
    pulled = [tweet for tweets, _ in results for tweet in tweets]
    missing = sorted({shard for _, shards in results for shard in shards})
    return MergedPage(newest([*inbox.entries, *pulled], limit), missing)

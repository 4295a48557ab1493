"""Fan-out measurements made from the bench process: delivery probes (post,
then poll a follower's home timeline until the tweet is there) and bursts
timed with the shards' fan-out log lines (``fanout round delivered
tweet=<id> followers=<n> lag_ms=<ms>; tweet=...``, one line per round)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import NamedTuple

import grpc

from bench.loader import call_retrying
from murmur.ids import millis_of_id
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc

FANOUT_LINE = re.compile(r"fanout round delivered (.*)")
FANOUT_TWEET = re.compile(r"tweet=(\d+) followers=(\d+) lag_ms=(\d+)")
POLL_INTERVAL_S = 0.005


async def probe_one(
    stub: pb_grpc.MurmurStub,
    author: int,
    watcher: int,
    followers: int,
    text: str,
    tag: str,
    timeout_s: float = 10.0,
) -> dict:
    """Post as ``author``; poll ``watcher``'s home until the tweet appears."""
    sent = time.perf_counter()
    tweet = await call_retrying(
        stub.PostTweet, pb.PostTweetRequest(user_id=author, text=text, request_id=tag)
    )
    acked = time.perf_counter()
    polls = 0
    while True:
        polls += 1
        try:
            page = await stub.GetHomeTimeline(
                pb.GetHomeTimelineRequest(user_id=watcher, page_size=50), timeout=5.0
            )
            if any(t.tweet_id == tweet.tweet_id for t in page.tweets):
                seen = time.perf_counter()
                return {
                    "author": author,
                    "followers": followers,
                    "tweet_id": tweet.tweet_id,
                    "post_ms": round((acked - sent) * 1000, 3),
                    "visible_ms": round((seen - sent) * 1000, 3),
                    "polls": polls,
                    "timed_out": False,
                }
        except grpc.aio.AioRpcError:
            pass
        if time.perf_counter() - sent > timeout_s:
            return {
                "author": author,
                "followers": followers,
                "tweet_id": tweet.tweet_id,
                "post_ms": round((acked - sent) * 1000, 3),
                "visible_ms": None,
                "polls": polls,
                "timed_out": True,
            }
        await asyncio.sleep(POLL_INTERVAL_S)


def interleaved(groups: list[list]) -> list:
    """The groups' items taken in turn, one from each group while it lasts.

    Probes run a few at a time from the front of their list. Listed bucket
    by bucket, the biggest authors' probes ran together at its end, each
    waiting behind the others' fan-out (four posts of a 9,000-follower
    account at once are a burst of 36,000 entries, not a post); taken in
    turn, the probes running at any moment are of different sizes."""
    order = []
    for index in range(max(map(len, groups), default=0)):
        order.extend(group[index] for group in groups if index < len(group))
    return order


async def run_probes(
    stub: pb_grpc.MurmurStub,
    targets: list[tuple[int, int, int]],
    texts: list[str],
    tag: str,
    concurrency: int = 4,
    deadline_s: float = 120.0,
) -> list[dict]:
    """targets: (author id, watcher id, follower count). Bounded in count and time."""
    results: list[dict] = []
    queue = list(enumerate(targets))
    stop_at = time.monotonic() + deadline_s

    async def worker() -> None:
        while queue and time.monotonic() < stop_at:
            index, (author, watcher, followers) = queue.pop(0)
            results.append(
                await probe_one(
                    stub, author, watcher, followers, texts[index % len(texts)], f"{tag}-{index}"
                )
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def log_offsets(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_size if p.exists() else 0 for p in paths}


def fanout_lines(offsets: dict[Path, int]) -> dict[int, tuple[int, int]]:
    """tweet id -> (followers in the last page, lag_ms) from the logs' new part."""
    found: dict[int, tuple[int, int]] = {}
    for path, offset in offsets.items():
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            continue
        for line in FANOUT_LINE.finditer(text):
            for match in FANOUT_TWEET.finditer(line.group(1)):
                found[int(match.group(1))] = (int(match.group(2)), int(match.group(3)))
    return found


class BurstPost(NamedTuple):
    """One acknowledged post of a burst: what the rate and the waits need."""

    tweet_id: int
    followers: int
    author: int


async def burst(
    stub: pb_grpc.MurmurStub,
    authors: list[tuple[int, int, int]],
    posts_per_author: int,
    texts: list[str],
    tag: str,
    logs: list[Path] | None,
    timeout_s: float = 90.0,
) -> dict:
    """Every author posts ``posts_per_author`` tweets at once; fan-out rate is
    inbox entries / (last delivery finished - first post sent)."""
    offsets = log_offsets(logs) if logs else {}
    jobs = [(a, f, k) for (a, _w, f) in authors for k in range(posts_per_author)]
    started_ms = time.time() * 1000
    started = time.perf_counter()
    posted = await _post_all(stub, jobs, texts, tag)
    posting_s = time.perf_counter() - started
    entries = sum(post.followers for post in posted)
    result: dict = {
        "authors": [{"author": a, "followers": f} for a, _, f in authors],
        "posts": len(posted),
        "posts_per_author": posts_per_author,
        "inbox_entries": entries,
        "posting_s": round(posting_s, 3),
    }
    if offsets:
        from_logs = await _rate_from_logs(offsets, posted, entries, started_ms, timeout_s)
        if from_logs is not None:
            result.update(from_logs)
            return result
    result.update(await _rate_by_polling(stub, authors, posted, entries, started, timeout_s))
    return result


async def _post_all(
    stub: pb_grpc.MurmurStub, jobs: list[tuple[int, int, int]], texts: list[str], tag: str
) -> list[BurstPost]:
    """jobs: (author, follower count, post number). All sent at once so the
    shards see a burst, yet at most 32 in flight; each post's own request id
    lets ``call_retrying`` retry it without posting it twice."""
    semaphore = asyncio.Semaphore(32)

    async def post(author: int, followers: int, k: int) -> BurstPost:
        async with semaphore:
            tweet = await call_retrying(
                stub.PostTweet,
                pb.PostTweetRequest(
                    user_id=author, text=texts[k % len(texts)], request_id=f"{tag}-{author}-{k}"
                ),
            )
        return BurstPost(tweet.tweet_id, followers, author)

    return await asyncio.gather(*(post(*job) for job in jobs))


async def _rate_from_logs(
    offsets: dict[Path, int],
    posted: list[BurstPost],
    entries: int,
    started_ms: float,
    timeout_s: float,
) -> dict | None:
    """The shards log when each tweet's fan-out finished, so the burst ends
    at the last of those times, not when a poll happened to notice it.
    None if no line showed up in time: the caller then polls instead."""
    expected = {post.tweet_id for post in posted if post.followers > 0}
    lines = await _wait_for_fanout_lines(offsets, expected, timeout_s)
    done = [tid for tid in expected if tid in lines]
    if not done:
        return None
    ends = [millis_of_id(tid) + lines[tid][1] for tid in done]
    lags = [lines[tid][1] for tid in done]
    span_s = max(0.001, (max(ends) - started_ms) / 1000)
    return {
        "method": "shard log lines (fanout round delivered tweet=... lag_ms=...)",
        "delivered_tweets": len(done),
        "missing_tweets": len(expected) - len(done),
        "span_s": round(span_s, 3),
        "entries_per_s": round(entries / span_s, 1),
        "lag_ms_p50": sorted(lags)[len(lags) // 2],
        "lag_ms_max": max(lags),
    }


async def _wait_for_fanout_lines(
    offsets: dict[Path, int], expected: set[int], timeout_s: float
) -> dict[int, tuple[int, int]]:
    """Fan-out finishes after the posts are acknowledged: reread the logs
    until every expected tweet has its line, or ``timeout_s`` passed (the
    caller counts what is missing)."""
    lines: dict[int, tuple[int, int]] = {}
    wait_until = time.perf_counter() + timeout_s
    while time.perf_counter() < wait_until:
        lines = fanout_lines(offsets)
        if expected <= set(lines):
            break
        await asyncio.sleep(0.1)
    return lines


async def _rate_by_polling(
    stub: pb_grpc.MurmurStub,
    authors: list[tuple[int, int, int]],
    posted: list[BurstPost],
    entries: int,
    started: float,
    timeout_s: float,
) -> dict:
    """Without shard logs (an external --target) the end of the burst is
    only seen from outside: when each author's last follower has the
    author's last tweet."""
    pending = await _wait_for_last_tweets(stub, authors, posted, timeout_s)
    span_s = time.perf_counter() - started
    return {
        "method": "polling each author's last follower",
        "missing_tweets": len(pending),
        "span_s": round(span_s, 3),
        "entries_per_s": round(entries / span_s, 1),
    }


async def _wait_for_last_tweets(
    stub: pb_grpc.MurmurStub,
    authors: list[tuple[int, int, int]],
    posted: list[BurstPost],
    timeout_s: float,
) -> dict[int, int]:
    """Author -> last tweet id of the authors whose watcher never showed it
    within ``timeout_s``; an author leaves the poll as soon as it arrives."""
    last: dict[int, int] = {}
    for post in posted:
        last[post.author] = max(last.get(post.author, 0), post.tweet_id)
    watchers = {a: w for a, w, _ in authors}
    wait_until = time.perf_counter() + timeout_s
    pending = dict(last)
    while pending and time.perf_counter() < wait_until:
        for author, tid in list(pending.items()):
            if await _home_shows(stub, watchers[author], author, tid):
                pending.pop(author)
        await asyncio.sleep(0.01)
    return pending


async def _home_shows(stub: pb_grpc.MurmurStub, watcher: int, author: int, tid: int) -> bool:
    """One page of ``watcher``'s home: does it hold ``author``'s tweet ``tid``?
    A failed read is not caught here (unlike in ``probe_one``): it ends the
    burst with the error."""
    page = await stub.GetHomeTimeline(
        pb.GetHomeTimelineRequest(user_id=watcher, page_size=100), timeout=5.0
    )
    return any(t.tweet_id <= tid and t.user_id == author for t in page.tweets) and any(
        t.tweet_id == tid for t in page.tweets
    )

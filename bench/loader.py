"""Loading a social graph through the public API, concurrently (grpc.aio),
and waiting for the asynchronous parts (follower edges, fan-out) to settle."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from bench.datasets import Graph
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_TIMEOUT_S = 30.0


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )


async def call_retrying(rpc: Callable[..., Awaitable[Any]], request: Any, attempts: int = 5):
    delay = 0.05
    for attempt in range(attempts):
        try:
            return await rpc(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
    raise AssertionError("unreachable")


async def run_pool(
    items: Iterable[Any],
    work: Callable[[Any], Awaitable[None]],
    concurrency: int,
    progress: Any = None,
    deadline: float | None = None,
) -> int:
    """Run ``work`` over ``items`` with ``concurrency`` coroutines; bounded by ``deadline``."""
    iterator = iter(items)
    done = 0

    async def worker() -> None:
        nonlocal done
        for item in iterator:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("load phase ran past its time limit")
            await work(item)
            done += 1
            if progress is not None:
                progress.update(1)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def create_users(
    stub: pb_grpc.MurmurStub,
    handles: list[str],
    concurrency: int = 64,
    progress: Any = None,
    deadline: float | None = None,
) -> list[int]:
    """CreateUser for every handle; returns the user ids in the same order.
    A handle that already exists (a retried create) is looked up instead."""
    ids = [0] * len(handles)

    async def one(index: int) -> None:
        handle = handles[index]
        try:
            user = await stub.CreateUser(
                pb.CreateUserRequest(handle=handle), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (*RETRYABLE, grpc.StatusCode.ALREADY_EXISTS):
                raise
            user = await call_retrying(stub.GetUser, pb.GetUserRequest(handle=handle))
        ids[index] = user.user_id

    await run_pool(range(len(handles)), one, concurrency, progress, deadline)
    return ids


async def follow_all(
    stub: pb_grpc.MurmurStub,
    pairs: list[tuple[int, int]],
    concurrency: int = 128,
    progress: Any = None,
    deadline: float | None = None,
) -> int:
    async def one(pair: tuple[int, int]) -> None:
        await call_retrying(stub.Follow, pb.FollowRequest(follower_id=pair[0], followee_id=pair[1]))

    return await run_pool(pairs, one, concurrency, progress, deadline)


async def post_all(
    stub: pb_grpc.MurmurStub,
    posts: list[tuple[int, str]],
    concurrency: int = 64,
    progress: Any = None,
    deadline: float | None = None,
    tag: str = "load",
) -> list[int]:
    """PostTweet for each (author, text); returns tweet ids in order."""
    ids = [0] * len(posts)

    async def one(index: int) -> None:
        author, text = posts[index]
        tweet = await call_retrying(
            stub.PostTweet,
            pb.PostTweetRequest(user_id=author, text=text, request_id=f"{tag}-{index}"),
        )
        ids[index] = tweet.tweet_id

    await run_pool(range(len(posts)), one, concurrency, progress, deadline)
    return ids


async def wait_followers(
    stub: pb_grpc.MurmurStub,
    expected: dict[int, int],
    timeout_s: float = 120.0,
) -> dict:
    """Poll GetUser until every sampled user's follower_count matches."""
    started = time.monotonic()
    pending = dict(expected)
    while pending and time.monotonic() - started < timeout_s:
        users = await asyncio.gather(
            *(call_retrying(stub.GetUser, pb.GetUserRequest(user_id=uid)) for uid in pending)
        )
        pending = {
            u.user_id: pending[u.user_id] for u in users if u.follower_count != pending[u.user_id]
        }
        if pending:
            await asyncio.sleep(0.2)
    return {
        "waited_s": round(time.monotonic() - started, 2),
        "sampled": len(expected),
        "mismatched": len(pending),
    }


def follower_sample(graph: Graph, ids: list[int], count: int = 40, seed: int = 3) -> dict[int, int]:
    """Top followed users plus a random few with followers: user id -> in-degree."""
    rng = random.Random(seed)
    chosen = set(graph.top_followed(count // 2))
    with_followers = [n for n in graph.nodes if graph.in_degree.get(n, 0) > 0]
    chosen.update(rng.sample(with_followers, min(len(with_followers), count // 2)))
    return {ids[n]: graph.in_degree[n] for n in chosen}


async def wait_quiet(
    cpu: Callable[[], dict[str, float]],
    idle_cpu_fraction: float = 0.04,
    window_s: float = 0.5,
    calm_windows: int = 2,
    timeout_s: float = 120.0,
) -> float:
    """Wait until the servers' CPU use stays under ``idle_cpu_fraction`` of a
    core each for ``calm_windows`` windows (fan-out drained); returns seconds waited."""
    started = time.monotonic()
    calm = 0
    before = cpu()
    while time.monotonic() - started < timeout_s:
        await asyncio.sleep(window_s)
        after = cpu()
        busiest = max((after[k] - before.get(k, 0.0)) for k in after) if after else 0.0
        before = after
        calm = calm + 1 if busiest < idle_cpu_fraction * window_s else 0
        if calm >= calm_windows:
            break
    return round(time.monotonic() - started, 2)

"""The load generator: grpc.aio on uvloop, N coroutines on ONE channel per
worker process, one or two worker processes per phase, histograms merged.

Closed loop: each coroutine issues its next call when the previous returns.
Open loop: calls start at Poisson arrival times of a fixed rate whatever the
server does, and latency counts from the *intended* start, so a stalled
server is charged for the queue it causes (no coordinated omission). Calls
beyond ``max_inflight`` outstanding are shed and counted, never queued.

Every phase is bounded by both ``duration`` and ``max_ops``, and targets
only the loopback address it was given.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from typing import Any

import grpc

from bench.datasets import zipf_cumulative, zipf_pick
from bench.stats import Latency
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 10.0
OPS = ("home", "user", "post", "ping")
MIX = {"home": 0.6, "user": 0.3, "post": 0.1}  # DeathStarBench social-network mix


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point in a worker process (spawned): runs one phase, returns wire data."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_worker(spec))
    return uvloop.run(_worker(spec))


def warm_up(seconds: float = 0.2) -> int:
    """Lets a pool start its processes before the first timed phase."""
    import os

    time.sleep(seconds)
    return os.getpid()


class Workload:
    """Picks operations and their arguments; Zipf over ranked user lists."""

    def __init__(self, spec: dict[str, Any], rng: random.Random) -> None:
        self.rng = rng
        self.users = spec["users"]
        self.authors = spec.get("authors") or spec["users"]
        zipf = spec.get("zipf", 1.0)
        self.user_cum = zipf_cumulative(len(self.users), zipf)
        self.author_cum = (
            self.user_cum
            if self.authors is self.users
            else zipf_cumulative(len(self.authors), zipf)
        )
        # "home@NAME" reads a user of the group NAME (uniformly) and is
        # recorded under its own name: several groups share one phase, one
        # request at a time, so a slow spell of the box falls on all alike
        self.groups: dict[str, list[int]] = spec.get("user_groups", {})
        self.texts = spec["texts"]
        self.page_size = spec.get("page_size", 20)
        self.tag = f"{spec.get('tag', 'bench')}-{spec.get('seed', 0)}"
        self.posted = 0
        ops = list(spec["mix"].items())
        self.op_names = [name for name, _ in ops]
        self.op_cum = []
        total = 0.0
        for _, weight in ops:
            total += weight
            self.op_cum.append(total)

    def pick_op(self) -> str:
        if len(self.op_names) == 1:
            return self.op_names[0]
        point = self.rng.random() * self.op_cum[-1]
        for name, edge in zip(self.op_names, self.op_cum, strict=True):
            if point < edge:
                return name
        return self.op_names[-1]

    def user(self) -> int:
        return self.users[zipf_pick(self.user_cum, self.rng)]

    def author(self) -> int:
        return self.authors[zipf_pick(self.author_cum, self.rng)]

    def call(self, stub: pb_grpc.MurmurStub, op: str):
        op, _, group = op.partition("@")
        if op == "home":
            reader = self.rng.choice(self.groups[group]) if group else self.user()
            return stub.GetHomeTimeline(
                pb.GetHomeTimelineRequest(user_id=reader, page_size=self.page_size),
                timeout=CALL_TIMEOUT_S,
            )
        if op == "user":
            return stub.GetUserTimeline(
                pb.GetUserTimelineRequest(user_id=self.user(), page_size=self.page_size),
                timeout=CALL_TIMEOUT_S,
            )
        if op == "post":
            self.posted += 1
            return stub.PostTweet(
                pb.PostTweetRequest(
                    user_id=self.author(),
                    text=self.rng.choice(self.texts),
                    request_id=f"{self.tag}-{self.posted}",
                ),
                timeout=CALL_TIMEOUT_S,
            )
        if op == "ping":
            return stub.Ping(pb.PingRequest(user_id=self.user()), timeout=CALL_TIMEOUT_S)
        raise ValueError(f"unknown operation {op}")


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, Latency] = defaultdict(Latency)
        self.errors: dict[str, Counter] = defaultdict(Counter)
        self.ops = 0

    def ok(self, op: str, micros: float) -> None:
        self.latency[op].record(micros)
        self.ops += 1

    def failed(self, op: str, code: str) -> None:
        self.errors[op][code] += 1
        self.ops += 1

    def to_wire(self) -> dict[str, Any]:
        names = set(self.latency) | set(self.errors)
        return {
            op: {
                "latency": self.latency[op].to_wire(),
                "errors": dict(self.errors[op]),
            }
            for op in names
        }


async def _timed(stub, workload: Workload, op: str, started_ns: int, rec: Recorder) -> None:
    try:
        await workload.call(stub, op)
    except grpc.aio.AioRpcError as exc:
        rec.failed(op, exc.code().name)
        return
    except Exception as exc:  # noqa: BLE001 - counted, never fatal to the phase
        rec.failed(op, type(exc).__name__)
        return
    rec.ok(op, (time.perf_counter_ns() - started_ns) / 1000.0)


async def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(spec.get("seed", 0))
    workload = Workload(spec, rng)
    rec = Recorder()
    async with grpc.aio.insecure_channel(spec["target"]) as channel:
        stub = pb_grpc.MurmurStub(channel)
        for _ in range(spec.get("warmup_calls", 10)):
            try:
                await stub.Ping(pb.PingRequest(), timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                pass
        delay = spec.get("start_at", 0) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if spec["mode"] == "closed":
            extra = await _closed(stub, workload, spec, rec)
        else:
            extra = await _open(stub, workload, spec, rec)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    return {
        "ops": rec.to_wire(),
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "total": rec.ops,
        **extra,
    }


async def _closed(stub, workload: Workload, spec: dict[str, Any], rec: Recorder) -> dict:
    end = time.perf_counter() + spec["duration"]
    budget = spec["max_ops"]
    issued = 0

    async def loop() -> None:
        nonlocal issued
        while issued < budget and time.perf_counter() < end:
            issued += 1
            op = workload.pick_op()
            await _timed(stub, workload, op, time.perf_counter_ns(), rec)

    await asyncio.gather(*(loop() for _ in range(spec["concurrency"])))
    return {"shed": 0}


async def _open(stub, workload: Workload, spec: dict[str, Any], rec: Recorder) -> dict:
    rate = float(spec["rate"])
    duration = float(spec["duration"])
    budget = min(spec["max_ops"], int(rate * duration) + 1)
    max_inflight = spec.get("max_inflight", 2000)
    inflight: set[asyncio.Task] = set()
    shed = 0
    start_ns = time.perf_counter_ns()
    due_ns = float(start_ns)
    late_max_ns = 0
    for _ in range(budget):
        due_ns += rng_gap_ns(workload.rng, rate)
        now = time.perf_counter_ns()
        if due_ns - start_ns > duration * 1e9:
            break
        if due_ns > now:
            await asyncio.sleep((due_ns - now) / 1e9)
        else:
            late_max_ns = max(late_max_ns, now - int(due_ns))
            await asyncio.sleep(0)  # behind schedule: still let replies in
        if len(inflight) >= max_inflight:
            shed += 1
            rec.failed("shed", "CLIENT_SHED")
            continue
        op = workload.pick_op()
        task = asyncio.get_running_loop().create_task(_timed(stub, workload, op, int(due_ns), rec))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight, timeout=CALL_TIMEOUT_S + 1)
    return {"shed": shed, "offered_rate": rate, "late_max_ms": late_max_ns / 1e6}


def rng_gap_ns(rng: random.Random, rate: float) -> float:
    return rng.expovariate(rate) * 1e9

"""``murmur-bench``: Murmur's benchmark harness.

Starts its own cluster (or uses ``--target``), loads a social graph through
the public API, runs the DeathStarBench social-network mix (60% home
timeline, 30% user timeline, 10% posts; readers and authors Zipf-skewed) in
closed loop and as an open-loop rate sweep, and compares Murmur with its
floor (``Ping``), with the join design (SQLite, ``bench/join_server.py``) and
across celebrity thresholds (fan-out on read, on write, hybrid). Writes
``<out>/<name>.json``, ``<out>/<name>.md`` and PNG plots.

Every load is bounded in time and count and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import loader, probes
from bench.cluster import JoinServer, MurmurCluster
from bench.datasets import EDGES_FILE, Graph, load_graph, load_texts
from bench.join_server import build_db, home_query_ms
from bench.loadgen import MIX
from bench.runner import PhaseRunner
from bench.stats import BACKEND, summarize_ms
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
SWEEP_ROUNDS = 3  # interleaved rounds of the followee sweep
WRITE_ALL = 10**12  # a threshold no account reaches: pure fan-out on write
READ_ALL = 0  # every account a celebrity: pure fan-out on read
P99_LIMIT_MS = 50.0
# a side-by-side round: the same both ways, so each operation's two phases
# centre on the same moment of the round
ROUND_ORDER = ("ping", "home", "post", "post", "home", "ping")
NO_FSYNC_ORDER = ("ping", "post", "post", "ping")
UNSAFE_NO_FSYNC = "--unsafe-no-fsync"


@dataclass
class Plan:
    """How much of everything a run does (``--quick``/``--tiny`` shrink it)."""

    mode: str
    duration: float = 10.0
    concurrencies: list[int] = field(default_factory=lambda: [1, 16, 64])
    post_concurrency: int = 16
    max_ops: int = 200_000
    rate_fractions: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.85, 1.0, 1.2])
    seed_tweets_per_user: int = 2
    followee_sizes: list[int] = field(default_factory=lambda: [10, 100, 1000, 5000])
    sweep_tweets_per_author: int = 10
    sweep_readers_per_size: int = 2
    sweep_read_ops: int = 3000
    paired_rounds: int = 5  # side-by-side rounds for the ratios (ROUND_ORDER each)
    paired_duration: float = 3.0
    no_fsync_rounds: int = 3  # pairs of rounds after restarts with and without the fsync
    join_query_repeats: int = 100  # in-process runs of the join per sweep reader
    history_followees: int = 1000  # the join alone against each followee's history
    history_depths: list[int] = field(default_factory=lambda: [10, 100])
    probes: int = 40
    burst_authors: int = 5
    burst_posts_per_author: int = 20
    mega_followers: int = 9000
    strategy_fresh_load: bool = True
    strategy_post_ops: int = 6000
    disk_posts: int = 500
    disk_followers: int = 200
    join_workloads: tuple[str, ...] = ("ping", "home", "mix", "post")
    load_concurrency: int = 512
    time_limit_s: float = 1500.0


def make_plan(args: argparse.Namespace) -> Plan:
    if args.tiny:
        plan = Plan(
            mode="tiny",
            duration=0.6,
            concurrencies=[8],
            post_concurrency=8,
            max_ops=3000,
            rate_fractions=[0.5],
            seed_tweets_per_user=1,
            followee_sizes=[5, 20],
            sweep_tweets_per_author=2,
            sweep_readers_per_size=1,
            sweep_read_ops=100,
            paired_rounds=1,
            paired_duration=0.4,
            no_fsync_rounds=1,
            join_query_repeats=5,
            history_followees=20,
            history_depths=[2, 10],
            probes=4,
            burst_authors=2,
            burst_posts_per_author=3,
            mega_followers=0,
            strategy_fresh_load=True,
            strategy_post_ops=100,
            disk_posts=30,
            disk_followers=20,
            join_workloads=("home", "mix"),
            load_concurrency=64,
            time_limit_s=240.0,
        )
    elif args.quick:
        plan = Plan(
            mode="quick",
            duration=3.0,
            concurrencies=[16],
            max_ops=50_000,
            rate_fractions=[0.5, 0.9],
            seed_tweets_per_user=1,
            followee_sizes=[10, 1000],
            sweep_tweets_per_author=5,
            sweep_readers_per_size=1,
            sweep_read_ops=1000,
            paired_rounds=2,
            paired_duration=2.0,
            no_fsync_rounds=1,
            join_query_repeats=20,
            history_depths=[5, 50],
            probes=16,
            burst_authors=4,
            burst_posts_per_author=10,
            mega_followers=0,
            strategy_fresh_load=False,
            strategy_post_ops=2000,
            disk_posts=300,
            disk_followers=100,
            join_workloads=("home", "mix"),
            time_limit_s=600.0,
        )
    else:
        plan = Plan(mode="full")
    if args.duration is not None:
        plan.duration = args.duration
    return plan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="murmur-bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about two minutes, reduced form")
    parser.add_argument("--tiny", action="store_true", help="smoke-test size (generated graph)")
    parser.add_argument("--name", default=None, help="result file stem (default by mode)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="result folder")
    parser.add_argument(
        "--target",
        default=None,
        help="use a running router (loopback only) whose per-user rate limits are off "
        "(murmur-admin settings post_rate_limit=0 follow_rate_limit=0)",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per timed phase")
    parser.add_argument("--shards", type=int, default=2, help="shards to start (default 2)")
    parser.add_argument(
        "--graph",
        choices=["auto", "real", "generated"],
        default="auto",
        help="auto: the real graph when ../shared/data has it",
    )
    parser.add_argument("--users", type=int, default=None, help="generated graph: users")
    parser.add_argument("--avg-follows", type=float, default=6.5, help="generated graph")
    parser.add_argument("--zipf", type=float, default=1.0, help="skew of readers/authors/graph")
    parser.add_argument(
        "--threshold", type=int, default=500, help="celebrity threshold of the hybrid (500)"
    )
    parser.add_argument("--inbox-cap", type=int, default=800)
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes (max)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--keep-work", action="store_true", help="keep data folders and logs")
    args = parser.parse_args(argv)
    if args.tiny and args.users is None:
        args.users = 60
    if args.target:
        check_loopback(args.target)
    return args


def check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise SystemExit(f"--target {target}: cannot resolve {host}: {exc}") from exc
    if not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise SystemExit(f"--target {target} is not a loopback address; the bench stays local")


def machine_info() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "histograms": BACKEND,
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as handle:
            info["mem_total"] = handle.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class System:
    """A Murmur-API endpoint under test, with its ids and CPU probe."""

    def __init__(self, name: str, target: str, cpu=None, cluster: MurmurCluster | None = None):
        self.name = name
        self.target = target
        self.cpu = cpu
        self.cluster = cluster
        self.ids: list[int] = []  # graph node -> user id
        self.extra: dict[str, Any] = {}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = make_plan(args)
        self.name = args.name or {"tiny": "tiny", "quick": "quick", "full": "full"}[self.plan.mode]
        self.out = Path(args.out)
        self.rng = random.Random(args.seed)
        self.tag = "b" + "".join(self.rng.choice("abcdefghjkmnpqrstuvwxyz") for _ in range(4))
        prefer_real = args.graph in ("auto", "real") and not args.tiny
        self.graph: Graph = load_graph(
            prefer_real=prefer_real,
            users=args.users or 9000,
            avg_follows=args.avg_follows,
            zipf=1.2 if args.zipf == 1.0 else args.zipf,
            seed=args.seed,
        )
        if args.graph == "real" and not self.graph.source.startswith("real"):
            raise SystemExit(f"--graph real: {EDGES_FILE} is missing")
        self.text_source, self.texts = load_texts(limit=5000)
        ranking = list(self.graph.nodes)
        self.rng.shuffle(ranking)
        self.rank = ranking  # Zipf rank -> node (same for every system)
        self.work = Path(tempfile.mkdtemp(prefix=f"murmur-bench-{self.name}-"))
        self.runner: PhaseRunner | None = None
        self.cluster: MurmurCluster | None = None  # the cluster of ours running now
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.result: dict[str, Any] = {
            "meta": {
                **machine_info(),
                "command": " ".join(shlex.quote(a) for a in sys.argv),
                "name": self.name,
                "mode": self.plan.mode,
            },
            "config": {
                **asdict(self.plan),
                "shards": args.shards,
                "hybrid_threshold": args.threshold,
                "inbox_cap": args.inbox_cap,
                "zipf": args.zipf,
                "mix": MIX,
                "target": args.target,
                "page_size": 20,
                "seed": args.seed,
                "workers_max": args.workers,
            },
            "dataset": {
                "graph": self.graph.stats(),
                "texts": {"source": self.text_source, "count": len(self.texts)},
            },
        }

    # helpers ------------------------------------------------------------------
    def remaining(self) -> float:
        return self.plan.time_limit_s - (time.monotonic() - self.started)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=f"  {desc}", leave=False, disable=self.args.no_progress)

    def workers_for(self, concurrency: int = 0, rate: float = 0.0) -> int:
        if concurrency >= 32 or rate >= 2500:
            return min(2, self.args.workers)
        return 1

    def seeded_nodes(self) -> list[int]:
        """Users whose seed tweets someone reads: those with followers."""
        return [n for n in self.graph.nodes if self.graph.in_degree.get(n, 0) > 0]

    def ranked_ids(self, system: System) -> list[int]:
        return [system.ids[node] for node in self.rank]

    def spec(self, system: System, mix: dict[str, float], **kw) -> dict[str, Any]:
        users = self.ranked_ids(system)
        return {
            "target": system.target,
            "mix": mix,
            "users": kw.pop("users", users),
            "authors": kw.pop("authors", users),
            "zipf": kw.pop("zipf", self.args.zipf),
            "texts": self.texts[:2000],
            "duration": kw.pop("duration", self.plan.duration),
            "max_ops": kw.pop("max_ops", self.plan.max_ops),
            "tag": f"{self.tag}-{system.name}-{kw.pop('label', 'p')}",
            "seed": self.rng.randrange(1 << 30),
            **kw,
        }

    async def closed(
        self, system: System, mix: dict[str, float], concurrency: int, label: str, **kw
    ) -> dict:
        spec = self.spec(system, mix, mode="closed", concurrency=concurrency, label=label, **kw)
        assert self.runner is not None
        result = await self.runner.run(
            spec, self.workers_for(concurrency=concurrency), system.cpu, f"{system.name} {label}"
        )
        if system.cluster is not None:
            system.cluster.check_alive()
        self.log(
            f"{system.name} {label}: {result['throughput']:.0f} ops/s, "
            + ", ".join(
                f"{op} p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f} ms"
                for op, s in result["ops"].items()
            )
        )
        return result

    async def open_loop(self, system: System, rate: float, label: str, **kw) -> dict:
        spec = self.spec(system, MIX, mode="open", rate=rate, label=label, **kw)
        assert self.runner is not None
        result = await self.runner.run(
            spec, self.workers_for(rate=rate), system.cpu, f"{system.name} {label}"
        )
        self.log(
            f"{system.name} {label}: offered {rate:.0f}/s achieved {result['achieved_rate']:.0f}/s"
            f" p50 {result['all_ops']['p50_ms']:.2f} p99 {result['all_ops']['p99_ms']:.2f} ms"
        )
        return result

    async def quiet(self, system: System, timeout_s: float = 120.0) -> float:
        if system.cpu is None:
            await asyncio.sleep(1.0)
            return 1.0
        window = 0.25 if self.plan.mode == "tiny" else 0.5
        return await loader.wait_quiet(system.cpu, window_s=window, timeout_s=timeout_s)

    # clusters -----------------------------------------------------------------
    def start_cluster(self, label: str, threshold: int, ports: list[int] | None = None):
        cluster = MurmurCluster(
            self.work / "murmur", self.args.shards, threshold, self.args.inbox_cap, label
        )
        if ports:
            cluster.fixed_ports = ports
        cluster.start()
        system = System(label, cluster.target, cluster.cpu, cluster)
        return cluster, system

    async def load_murmur(self, system: System) -> dict:
        """Users, edges and seed tweets through the public API, concurrently."""
        graph = self.graph
        timings: dict[str, Any] = {}
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            deadline = time.monotonic() + max(60.0, self.remaining())
            t0 = time.monotonic()
            with self.bar(len(graph.nodes), f"{system.name}: users") as bar:
                system.ids = await loader.create_users(
                    stub,
                    [f"{self.tag}{system.name[0]}{n}" for n in graph.nodes],
                    64,
                    bar,
                    deadline,
                )
            timings["users_s"] = round(time.monotonic() - t0, 2)
            t0 = time.monotonic()
            pairs = [(system.ids[a], system.ids[b]) for a, b in graph.edges]
            with self.bar(len(pairs), f"{system.name}: follows") as bar:
                await loader.follow_all(stub, pairs, self.plan.load_concurrency, bar, deadline)
            timings["follows_s"] = round(time.monotonic() - t0, 2)
            timings["follows_per_s"] = round(len(pairs) / max(0.001, timings["follows_s"]), 1)
            settle = await loader.wait_followers(
                stub, loader.follower_sample(graph, system.ids), timeout_s=120
            )
            timings["followers_settle"] = settle
            t0 = time.monotonic()
            posts = [
                (system.ids[n], self.texts[(n * 7 + k) % len(self.texts)])
                for k in range(self.plan.seed_tweets_per_user)
                for n in self.seeded_nodes()
            ]
            with self.bar(len(posts), f"{system.name}: seed tweets") as bar:
                await loader.post_all(stub, posts, 64, bar, deadline, tag=f"{self.tag}-seed")
            timings["seed_tweets"] = len(posts)
            timings["seed_tweets_s"] = round(time.monotonic() - t0, 2)
            timings["quiet_wait_s"] = await self.quiet(system)
        self.log(f"{system.name}: loaded {timings}")
        return timings

    # main measurements -----------------------------------------------------------
    async def side_by_side(self, system: System) -> dict:
        """Ping, home reads and posts at the post concurrency in interleaved
        rounds; each ratio is taken within a round and the median of the
        rounds' ratios is reported. This box's slow spells last seconds (in
        one side-by-side run, the router's CPU per Ping was 522 µs in one
        round and 812 µs in another), so two long phases one after the other
        measure the spell as much as the code. A round runs each operation
        twice, in an order that reads the same both ways (``ROUND_ORDER``):
        each operation's two phases then centre on the same moment, and a
        slowdown that builds or fades steadily across the round weighs on
        every operation alike instead of on whichever ran last. The cluster
        is let go idle after posts, whose fan-out would otherwise run into
        the next phase. Each phase also records the share of its time the
        shards' event loops waited on fsyncs (on a cluster the bench
        started): what posts pay that a Ping does not, beside their CPU."""
        c, total = self.plan.post_concurrency, self.plan.paired_rounds
        rounds = [
            await self.paired_round(
                system, ROUND_ORDER, f"side by side c{c} round {r + 1}/{total}", f"pair{r}"
            )
            for r in range(total)
        ]
        return {
            "concurrency": c,
            "order": list(ROUND_ORDER),
            "rounds": rounds,
            "ratios": paired_ratios(rounds),
        }

    async def paired_round(
        self, system: System, order: tuple[str, ...], label: str, tag: str
    ) -> dict:
        """One interleaved round: each operation of ``order`` in turn at the
        post concurrency, the cluster let go idle after each post phase."""
        c, cluster, phases = self.plan.post_concurrency, system.cluster, []
        for i, op in enumerate(order):
            waited = cluster.loop_fsync_s() if cluster else None
            result = await self.closed(
                system,
                {op: 1.0},
                c,
                f"{label}, {op} (phase {i + 1}/{len(order)})",
                duration=self.plan.paired_duration,
                tag=f"{self.tag}-{tag}-{i}",  # request ids stay within 64 characters
            )
            phases.append(
                {
                    "op": op,
                    "throughput": result["throughput"],
                    "p99_ms": result["ops"][op]["p99_ms"],
                    "ops_failed": result["ops_failed"],
                    "loop_fsync_share": loop_share(cluster, waited, result["duration_s"]),
                }
            )
            if op == "post":
                await self.quiet(system)
        return round_means(phases)

    async def fsync_cost(self, system: System) -> tuple[System, dict]:
        """What the fsync costs posts, as posts/Ping with and without it
        measured the same way: for each pair of rounds the cluster is
        restarted durable, warmed with a post phase it does not count, and
        runs Ping, post, post, Ping; then the same restarted with
        ``--unsafe-no-fsync``. Both sides come from restarted shards at the
        same point of the run, so the difference is the fsync's, not the
        state's (a restart turns the log into tables and empties caches; in
        a probe, posts after the first restart since loading ran ~30% slower
        for more than ten seconds). Each restart is checked for the flag it
        was asked for. The cluster is left running unsafe (the join section
        stops it next); its next start is durable."""
        cluster = system.cluster
        assert cluster is not None
        c, total = self.plan.post_concurrency, self.plan.no_fsync_rounds
        sides: dict[str, list[dict]] = {"with_fsync": [], "without_fsync": []}
        restarts: list[dict] = []
        for r in range(total):
            for side, flags, tag in (
                ("with_fsync", [], f"dur{r}"),
                ("without_fsync", [UNSAFE_NO_FSYNC], f"nofs{r}"),
            ):
                system, setup = await self.restarted(system, flags, f"{tag}w")
                restarts.append({"side": side, **setup})
                label = f"{side.replace('_', ' ')} c{c} round {r + 1}/{total}"
                sides[side].append(await self.paired_round(system, NO_FSYNC_ORDER, label, tag))
            if self.remaining() < 0:
                self.log("time limit reached; fewer rounds with and without fsync")
                break
        return system, {
            "concurrency": c,
            "order": list(NO_FSYNC_ORDER),
            "restarts": restarts,
            **{f"rounds_{side}": rounds for side, rounds in sides.items()},
            "ratios": {side: paired_ratios(rounds) for side, rounds in sides.items()},
        }

    async def restarted(self, system: System, flags: list[str], tag: str) -> tuple[System, dict]:
        """The cluster restarted with ``flags`` on its shards (same data and
        ports), checked for them (``murmur_unsafe_no_fsync`` on every shard),
        and warmed with a post phase that is not counted."""
        cluster = system.cluster
        assert cluster is not None
        cluster.shard_flags = flags
        try:
            system, setup = await self.restart_with(
                cluster, system, system.name, cluster.celebrity_threshold
            )
        finally:
            cluster.shard_flags = []
        unsafe = cluster.shards_without_fsync()
        if unsafe != (cluster.shard_count if UNSAFE_NO_FSYNC in flags else 0):
            raise RuntimeError(f"{unsafe} shards report no fsync after a restart with {flags}")
        warm_up = await self.closed(
            system,
            {"post": 1.0},
            self.plan.post_concurrency,
            f"warm-up posts after a restart with {flags or 'no flags'} (not counted)",
            duration=self.plan.paired_duration,
            tag=f"{self.tag}-{tag}",  # request ids of their own
        )
        await self.quiet(system)
        return system, {**setup, "warm_up_posts_per_s": warm_up["throughput"]}

    async def main_phases(self, system: System) -> dict:
        plan = self.plan
        out: dict[str, dict] = {"ping": {}, "home": {}, "mix": {}, "post": {}}
        for c in plan.concurrencies:
            out["ping"][f"c{c}"] = await self.closed(system, {"ping": 1.0}, c, f"ping c{c}")
            out["home"][f"c{c}"] = await self.closed(system, {"home": 1.0}, c, f"home c{c}")
            out["mix"][f"c{c}"] = await self.closed(system, MIX, c, f"mix c{c}")
        c = plan.post_concurrency
        post = await self.closed(system, {"post": 1.0}, c, f"post c{c}")
        drained = await self.post_drain(system, post)
        out["post"][f"c{c}"] = drained
        if plan.post_concurrency not in plan.concurrencies:
            out["ping"][f"c{c}"] = await self.closed(system, {"ping": 1.0}, c, f"ping c{c}")
        return out

    async def post_drain(self, system: System, post: dict) -> dict:
        """Adds the fan-out CPU spent after the phase until the shards are idle."""
        if system.cpu is None:
            return post
        before = system.cpu()
        waited = await self.quiet(system)
        after = system.cpu()
        drain = {k: round(after[k] - before.get(k, 0.0), 3) for k in after}
        ops = max(1, post["ops_ok"])
        total = {k: post["server_cpu_s"].get(k, 0.0) + drain[k] for k in drain}
        post["fanout_drain_s"] = waited
        post["fanout_drain_cpu_s"] = drain
        post["server_cpu_ms_per_post_incl_fanout"] = {
            k: round(1000 * v / ops, 4) for k, v in total.items()
        }
        post["server_cpu_ms_per_post_incl_fanout_total"] = round(
            1000 * sum(total.values()) / ops, 4
        )
        return post

    async def rate_sweep(self, system: System, peak: float) -> dict:
        steps = []
        for fraction in self.plan.rate_fractions:
            rate = max(5.0, fraction * peak)
            result = await self.open_loop(system, rate, f"rate {rate:.0f}/s")
            result["fraction_of_peak"] = fraction
            steps.append(result)
        return {"peak_closed_loop": peak, "steps": steps, **crossing(steps)}

    # followee sweep ---------------------------------------------------------------
    def sweep_layout(self) -> tuple[list[str], dict[int, list[str]]]:
        sizes = self.plan.followee_sizes
        authors = [f"{self.tag}a{i}" for i in range(max(sizes))]
        readers = {
            s: [f"{self.tag}r{s}x{k}" for k in range(self.plan.sweep_readers_per_size)]
            for s in sizes
        }
        return authors, readers

    async def sweep_setup_murmur(self, system: System) -> dict:
        authors, readers = self.sweep_layout()
        t0 = time.monotonic()
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            deadline = time.monotonic() + max(60.0, self.remaining())
            all_readers = [h for size in readers for h in readers[size]]
            with self.bar(len(authors) + len(all_readers), "sweep: users") as bar:
                ids = await loader.create_users(stub, authors + all_readers, 64, bar, deadline)
            author_ids = ids[: len(authors)]
            reader_ids = dict(zip(all_readers, ids[len(authors) :], strict=True))
            pairs = [
                (reader_ids[h], author_ids[i])
                for size, handles in readers.items()
                for h in handles
                for i in range(size)
            ]
            with self.bar(len(pairs), "sweep: follows") as bar:
                await loader.follow_all(stub, pairs, self.plan.load_concurrency, bar, deadline)
            posts = [
                (author_ids[i], self.texts[(i + k) % len(self.texts)])
                for k in range(self.plan.sweep_tweets_per_author)
                for i in range(len(authors))
            ]
            with self.bar(len(posts), "sweep: tweets") as bar:
                await loader.post_all(stub, posts, 64, bar, deadline, tag=f"{self.tag}-sweep")
        waited = await self.quiet(system)
        system.extra["sweep_readers"] = {
            size: [reader_ids[h] for h in handles] for size, handles in readers.items()
        }
        return {"setup_s": round(time.monotonic() - t0, 2), "quiet_wait_s": waited}

    async def sweep_reads(self, system: System) -> dict:
        """Reads at c1, every followee count in one phase, each request's
        reader drawn from a size at random (``home@SIZE``), in SWEEP_ROUNDS
        rounds; each size reports its median round. Sizes measured in
        phases of their own, one after another, drifted with the box: in
        one run the load generator's own CPU per read (the same work at
        every size) rose 35% during the 5,000 phase alone, and within a
        round the p50s climbed with the order the sizes ran in."""
        readers_by_size = {str(size): ids for size, ids in system.extra["sweep_readers"].items()}
        mix = {f"home@{size}": 1.0 for size in readers_by_size}
        rounds: dict[str, list[dict]] = {}
        for round_no in range(SWEEP_ROUNDS):
            result = await self.closed(
                system,
                mix,
                1,
                f"followees {'/'.join(readers_by_size)} (round {round_no + 1}/{SWEEP_ROUNDS})",
                user_groups=readers_by_size,
                max_ops=max(1, self.plan.sweep_read_ops * len(mix) // SWEEP_ROUNDS),
                duration=min(self.plan.duration, 5.0) * len(mix) / SWEEP_ROUNDS,
            )
            for size in readers_by_size:
                rounds.setdefault(size, []).append(size_result(result, f"home@{size}"))
        return {size: median_round(results) for size, results in rounds.items()}

    # join ------------------------------------------------------------------------
    def build_join_db(self, path: Path) -> dict:
        graph = self.graph
        t0 = time.monotonic()
        authors, readers = self.sweep_layout()
        handles = [f"{self.tag}j{n}" for n in graph.nodes]
        base = len(handles)
        handles += authors
        reader_index: dict[int, list[int]] = {}
        for size, names in readers.items():
            reader_index[size] = list(range(len(handles), len(handles) + len(names)))
            handles += names
        edges = list(graph.edges)
        for size, indexes in reader_index.items():
            edges += [(r, base + i) for r in indexes for i in range(size)]
        tweets = [
            (n, self.texts[(n * 7 + k) % len(self.texts)])
            for k in range(self.plan.seed_tweets_per_user)
            for n in self.seeded_nodes()
        ]
        tweets += [
            (base + i, self.texts[(i + k) % len(self.texts)])
            for k in range(self.plan.sweep_tweets_per_author)
            for i in range(len(authors))
        ]
        ids = build_db(path, handles, edges, tweets)
        return {
            "ids": ids[:base],
            "sweep_readers": {s: [ids[i] for i in idx] for s, idx in reader_index.items()},
            "build_s": round(time.monotonic() - t0, 2),
            "rows": {"users": len(handles), "follows": len(edges), "tweets": len(tweets)},
        }

    def join_query_alone(self, path: Path, sweep_readers: dict[int, list[int]]) -> dict:
        """The join query's own latency per followee count, in-process, with
        no server running: the rest of the join's read is its gRPC call."""
        return {
            str(size): summarize_ms(home_query_ms(path, readers, self.plan.join_query_repeats))
            for size, readers in sweep_readers.items()
        }

    def join_history(self, folder: Path) -> dict:
        """The join query alone for one reader of ``history_followees``
        accounts holding each of ``history_depths`` tweets: does a deeper
        history make the join slower? (SQLite walks each followee's tweets
        newest first and stops once they can no longer enter the page.)"""
        n = self.plan.history_followees
        handles = [f"{self.tag}h{i}" for i in range(n)] + [f"{self.tag}hr"]
        edges = [(n, i) for i in range(n)]
        out = {}
        for depth in self.plan.history_depths:
            path = folder / f"history-{depth}.sqlite"
            tweets = [
                (i, self.texts[(i + k) % len(self.texts)]) for k in range(depth) for i in range(n)
            ]
            reader = build_db(path, handles, edges, tweets)[n]
            samples = home_query_ms(path, [reader], self.plan.join_query_repeats * 2)
            out[str(depth)] = summarize_ms(samples)
            for file in folder.glob(f"{path.name}*"):  # with WAL's -wal and -shm
                file.unlink()
        return {"followees": n, "by_depth": out}

    async def join_check(self, system: System) -> dict:
        """The join server answers the same API correctly (a tiny scenario)."""
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            a = await stub.CreateUser(pb.CreateUserRequest(handle=f"{self.tag}ca"), timeout=5)
            b = await stub.CreateUser(pb.CreateUserRequest(handle=f"{self.tag}cb"), timeout=5)
            await stub.Follow(pb.FollowRequest(follower_id=b.user_id, followee_id=a.user_id))
            tweet = await stub.PostTweet(pb.PostTweetRequest(user_id=a.user_id, text="hello"))
            home = await stub.GetHomeTimeline(pb.GetHomeTimelineRequest(user_id=b.user_id))
            user = await stub.GetUser(pb.GetUserRequest(user_id=a.user_id))
            ok = (
                [t.tweet_id for t in home.tweets] == [tweet.tweet_id]
                and user.follower_count == 1
                and user.tweet_count == 1
            )
        return {"ok": ok}

    async def run_join(self) -> dict:
        join_dir = self.work / "join"
        join_dir.mkdir(parents=True, exist_ok=True)
        db_path = join_dir / "murmur-join.sqlite"
        built = self.build_join_db(db_path)
        query_alone = self.join_query_alone(db_path, built["sweep_readers"])
        history = self.join_history(join_dir)
        server = JoinServer(join_dir, db_path).start()
        try:
            system = System("join", server.target, server.cpu)
            system.ids = built.pop("ids")
            system.extra["sweep_readers"] = built.pop("sweep_readers")
            out: dict[str, Any] = {"setup": built, "check": await self.join_check(system)}
            out["disk_bytes"] = server.disk()
            closed: dict[str, dict] = {"ping": {}, "home": {}, "mix": {}, "post": {}}
            mixes = {"ping": {"ping": 1.0}, "home": {"home": 1.0}, "mix": MIX}
            for c in self.plan.concurrencies:
                for workload, mix in mixes.items():
                    if workload in self.plan.join_workloads:
                        closed[workload][f"c{c}"] = await self.closed(
                            system, mix, c, f"{workload} c{c}"
                        )
            c = self.plan.post_concurrency
            if "post" in self.plan.join_workloads:
                closed["post"][f"c{c}"] = await self.closed(system, {"post": 1.0}, c, f"post c{c}")
            out["closed_loop"] = closed
            out["followee_sweep"] = await self.sweep_reads(system)
            out["followee_sweep_query_alone"] = query_alone
            out["history"] = history
        finally:
            server.stop()
        return out

    # strategies -------------------------------------------------------------------
    def probe_targets(
        self, system: System, count: int, extra_big: list[tuple[int, int, int]] | None = None
    ) -> list[tuple[int, int, int]]:
        """(author, watcher, followers) over follower-count buckets, taken
        in turn from each bucket (``probes.interleaved``); ``extra_big``
        (the 9,000-follower account's probes) spread among the biggest."""
        graph = self.graph
        buckets = [(1, 9), (10, 99), (100, 999), (1000, 10**9)]
        rng = random.Random(self.args.seed + 5)
        groups: list[list[tuple[int, int, int]]] = []
        per = max(1, count // len(buckets))
        for low, high in buckets:
            nodes = [n for n in graph.nodes if low <= graph.in_degree.get(n, 0) <= high]
            rng.shuffle(nodes)
            groups.append([])
            for node in nodes[:per]:
                watcher = max(system.ids[f] for f in graph.followers_of(node))
                groups[-1].append((system.ids[node], watcher, graph.in_degree[node]))
        if extra_big:
            groups[-1] = probes.interleaved([groups[-1], extra_big])
        return probes.interleaved(groups)

    async def strategy(self, system: System, label: str, threshold: int) -> dict:
        c = self.plan.post_concurrency
        out: dict[str, Any] = {"threshold": threshold}
        out["home"] = await self.closed(system, {"home": 1.0}, c, f"home c{c}")
        post = await self.closed(
            system, {"post": 1.0}, c, f"post c{c}", max_ops=self.plan.strategy_post_ops
        )
        out["post"] = await self.post_drain(system, post)
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            results = await probes.run_probes(
                stub,
                self.probe_targets(system, self.plan.probes),
                self.texts,
                f"{self.tag}-{label}-probe",
                deadline_s=max(30.0, 10 * self.plan.duration),
            )
            top = self.graph.top_followed(3)
            users = await asyncio.gather(
                *(stub.GetUser(pb.GetUserRequest(user_id=system.ids[n])) for n in top)
            )
        out["top_accounts_celebrity"] = [u.celebrity for u in users]
        out["delivery"] = delivery_summary(results)
        self.log(
            f"strategy {label}: home p50 {out['home']['ops']['home']['p50_ms']} ms, "
            f"post cpu {out['post'].get('server_cpu_ms_per_post_incl_fanout_total')} ms/post, "
            f"delivery p99 {out['delivery']['all'].get('p99_ms')} ms"
        )
        return out

    async def restart_with(
        self, cluster: MurmurCluster, previous: System, label: str, threshold: int
    ) -> tuple[System, dict]:
        """The same cluster, same data and ports, restarted with a new threshold
        (the shards re-evaluate every user and carry the flips through the outbox)."""
        t0 = time.monotonic()
        cluster.label = label
        self.restart_cluster(cluster, threshold)
        system = System(label, cluster.target, cluster.cpu, cluster)
        system.ids, system.extra = previous.ids, previous.extra
        # status syncs may pause in a retry backoff (up to 2 s): ask for 3 s of calm
        waited = await loader.wait_quiet(system.cpu, window_s=1.0, calm_windows=3, timeout_s=300)
        return system, {
            "restart_and_reevaluate_s": round(time.monotonic() - t0, 2),
            "quiet_wait_s": waited,
        }

    # fan-out under load ---------------------------------------------------------------
    async def add_mega(self, system: System) -> tuple[int, int] | None:
        count = min(self.plan.mega_followers, len(self.graph.nodes))
        if count <= 0:
            return None
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            mega = (await loader.create_users(stub, [f"{self.tag}mega"], 1))[0]
            followers = [system.ids[n] for n in self.graph.nodes[:count]]
            with self.bar(count, "mega author: follows") as bar:
                await loader.follow_all(
                    stub, [(f, mega) for f in followers], self.plan.load_concurrency, bar
                )
            await loader.wait_followers(stub, {mega: count})
        await self.quiet(system)
        return mega, max(followers)

    async def own_mix_peak(self, system: System) -> dict:
        """The mixed workload's closed-loop rate on ``system`` at the plan's
        highest concurrency: "half its peak" is half of the peak of the
        cluster the burst runs on (write-all, where every post copies to every
        follower but home reads pull nothing), not of the hybrid cluster's.
        Waits for the mix's fan-out to finish before returning."""
        c = max(self.plan.concurrencies)
        result = await self.closed(system, MIX, c, f"mix c{c} (peak of this cluster)")
        await self.quiet(system)
        return {"concurrency": c, "throughput": result["throughput"], "closed_loop": result}

    async def fanout_section(self, system: System, peak: float, measure_peak: bool = False) -> dict:
        """Delivery latency and fan-out bursts while the mix runs at half of
        ``peak`` (or of ``system``'s own peak, measured first, if
        ``measure_peak``), then a burst on the idle cluster."""
        plan = self.plan
        out: dict[str, Any] = {}
        if measure_peak:
            out["mix_peak"] = await self.own_mix_peak(system)
            peak = out["mix_peak"]["throughput"]
        mega = await self.add_mega(system)
        mega_probes = []
        if mega:
            mega_probes = [(mega[0], mega[1], min(plan.mega_followers, len(self.graph.nodes)))] * 4
        targets = self.probe_targets(system, plan.probes, mega_probes)
        top = self.graph.top_followed(plan.burst_authors)
        burst_authors = [
            (
                system.ids[n],
                max(system.ids[f] for f in self.graph.followers_of(n)),
                self.graph.in_degree[n],
            )
            for n in top
        ]
        if mega:
            burst_authors.append(
                (mega[0], mega[1], min(plan.mega_followers, len(self.graph.nodes)))
            )
        rate = max(5.0, 0.5 * peak)
        background_s = max(plan.duration * 3, 6.0)
        bg_task = asyncio.create_task(
            self.open_loop(system, rate, "background mix at half peak", duration=background_s)
        )
        await asyncio.sleep(1.0)
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            results = await probes.run_probes(
                stub, targets, self.texts, f"{self.tag}-fanprobe", deadline_s=background_s * 0.5
            )
            logs = system.cluster.shard_logs() if system.cluster else None
            burst = await probes.burst(
                stub,
                burst_authors,
                plan.burst_posts_per_author,
                self.texts,
                f"{self.tag}-burst",
                logs,
            )
        background = await bg_task
        out["background_mix"] = background
        out["delivery"] = delivery_summary(results)
        out["delivery"]["results"] = results
        out["burst_under_load"] = burst
        await self.quiet(system)
        async with loader.channel(system.target) as channel:
            stub = pb_grpc.MurmurStub(channel)
            logs = system.cluster.shard_logs() if system.cluster else None
            out["burst_idle"] = await probes.burst(
                stub,
                burst_authors,
                plan.burst_posts_per_author,
                self.texts,
                f"{self.tag}-burst-idle",
                logs,
            )
        self.log(
            f"fan-out: under load {burst.get('entries_per_s')} entries/s, idle "
            f"{out['burst_idle'].get('entries_per_s')} entries/s; delivery p50 "
            f"{out['delivery']['all'].get('p50_ms')} p99 {out['delivery']['all'].get('p99_ms')} ms"
        )
        return out

    def restart_cluster(self, cluster: MurmurCluster, threshold: int | None = None) -> None:
        """Stop and start again on the same data and ports (shards keep the slot
        map with their addresses); LevelDB turns its write-ahead log into tables."""
        ports = [int(s.address.rsplit(":", 1)[1]) for s in cluster.shards]
        router_port = int(cluster.target.rsplit(":", 1)[1])
        cluster.stop()
        if threshold is not None:
            cluster.celebrity_threshold = threshold
        cluster.fixed_ports = ports
        cluster.router_port = router_port
        cluster.shards, cluster.router = [], None
        cluster.start()

    async def disk_section(self) -> dict:
        """Bytes per tweet and per inbox entry, on a separate small cluster so that
        neither inbox trimming nor big compactions blur the difference: fresh
        accounts, a restart before each size reading (write-ahead log -> tables)."""
        n = self.plan.disk_posts
        followers = self.plan.disk_followers
        authors = 5
        cluster = MurmurCluster(
            self.work / "disk", self.args.shards, WRITE_ALL, self.args.inbox_cap, "disk"
        ).start()
        try:
            system = System("disk", cluster.target, cluster.cpu, cluster)
            handles = [f"{self.tag}ds"] + [f"{self.tag}da{i}" for i in range(authors)]
            handles += [f"{self.tag}df{i}" for i in range(followers)]
            async with loader.channel(system.target) as channel:
                stub = pb_grpc.MurmurStub(channel)
                ids = await loader.create_users(stub, handles, 64)
                silent, author_ids, follower_ids = ids[0], ids[1 : 1 + authors], ids[1 + authors :]
                await loader.follow_all(
                    stub, [(f, a) for f in follower_ids for a in author_ids], 128
                )
            await self.quiet(system)
            sizes = [cluster.disk()]
            self.restart_cluster(cluster)
            sizes.append(cluster.disk())
            batches = [
                [(silent, self.texts[i % len(self.texts)]) for i in range(n)],
                [(author_ids[i % authors], self.texts[i % len(self.texts)]) for i in range(n)],
            ]
            for index, posts in enumerate(batches):
                async with loader.channel(cluster.target) as channel:
                    stub = pb_grpc.MurmurStub(channel)
                    await loader.post_all(stub, posts, 32, tag=f"{self.tag}-disk{index}")
                await self.quiet(System("disk", cluster.target, cluster.cpu, cluster))
                self.restart_cluster(cluster)
                sizes.append(cluster.disk())
        finally:
            cluster.stop()
        base, after_tweets, after_fanout = sizes[1], sizes[2], sizes[3]
        entries = n * followers
        per_tweet = {k: (after_tweets[k] - base[k]) / n for k in base}
        per_entry = {
            k: (after_fanout[k] - after_tweets[k] - n * per_tweet[k]) / entries for k in base
        }
        return {
            "method": "fresh small cluster; sizes read after a restart; apparent = file sizes,"
            " du = allocated blocks",
            "tweets_without_followers": n,
            "tweets_with_followers": n,
            "followers_each": followers,
            "inbox_entries": entries,
            "bytes_base": base,
            "bytes_after_tweets": after_tweets,
            "bytes_after_fanout": after_fanout,
            "bytes_per_tweet": {k: round(v, 1) for k, v in per_tweet.items()},
            "bytes_per_inbox_entry": {k: round(v, 1) for k, v in per_entry.items()},
            "note": "tables uncompressed (the shards' default); a tweet's bytes include the "
            "author's own inbox copy, the request-id index and the outbox record's churn",
        }

    # the whole run --------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, section: str) -> Iterator[None]:
        """Time one section into ``timings`` (kept only if it finishes)."""
        started = time.monotonic()
        yield
        self.timings[section] = time.monotonic() - started

    async def run(self) -> dict:
        """Murmur's sections on the hybrid cluster, then the join design with
        the machine to itself, then the other strategies, the fan-out and the
        disk (or the fan-out alone on a ``--target``)."""
        args, res = self.args, self.result
        self.runner = PhaseRunner(max(1, args.workers), progress=not args.no_progress)
        await asyncio.get_running_loop().run_in_executor(None, self.runner.warm)
        try:
            system, peak = await self.hybrid_sections()
            if self.cluster is not None:
                self.cluster.stop()  # Murmur paused so that the join has the machine
            await self.join_section()
            if args.target:
                with self.timed("fanout"):
                    res["fanout"] = await self.fanout_section(system, peak)
            else:
                await self.other_strategies(system, peak)
        finally:
            if self.cluster is not None:
                self.cluster.stop()
            self.runner.close()
            if not args.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        res["timings_s"] = {k: round(v, 1) for k, v in self.timings.items()}
        res["timings_s"]["total"] = round(time.monotonic() - self.started, 1)
        res["work_dir"] = str(self.work) if args.keep_work else None
        return res

    async def hybrid_sections(self) -> tuple[System, float]:
        """Load, closed loop, side by side, rate sweep, followee sweep and the
        hybrid strategy, on the cluster started with the default threshold
        (or the given target). Returns it with the mix's peak throughput."""
        args, res = self.args, self.result
        hybrid = f"hybrid-{args.threshold}"
        with self.timed("load"):
            if args.target:
                system = System("target", args.target)
            else:
                self.log(f"starting {args.shards} shards + router (threshold {args.threshold})")
                self.cluster, system = self.start_cluster(hybrid, args.threshold)
            res["load"] = {"murmur": await self.load_murmur(system)}
        with self.timed("closed_loop"):
            res["closed_loop"] = {"murmur": await self.main_phases(system)}
        peak = max(r["throughput"] for r in res["closed_loop"]["murmur"]["mix"].values())
        with self.timed("side_by_side"):
            res["side_by_side"] = await self.side_by_side(system)
        with self.timed("rate_sweep"):
            res["rate_sweep"] = await self.rate_sweep(system, peak)
        with self.timed("followee_sweep"):
            sweep: dict[str, Any] = {"sizes": self.plan.followee_sizes}
            res["followee_sweep"] = sweep
            sweep["murmur_setup"] = await self.sweep_setup_murmur(system)
            sweep["murmur"] = await self.sweep_reads(system)
        res["strategies"] = {}
        if args.target:
            res["strategies"]["skipped"] = "--target: strategies need restarting the cluster"
        else:
            with self.timed("strategy_hybrid"):
                res["strategies"][hybrid] = await self.strategy(system, hybrid, args.threshold)
            with self.timed("fsync_cost"):
                system, res["fsync_cost"] = await self.fsync_cost(system)
        return system, peak

    async def join_section(self) -> None:
        """The join design behind the same API; its followee sweep joins Murmur's."""
        res = self.result
        with self.timed("join"):
            res["join"] = await self.run_join()
            sweep = res["followee_sweep"]
            sweep["join"] = res["join"].pop("followee_sweep")
            sweep["join_query_alone"] = res["join"].pop("followee_sweep_query_alone")

    async def other_strategies(self, system: System, peak: float) -> None:
        """Pure fan-out on write (with the fan-out section on that cluster),
        then pure fan-out on read, then the disk section. ``self.cluster``
        always names the cluster running, for ``run`` to stop."""
        res = self.result
        assert self.cluster is not None
        for label, threshold in (("write-all", WRITE_ALL), ("read-all", READ_ALL)):
            with self.timed(f"strategy_{label}"):
                if self.plan.strategy_fresh_load:
                    self.cluster.stop()
                    shutil.rmtree(self.work / "murmur", ignore_errors=True)
                    self.cluster, system = self.start_cluster(label, threshold)
                    setup = {"fresh_load": await self.load_murmur(system)}
                else:
                    system, setup = await self.restart_with(self.cluster, system, label, threshold)
                measured = await self.strategy(system, label, threshold)
                res["strategies"][label] = {"setup": setup, **measured}
            if threshold == WRITE_ALL:
                with self.timed("fanout"):
                    res["fanout"] = await self.fanout_section(system, peak, measure_peak=True)
                    res["fanout"]["cluster"] = f"{label} (threshold {threshold})"
            if self.remaining() < 0:
                self.log("time limit reached; skipping the remaining strategies")
                break
        res["server_rss_bytes"] = self.cluster.rss()
        self.cluster.stop()
        with self.timed("disk"):
            res["disk"] = await self.disk_section()


def loop_share(cluster: MurmurCluster | None, before: float | None, seconds: float) -> float | None:
    """The share of a phase the shards' event loops spent waiting on fsyncs,
    averaged over the shards (None without a cluster of ours, whose reading
    ``before`` is then None too)."""
    if cluster is None or before is None or seconds <= 0:
        return None
    waited = cluster.loop_fsync_s() - before
    return round(waited / seconds / max(1, cluster.shard_count), 4)


def round_means(phases: list[dict]) -> dict:
    """One side-by-side round: each operation's mean throughput, p99 and
    share of time the shards' loops waited on fsyncs over its phases (its
    failed calls summed), with the phases themselves kept under
    ``"phases"``."""
    row: dict[str, Any] = {}
    for op in dict.fromkeys(phase["op"] for phase in phases):
        mine = [phase for phase in phases if phase["op"] == op]
        shares = [phase.get("loop_fsync_share") for phase in mine]
        shares = [share for share in shares if share is not None]
        row[op] = {
            "throughput": statistics.fmean(phase["throughput"] for phase in mine),
            "p99_ms": statistics.fmean(phase["p99_ms"] for phase in mine),
            "ops_failed": sum(phase["ops_failed"] for phase in mine),
            "loop_fsync_share": round(statistics.fmean(shares), 4) if shares else None,
        }
    row["phases"] = phases
    return row


def paired_ratios(rounds: list[dict]) -> dict[str, dict]:
    """Per-round ratios to Ping (throughput of home and post, p99 of home)
    and their medians (with an even count of rounds, the mean of the middle
    two)."""
    pairs = {
        "home_throughput": ("home", "throughput"),
        "home_p99": ("home", "p99_ms"),
        "post_throughput": ("post", "throughput"),
    }
    out = {}
    for name, (op, field_name) in pairs.items():
        if not all(op in r for r in rounds):
            continue  # rounds without this operation (fsync_cost's rounds read no homes)
        per_round = [
            round(r[op][field_name] / r["ping"][field_name], 3)
            if r["ping"][field_name] > 0
            else None
            for r in rounds
        ]  # None keeps a round without Ping in its place
        measured = [x for x in per_round if x is not None]
        out[name] = {
            "per_round": per_round,
            "median": round(statistics.median(measured), 3) if measured else None,
        }
    return out


def size_result(result: dict, op: str) -> dict:
    """One reader group's part of an interleaved phase, shaped as a phase of
    plain ``home`` reads (the phase's CPU figures are shared by every group,
    so they are left out)."""
    shared = ("mode", "workers", "duration_s", "concurrency", "machine")
    stats = result["ops"][op]
    return {
        **{key: result[key] for key in shared if key in result},
        "ops_ok": stats["count"],
        "ops_failed": sum(stats["errors"].values()),
        "ops": {"home": stats},
    }


def median_round(results: list[dict]) -> dict:
    """The round with the median home p50, with every round's p50 attached."""

    def p50(result: dict) -> float:
        return result.get("ops", {}).get("home", {}).get("p50_ms", float("inf"))

    chosen = dict(sorted(results, key=p50)[len(results) // 2])
    chosen["round_p50s_ms"] = [p50(r) for r in results]
    return chosen


def crossing(steps: list[dict]) -> dict:
    """The offered rate at which p99 first exceeds the limit (interpolated)."""
    previous = None
    for step in steps:
        p99 = step["all_ops"]["p99_ms"]
        if p99 > P99_LIMIT_MS or step["ops_failed"] > 0.01 * max(1, step["ops_ok"]):
            if previous is None:
                return {"p99_crossing_rate": step["offered_rate"], "crossing": "at or below"}
            r0, p0 = previous["offered_rate"], previous["all_ops"]["p99_ms"]
            r1 = step["offered_rate"]
            ratio = (P99_LIMIT_MS - p0) / (p99 - p0) if p99 > p0 else 1.0
            return {
                "p99_crossing_rate": round(r0 + (r1 - r0) * max(0.0, min(1.0, ratio)), 1),
                "crossing": "interpolated",
            }
        previous = step
    top = steps[-1]["offered_rate"] if steps else 0
    return {"p99_crossing_rate": top, "crossing": "above the highest rate tested"}


def delivery_summary(results: list[dict]) -> dict:
    seen = [r for r in results if not r["timed_out"]]
    out: dict[str, Any] = {
        "probes": len(results),
        "timed_out": len(results) - len(seen),
        "all": summarize_ms([r["visible_ms"] for r in seen]) if seen else {},
        "post": summarize_ms([r["post_ms"] for r in results]) if results else {},
        "by_followers": {},
    }
    for low, high in [(1, 9), (10, 99), (100, 999), (1000, 10**9)]:
        group = [r["visible_ms"] for r in seen if low <= r["followers"] <= high]
        if group:
            out["by_followers"][f"{low}-{high if high < 10**9 else 'max'}"] = summarize_ms(group)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    os.makedirs(args.out, exist_ok=True)
    bench.log(
        f"murmur-bench {bench.plan.mode}: graph {bench.graph.stats()}, texts {bench.text_source}"
    )
    if args.graph == "auto" and not args.tiny and not EDGES_FILE.exists():
        # a checkout away from the workspace's shared/ gets numbers from
        # another graph than the README's: say so before 15 minutes of them
        bench.log(
            f"no real graph at {EDGES_FILE}: this run uses a generated one"
            " (--graph real refuses to run without it)"
        )
    try:
        import uvloop

        result = uvloop.run(bench.run())
    except ImportError:
        result = asyncio.run(bench.run())
    from bench.report import write_reports

    paths = write_reports(result, Path(args.out), bench.name)
    bench.log("wrote " + ", ".join(str(p) for p in paths))
    print(Path(paths[1]).read_text())


if __name__ == "__main__":
    main()

"""``make soak``: the mixed workload for N minutes on the real graph, with a
random kill -9 every minute, slots moving between the shards every 15
seconds and the celebrity threshold changing every 40, then the oracle
comparison.

    python -m tests.faults.soak [--minutes 10] [--edges 20000] [--move-every 15]
                                [--flip-every 40] [--out soak.json]

Reports operations, errors by code, kills survived, slot moves and threshold
changes (done, and cut short by a kill), acknowledged writes lost (must be
0), whether every slot ended with one owner, the consistency check's
findings and the users whose celebrity flag the last threshold does not
allow (both must be none), and each process's resident memory at the start
and the end. Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client import MurmurClient, NotFound
from client.admin_client import AdminClient
from murmur.slots import SLOT_COUNT
from tests.datasets import load_edges, load_texts
from tests.faults.operators import (
    KillWindows,
    OperatorLoop,
    SlotShuffler,
    ThresholdFlipper,
    slot_holders,
    wrong_statuses,
)
from tests.faults.workload import Workload, verify
from tests.integration.cluster import NO_RATE_LIMITS, LocalCluster, eventually
from tests.timeline.oracle import JoinOracle


def rss_kb(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def memory(cluster: LocalCluster) -> dict[str, int]:
    sizes = {f"shard {i}": rss_kb(cluster.shard_pid(i)) for i in range(cluster.shards)}
    sizes["router"] = rss_kb(cluster.router_pid)
    return sizes


def load(cluster: LocalCluster, oracle: JoinOracle, edges: int) -> list[int]:
    graph = load_edges(max_edges=edges)
    nodes = sorted({n for edge in graph for n in edge})
    with MurmurClient(cluster.target, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        ids = dict(
            zip(
                nodes,
                pool.map(lambda n: client.create_user(f"s{n % 10**12}").user_id, nodes),
                strict=True,
            )
        )
        list(pool.map(lambda e: client.follow(ids[e[0]], ids[e[1]]), graph))
    for a, b in graph:
        oracle.follow(ids[a], ids[b])
    return list(ids.values())


TOKEN = "soak-operator-token"


def one_owner_each(cluster: LocalCluster) -> None:
    """Every slot is owned by exactly one shard, by the shards' own maps."""
    holders = slot_holders(cluster, cluster.shards)
    wrong = {s: holders.get(s, []) for s in range(SLOT_COUNT) if len(holders.get(s, [])) != 1}
    assert not wrong, f"{len(wrong)} slots without exactly one owner: {list(wrong.items())[:5]}"


def celebrity_flags(client: MurmurClient, users: list[int]) -> dict[int, tuple[bool, int]]:
    """User id -> (celebrity flag, followers), read 16 at a time."""

    def flag(user_id: int) -> tuple[bool, int]:
        user = client.get_user(user_id=user_id)
        return user.celebrity, user.follower_count

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(users, pool.map(flag, users), strict=True))


def stop_operators(operators: list[OperatorLoop]) -> None:
    """Stop them; the soak fails if one failed or (running) never succeeded."""
    for operator in operators:
        operator.stop()
    for operator in operators:
        if operator.failure:
            raise SystemExit(f"soak failed: {operator.failure}")
        if operator.every_s > 0 and not operator.outcomes[operator.done]:
            raise SystemExit(f"soak failed: {type(operator).__name__} never succeeded")


def lost_tweets(client: MurmurClient, tweet_ids: list[int]) -> int:
    """Acknowledged tweets the cluster no longer serves. Read 16 at a time:
    one by one, the ~60k tweets of a 10-minute run took longer than the run."""

    def missing(tweet_id: int) -> bool:
        try:
            return client.get_tweet(tweet_id).tweet_id != tweet_id
        except NotFound:
            return True

    with ThreadPoolExecutor(max_workers=16) as pool:
        return sum(pool.map(missing, tweet_ids))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--edges", type=int, default=20_000, help="edges of the real graph to load")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills")
    parser.add_argument(
        "--move-every", type=float, default=15.0, help="seconds between slot moves (0: none)"
    )
    parser.add_argument(
        "--flip-every",
        type=float,
        default=40.0,
        help="seconds between celebrity threshold changes, 200 <-> 120 (0: none)",
    )
    parser.add_argument("--out", default="bench/results/soak.json")
    args = parser.parse_args()
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="murmur-soak-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            shards=3,
            celebrity_threshold=200,
            router_args=["--admin-token", TOKEN],
            shard_args=NO_RATE_LIMITS,  # the graph loads thousands of follows a second
        ).start()
        try:
            oracle = JoinOracle()
            started = time.monotonic()
            users = load(cluster, oracle, args.edges)
            print(f"loaded {len(users)} users in {time.monotonic() - started:.0f}s", flush=True)
            rss_start = memory(cluster)
            texts = [t for t in load_texts(20_000) if len(t) <= 280]
            workload = Workload(lambda: cluster.target, users, oracle, texts, seed=3)
            workload.start()
            kill_windows = KillWindows()
            shuffler = SlotShuffler(lambda: cluster.target, TOKEN, args.move_every, kill_windows)
            flipper = ThresholdFlipper(
                lambda: cluster.target, TOKEN, args.flip_every, kill_windows, thresholds=(200, 120)
            )
            operators: list[OperatorLoop] = [shuffler, flipper]
            for operator in operators:
                if operator.every_s > 0:
                    operator.start()
            kills: list[str] = []
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(args.kill_every, max(0.0, end - time.monotonic())))
                if time.monotonic() >= end or workload.failure or any(o.failure for o in operators):
                    break
                with kill_windows.down():
                    if rng.random() < 0.25:
                        cluster.kill_router()
                        cluster.restart_router(same_port=True)
                        kills.append("router")
                    else:
                        victim = rng.randrange(cluster.shards)
                        cluster.kill_shard(victim)
                        time.sleep(rng.uniform(0.2, 2.0))
                        cluster.restart_shard(victim)
                        kills.append(f"shard {victim}")
                print(
                    f"{len(kills)} kills, ops {dict(workload.ops)}, "
                    f"slot moves {dict(shuffler.outcomes)}, thresholds {dict(flipper.outcomes)}",
                    flush=True,
                )
            stop_operators(operators)
            workload.stop()
            rss_end = memory(cluster)
            eventually(lambda: one_owner_each(cluster), timeout=60, interval=1)
            with MurmurClient(cluster.target, timeout=30) as client:
                eventually(
                    lambda: verify(client, oracle, users, rng.sample(users, 100), workload.bios),
                    timeout=120,
                    interval=2,
                )
                lost = lost_tweets(client, list(oracle.tweets))
                with AdminClient(cluster.target, TOKEN, timeout=120) as admin:
                    consistency = admin.check_consistency()
                    threshold = flipper.settle(admin)
                wrong_flags = wrong_statuses(celebrity_flags(client, users), threshold)
            report = {
                "minutes": args.minutes,
                "users": len(users),
                "edges": args.edges,
                "operations": dict(workload.ops),
                "errors_by_code": dict(workload.errors),
                "kills_survived": kills,
                "slot_moves": dict(shuffler.outcomes),
                "slots_moved": shuffler.slots_moved,
                "one_owner_per_slot": True,
                "threshold_changes": dict(flipper.outcomes),
                "final_threshold": threshold,
                "wrong_celebrity_flags": len(wrong_flags),
                "consistency": {
                    "one_sided_edges": consistency.one_sided_edges,
                    "wrong_counters": consistency.wrong_counters,
                    "findings": list(consistency.findings),
                },
                "acknowledged_tweets": len(oracle.tweets),
                "data_lost": lost,
                "oracle_match": True,
                "rss_kb_start": rss_start,
                "rss_kb_end": rss_end,
            }
        finally:
            cluster.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    clean = not (consistency.one_sided_edges or consistency.wrong_counters or wrong_flags)
    sys.exit(0 if report["data_lost"] == 0 and clean else 1)


if __name__ == "__main__":
    main()

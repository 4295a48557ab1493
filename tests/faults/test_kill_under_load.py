"""kill -9 of each kind of process at random points under a running
workload, then restart: every acknowledged write is present exactly once,
counters are exact, and home timelines equal the join."""

from __future__ import annotations

import time

import grpc
import pytest

from murmur.v1 import admin_pb2, admin_pb2_grpc
from tests.faults.conftest import TOKEN, settled
from tests.faults.workload import Workload, verify

pytestmark = pytest.mark.integration


def run_with_chaos(loaded, chaos) -> Workload:
    cluster, client, oracle, users, texts, rng = loaded
    workload = Workload(lambda: cluster.target, users, oracle, texts, seed=rng.randrange(1000))
    workload.start()
    try:
        time.sleep(1.0)  # traffic before the first kill
        chaos(cluster, rng)
        time.sleep(2.0)  # and after the last restart
    finally:
        workload.stop()
    settled(client, oracle, users)
    verify(client, oracle, users, rng.sample(users, 40))
    assert set(workload.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}, (
        workload.errors
    )
    assert workload.ops["post"] >= 5, workload.ops
    return workload


def test_kill9_shards_at_random_points(loaded):
    def chaos(cluster, rng):
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.5))
            victim = rng.randrange(3)
            cluster.kill_shard(victim)
            time.sleep(rng.uniform(0.1, 1.0))
            cluster.restart_shard(victim)

    run_with_chaos(loaded, chaos)


def test_kill9_router_at_random_points(loaded):
    def chaos(cluster, rng):
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.5))
            cluster.kill_router()
            time.sleep(rng.uniform(0.1, 0.5))
            cluster.restart_router(same_port=True)

    run_with_chaos(loaded, chaos)


def test_kill9_a_shard_mid_fanout(loaded):
    cluster, client, oracle, users, _texts, _rng = loaded
    star = max(users, key=oracle.followers_of)
    star_shard = cluster.shard_for_user(star)

    def chaos(cluster, rng):
        for i in range(40):
            tweet = client.post_tweet(star, f"burst {i}", request_id=f"burst-{i}")
            oracle.post(tweet.tweet_id, tweet.user_id, tweet.text)
        cluster.kill_shard(star_shard)
        time.sleep(0.3)
        cluster.restart_shard(star_shard)

    run_with_chaos(loaded, chaos)


def test_kill9_a_shard_mid_slot_move(loaded):
    metadata = (("authorization", f"Bearer {TOKEN}"),)

    def chaos(cluster, rng):
        with grpc.insecure_channel(cluster.target) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            slots = [s for s in range(4096) if cluster.shard_for_slot(s) == 0][:256]
            moves = admin.MoveSlots(
                admin_pb2.MoveSlotsRequest(slots=slots, target_shard=1), metadata=metadata
            )
            try:
                for progress in moves:
                    if progress.slots_done >= 64:  # some chunks handed over, more to come
                        cluster.kill_shard(0)
                        break
            except grpc.RpcError:
                pass
            moves.cancel()
            time.sleep(0.3)
            cluster.restart_shard(0)

    run_with_chaos(loaded, chaos)

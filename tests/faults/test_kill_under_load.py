"""kill -9 of each kind of process at random points under a running
workload, then restart: every acknowledged write is present exactly once,
counters are exact, and home timelines equal the join."""

from __future__ import annotations

import time

import grpc
import pytest

from murmur.slots import SLOT_COUNT
from murmur.v1 import admin_pb2, admin_pb2_grpc
from server.slot_moves import CHUNK
from tests.faults.conftest import TOKEN, settled
from tests.faults.operators import slot_holders
from tests.faults.workload import Workload, verify
from tests.integration.cluster import eventually

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
    verify(client, oracle, users, rng.sample(users, 40), workload.bios)
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
    cluster = loaded[0]
    moving = [s for s in range(SLOT_COUNT) if cluster.shard_for_slot(s) == 0][: 4 * CHUNK]
    killed_after: list[int] = []  # slots_done when shard 0 was killed

    def chaos(cluster, rng):
        with grpc.insecure_channel(cluster.target) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            moves = admin.MoveSlots(
                admin_pb2.MoveSlotsRequest(slots=moving, target_shard=1), metadata=metadata
            )
            # an error before the kill (a refused move, say) fails the test
            for progress in moves:
                if progress.slots_done >= CHUNK:  # one chunk handed over, more to come
                    cluster.kill_shard(0)
                    killed_after.append(progress.slots_done)
                    break
            else:
                pytest.fail("the move ended before the first chunk was handed over")
            moves.cancel()
            time.sleep(0.3)
            cluster.restart_shard(0)

    run_with_chaos(loaded, chaos)
    assert killed_after and killed_after[0] < len(moving), killed_after

    # every slot has exactly one owner, once the interrupted hand-over settles
    def one_owner_each() -> dict[int, int]:
        holders = slot_holders(cluster)
        wrong = {s: holders.get(s, []) for s in range(SLOT_COUNT) if len(holders.get(s, [])) != 1}
        assert not wrong, (
            f"{len(wrong)} slots without exactly one owner: {dict(list(wrong.items())[:5])}"
        )
        return {slot: owners[0] for slot, owners in holders.items()}

    owner = eventually(one_owner_each, timeout=30, interval=0.2)
    # only the moving slots may have changed hands...
    assert all(owner[s] == cluster.shard_for_slot(s) for s in set(range(SLOT_COUNT)) - set(moving))
    # ...each chunk wholly (the move completed it or rolled it back), and the
    # chunks reported done before the kill stayed done
    for start in range(0, len(moving), CHUNK):
        chunk = moving[start : start + CHUNK]
        got = {owner[s] for s in chunk}
        assert len(got) == 1 and got <= {0, 1}, (start, got)
        if start + CHUNK <= killed_after[0]:
            assert got == {1}, f"chunk at {start} was reported handed over, yet is on shard 0"

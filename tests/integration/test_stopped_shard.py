"""A shard that stops answering (SIGSTOP): its users fail fast with
UNAVAILABLE naming it, others are unaffected, home timelines that need it
come back partial, and its fan-out waits in the outbox until it returns."""

from __future__ import annotations

import os
import signal
import time

import pytest

from client import MurmurClient
from client.errors import DeadlineExceeded, Unavailable
from tests.integration.cluster import LocalCluster, eventually

pytestmark = pytest.mark.integration


def test_a_stopped_shard_fails_fast_and_degrades_home_timelines(tmp_path):
    with LocalCluster(tmp_path, shards=3, celebrity_threshold=2) as cluster:
        client = MurmurClient(cluster.target, timeout=5.0, retries=False)
        star = client.create_user(cluster.handle_on_shard(2))
        fans = [client.create_user(cluster.handle_on_shard(i % 2)) for i in range(3)]
        for fan in fans:
            client.follow(fan.user_id, star.user_id)
        eventually(lambda: client.get_user(user_id=star.user_id).celebrity, timeout=10)
        client.post_tweet(star.user_id, "pulled at read time")
        for fan in fans:
            client.post_tweet(fan.user_id, f"fan {fan.handle}")
        pid = cluster.shard_pid(2)
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises((Unavailable, DeadlineExceeded)) as first:
                client.get_user(user_id=star.user_id)
            # the router gives up a moment before the caller does, so even
            # the calls caught in flight hear which shard did not answer
            assert "shard 2" in str(first.value)
            time.sleep(1.5)  # the router's probe marks the shard suspect
            started = time.monotonic()
            with pytest.raises(Unavailable) as caught:
                client.get_user(user_id=star.user_id)
            assert time.monotonic() - started < 1.0, "a stopped shard must fail fast"
            assert "shard 2" in str(caught.value)
            page = client.home_timeline(fans[0].user_id)
            assert page.partial and list(page.unavailable_shards) == [2]
            assert [t.text for t in page.tweets] == [f"fan {fans[0].handle}"]
            client.post_tweet(fans[1].user_id, "others keep working")
        finally:
            os.kill(pid, signal.SIGCONT)

        def recovered():
            page = client.home_timeline(fans[0].user_id)
            assert not page.partial
            assert "pulled at read time" in [t.text for t in page.tweets]

        eventually(recovered, timeout=15)
        client.close()


def test_a_shard_back_after_a_long_outage_serves_again_within_seconds(tmp_path):
    """gRPC's reconnect backoff grows to minutes by default; the router's
    channels to shards cap it at a second, so a shard that was down ~20 s is
    used again as soon as it listens."""
    with LocalCluster(tmp_path, shards=2) as cluster:
        client = MurmurClient(cluster.target, timeout=5.0, retries=False)
        user = client.create_user(cluster.handle_on_shard(1))
        cluster.kill_shard(1)
        down_until = time.monotonic() + 20
        while time.monotonic() < down_until:  # callers keep the router trying
            with pytest.raises(Unavailable):
                client.get_user(user_id=user.user_id)
            time.sleep(0.5)
        cluster.restart_shard(1)
        back = time.monotonic()

        eventually(lambda: client.get_user(user_id=user.user_id), timeout=30, interval=0.1)
        assert time.monotonic() - back < 4.0
        client.close()

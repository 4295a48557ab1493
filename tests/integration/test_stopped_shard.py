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
            with pytest.raises((Unavailable, DeadlineExceeded)):
                client.get_user(user_id=star.user_id)
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

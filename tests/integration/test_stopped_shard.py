"""A shard that stops answering (SIGSTOP): its users fail fast with
UNAVAILABLE naming it, others are unaffected, home timelines that need it
come back partial, and its share of fan-out waits parked on each sender
until it returns, while the other shards' share goes on.

"Fast" is shown without a stopwatch: once the router's probe has marked
the shard down, a caller with plenty of time (30 s, no retries) still gets
UNAVAILABLE naming the shard. A router that waited on the stopped shard
would instead run into that deadline (DEADLINE_EXCEEDED)."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from client import MurmurClient
from client.errors import DeadlineExceeded, Unavailable
from murmur.v1 import shard_pb2, shard_pb2_grpc
from tests.integration.cluster import NO_RATE_LIMITS, LocalCluster, eventually

pytestmark = pytest.mark.integration

PATIENT_S = 30.0  # far longer than any shard call the router would wait on
STOPPED = 2


def refused_as_down(client: MurmurClient, user_id: int, shard: int) -> None:
    """Passes once the router refuses ``user_id``'s call at once (UNAVAILABLE
    naming ``shard``); a DEADLINE_EXCEEDED means it still waited on the shard,
    so ``eventually`` keeps polling."""
    try:
        client.get_user(user_id=user_id)
    except Unavailable as exc:
        assert f"shard {shard}" in exc.details, exc.details
        return
    except DeadlineExceeded as exc:
        raise AssertionError(f"the router still waits on shard {shard}: {exc}") from None
    pytest.fail(f"a call to stopped shard {shard} succeeded")


def test_a_stopped_shard_fails_fast_and_degrades_home_timelines(tmp_path):
    with LocalCluster(tmp_path, shards=3, celebrity_threshold=2) as cluster:
        quick = MurmurClient(cluster.target, timeout=2.0, retries=False)
        patient = MurmurClient(cluster.target, timeout=PATIENT_S, retries=False)
        star = quick.create_user(cluster.handle_on_shard(STOPPED))
        fans = [quick.create_user(cluster.handle_on_shard(i % 2)) for i in range(3)]
        for fan in fans:
            quick.follow(fan.user_id, star.user_id)
        eventually(lambda: quick.get_user(user_id=star.user_id).celebrity, timeout=10)
        quick.post_tweet(star.user_id, "pulled at read time")
        for fan in fans:
            quick.post_tweet(fan.user_id, f"fan {fan.handle}")
        pid = cluster.shard_pid(STOPPED)
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises((Unavailable, DeadlineExceeded)) as first:
                quick.get_user(user_id=star.user_id)
            # the router gives up a moment before the caller does, so even
            # the calls caught in flight hear which shard did not answer
            assert f"shard {STOPPED}" in str(first.value)
            eventually(lambda: refused_as_down(quick, star.user_id, STOPPED), timeout=15)
            for _ in range(3):  # every call, not one lucky one, is refused at once
                with pytest.raises(Unavailable) as caught:
                    patient.get_user(user_id=star.user_id)
                assert f"shard {STOPPED}" in caught.value.details
            page = patient.home_timeline(fans[0].user_id)
            assert page.partial and list(page.unavailable_shards) == [STOPPED]
            assert [t.text for t in page.tweets] == [f"fan {fans[0].handle}"]
            patient.post_tweet(fans[1].user_id, "others keep working")
        finally:
            os.kill(pid, signal.SIGCONT)

        def recovered():
            page = patient.home_timeline(fans[0].user_id)
            assert not page.partial
            assert "pulled at read time" in [t.text for t in page.tweets]

        eventually(recovered, timeout=15)
        quick.close()
        patient.close()


def hold_outage(client: MurmurClient, user_id: int, seconds: float) -> None:
    """Keep calling the dead shard's user for ``seconds``: the router fails
    calls and reconnects with a growing backoff, as in a real outage. The
    pause only paces the calls; each must fail, the shard being dead."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with pytest.raises(Unavailable):
            client.get_user(user_id=user_id)
        time.sleep(0.2)


def test_a_shard_back_after_an_outage_serves_again(tmp_path):
    """The router keeps reconnecting to a shard that was down and uses it
    again once it listens. How soon (the 1 s reconnect backoff cap) is
    checked on the channel options in tests/unit/test_shard_channels.py;
    here only that it comes back, polled with a generous limit."""
    with LocalCluster(tmp_path, shards=2) as cluster:
        client = MurmurClient(cluster.target, timeout=5.0, retries=False)
        user = client.create_user(cluster.handle_on_shard(1))
        cluster.kill_shard(1)
        hold_outage(client, user.user_id, seconds=4.0)
        cluster.restart_shard(1)
        eventually(lambda: client.get_user(user_id=user.user_id), timeout=30, interval=0.1)
        client.close()


def parked_ops(cluster: LocalCluster, shard: int) -> dict[int, int]:
    with grpc.insecure_channel(cluster.shard_address(shard)) as channel:
        stats = shard_pb2_grpc.ShardStub(channel).GetStats(shard_pb2.GetStatsRequest(), timeout=10)
    return dict(stats.parked_ops)


def test_fanout_goes_on_to_the_other_shards_while_one_is_down(tmp_path):
    """More posts than one fan-out round takes (256 records) while shard 2
    is dead: shard 1's reader gets every one of them at once, shard 0 holds
    shard 2's share parked, and shard 2's reader gets them all once it is
    back."""
    with LocalCluster(tmp_path, shards=3, shard_args=NO_RATE_LIMITS) as cluster:
        client = MurmurClient(cluster.target, timeout=10.0)
        author = client.create_user(cluster.handle_on_shard(0)).user_id
        near = client.create_user(cluster.handle_on_shard(1)).user_id
        far = client.create_user(cluster.handle_on_shard(2)).user_id
        for reader in (near, far):
            client.follow(reader, author)
        # each follow reaches the author's shard through the follower's outbox
        eventually(lambda: _equal(client.get_user(user_id=author).follower_count, 2))
        cluster.kill_shard(2)
        last = [client.post_tweet(author, f"post {n}").tweet_id for n in range(300)][-1]

        def newest(reader: int) -> None:
            assert [t.tweet_id for t in client.home_timeline(reader).tweets][:1] == [last]

        eventually(lambda: newest(near), timeout=30)
        assert sum(parked_ops(cluster, 0).values()) > 0
        assert set(parked_ops(cluster, 0)) == {2}
        cluster.restart_shard(2)
        eventually(lambda: newest(far), timeout=30)
        eventually(lambda: assert_nothing_parked(cluster), timeout=30)
        texts = [t.text for t in client.home_timeline(far, page_size=100).tweets]
        assert texts == [f"post {n}" for n in range(299, 199, -1)]
        client.close()


def assert_nothing_parked(cluster: LocalCluster) -> None:
    assert not any(n for n in parked_ops(cluster, 0).values())


def _equal(got, want) -> None:
    assert got == want, (got, want)

"""Crashes and restarts: what was acknowledged survives, outages stay contained.

Every test here kills, restarts or stops servers, so each gets a cluster of
its own (``fresh_cluster``) instead of the module-wide one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import errors
from client.client import MurmurClient
from murmur.v1 import admin_pb2, admin_pb2_grpc
from murmur.v1 import murmur_pb2 as pb
from tests.integration.cluster import ROOT, LocalCluster, eventually, log_tail, scrape

pytestmark = pytest.mark.integration

DOWN = 1  # the shard these tests crash


def followers(client: MurmurClient, user_id: int) -> set[int]:
    return {u.user_id for u in client.iter_followers(user_id, page_size=200)}


def following(client: MurmurClient, user_id: int) -> set[int]:
    return {u.user_id for u in client.iter_following(user_id, page_size=200)}


def timeline(client: MurmurClient, user_id: int) -> list[int]:
    return [t.tweet_id for t in client.iter_user_timeline(user_id, page_size=200)]


def home(client: MurmurClient, user_id: int) -> list[int]:
    return [t.tweet_id for t in client.iter_home_timeline(user_id, page_size=200)]


def newest_first(*tweets: pb.Tweet) -> list[int]:
    return sorted((t.tweet_id for t in tweets), reverse=True)


def reachable(client: MurmurClient, user_id: int, timeout: float = 20.0) -> None:
    """Wait until the router can reach ``user_id``'s shard again (it reconnects
    with backoff after an outage)."""
    eventually(lambda: client.get_user(user_id=user_id), timeout=timeout)


# -- a crashed shard -----------------------------------------------------------------


def test_kill9_shard_keeps_every_acknowledged_write(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    client = MurmurClient(cluster.target)
    v1 = client.create_user(cluster.handle_on_shard(DOWN, "Vic"), display_name="Victim One")
    v2 = client.create_user(cluster.handle_on_shard(DOWN, "vic"), bio="second victim")
    o0 = client.create_user(cluster.handle_on_shard(0, "oth"))
    o2 = client.create_user(cluster.handle_on_shard(2, "oth"))
    assert [cluster.shard_for_user(u.user_id) for u in (v1, v2, o0, o2)] == [DOWN, DOWN, 0, 2]

    client.follow(v1.user_id, v2.user_id)  # both on the crashing shard
    client.follow(v1.user_id, o0.user_id)
    client.follow(o0.user_id, v1.user_id)
    client.follow(o2.user_id, v2.user_id)
    client.follow(v2.user_id, o2.user_id)
    client.follow(v2.user_id, o0.user_id)
    client.unfollow(v2.user_id, o0.user_id)
    o0_post = client.post_tweet(o0.user_id, "from shard 0")
    t0 = client.post_tweet(v1.user_id, "v1 first", request_id="v1-a")
    t1 = client.post_tweet(v1.user_id, "v1 to delete", request_id="v1-b")
    t2 = client.post_tweet(v1.user_id, "v1 third", request_id="v1-c")
    u0 = client.post_tweet(v2.user_id, "v2 first")
    t0 = client.edit_tweet(t0.tweet_id, v1.user_id, "v1 first, edited")
    client.delete_tweet(t1.tweet_id, v1.user_id)
    u1 = client.post_tweet(v2.user_id, "v2 last words")
    v3 = client.create_user(cluster.handle_on_shard(DOWN, "late"))
    cluster.kill_shard(DOWN)  # right after the last acknowledgement
    assert not cluster.shard_alive(DOWN)

    # --- while it is down: its users fail with UNAVAILABLE naming it ----------------
    down_calls = {
        "get_user": lambda: client.get_user(user_id=v1.user_id),
        "get_user by handle": lambda: client.get_user(handle=v2.handle),
        "create_user": lambda: client.create_user(cluster.handle_on_shard(DOWN, "new")),
        "post_tweet": lambda: client.post_tweet(v1.user_id, "into the void"),
        "get_tweet": lambda: client.get_tweet(t0.tweet_id),
        "edit_tweet": lambda: client.edit_tweet(t0.tweet_id, v1.user_id, "nope"),
        "delete_tweet": lambda: client.delete_tweet(t2.tweet_id, v1.user_id),
        "follow its user": lambda: client.follow(o0.user_id, v2.user_id),
        "follow by its user": lambda: client.follow(v1.user_id, o2.user_id),
        "user_timeline": lambda: client.user_timeline(v1.user_id),
        "home_timeline": lambda: client.home_timeline(v1.user_id),
        "list_followers": lambda: client.list_followers(v2.user_id),
        "list_following": lambda: client.list_following(v1.user_id),
        "ping": lambda: client.ping(v1.user_id),
    }
    for name, call in down_calls.items():
        with pytest.raises(errors.Unavailable) as caught:
            call()
        assert f"shard {DOWN}" in caught.value.details, (name, caught.value.details)

    # --- users on the other shards keep working --------------------------------------
    assert client.get_user(user_id=o0.user_id).handle == o0.handle
    assert client.get_user(handle=o2.handle.upper()).user_id == o2.user_id
    w = client.create_user(cluster.handle_on_shard(2, "wrk"))
    client.follow(w.user_id, o0.user_id)  # o0 also has a follower on the dead shard
    during = client.post_tweet(o0.user_id, "posted while shard 1 was down")
    assert timeline(client, o0.user_id) == newest_first(o0_post, during)
    assert client.ping(o2.user_id).shard_id == 2
    # fan-out between healthy shards goes on although o0 also fans out to shard 1
    eventually(lambda: _assert_home_has(client, w.user_id, {o0_post.tweet_id, during.tweet_id}))

    # --- back on the same port and data folder -----------------------------------------
    old_port = cluster.shard_port(DOWN)
    cluster.restart_shard(DOWN)
    assert cluster.shard_port(DOWN) == old_port
    reachable(client, v1.user_id)

    for user in (v1, v2, v3):
        assert client.get_user(user_id=user.user_id).handle == user.handle
        assert client.get_user(handle=user.handle.swapcase()).user_id == user.user_id
    assert client.get_user(user_id=v1.user_id).display_name == "Victim One"
    assert client.get_user(user_id=v2.user_id).bio == "second victim"

    assert following(client, v1.user_id) == {v2.user_id, o0.user_id}
    assert following(client, v2.user_id) == {o2.user_id}
    assert client.get_user(user_id=v1.user_id).following_count == 2
    assert client.get_user(user_id=v2.user_id).following_count == 1

    assert client.get_tweet(t0.tweet_id).text == "v1 first, edited"
    assert client.get_tweet(t0.tweet_id).HasField("edited_at")
    with pytest.raises(errors.NotFound):
        client.get_tweet(t1.tweet_id)
    assert timeline(client, v1.user_id) == newest_first(t0, t2)
    assert timeline(client, v2.user_id) == newest_first(u0, u1)
    assert client.get_user(user_id=v1.user_id).tweet_count == 2
    assert client.get_user(user_id=v2.user_id).tweet_count == 2
    # retries of acknowledged posts still find them, and do not bring back a delete
    assert client.post_tweet(v1.user_id, "v1 first", request_id="v1-a").tweet_id == t0.tweet_id
    with pytest.raises(errors.NotFound):
        client.post_tweet(v1.user_id, "v1 to delete", request_id="v1-b")
    assert timeline(client, v1.user_id) == newest_first(t0, t2)
    # ids keep increasing across the crash
    after = client.post_tweet(v1.user_id, "after the crash")
    assert after.tweet_id > max(t.tweet_id for t in (t0, t1, t2, u0, u1))

    expected_followers = {
        v1.user_id: {o0.user_id},
        v2.user_id: {v1.user_id, o2.user_id},
        o0.user_id: {v1.user_id, w.user_id},
        o2.user_id: {v2.user_id},
    }

    def edges_settled() -> None:
        for user_id, want in expected_followers.items():
            assert followers(client, user_id) == want, user_id
            assert client.get_user(user_id=user_id).follower_count == len(want), user_id

    eventually(edges_settled, timeout=15)

    def homes_settled() -> None:
        assert home(client, v1.user_id) == newest_first(t0, t2, after, u0, u1, o0_post, during)
        assert home(client, o0.user_id) == newest_first(o0_post, during, t0, t2, after)
        assert home(client, o2.user_id) == newest_first(u0, u1)
        tweets = {t.tweet_id: t for t in client.home_timeline(o0.user_id).tweets}
        assert tweets[t0.tweet_id].text == "v1 first, edited"

    eventually(homes_settled, timeout=15)
    client.close()


def _assert_home_has(client: MurmurClient, user_id: int, want: set[int]) -> None:
    assert want <= set(home(client, user_id))


def test_kill9_shard_during_fanout_loses_nothing(fresh_cluster: LocalCluster) -> None:
    """Crash the author's shard with its fan-out outbox still full; after the
    restart every follower on every shard gets every tweet exactly once."""
    cluster = fresh_cluster
    client = MurmurClient(cluster.target)
    author = client.create_user(cluster.handle_on_shard(DOWN, "auth"))
    readers = [client.create_user(cluster.handle_on_shard(i % 3, "rdr")) for i in range(9)]
    for reader in readers:
        client.follow(reader.user_id, author.user_id)
    eventually(lambda: _assert_follower_count(client, author.user_id, len(readers)))
    posted = [client.post_tweet(author.user_id, f"burst {i}") for i in range(40)]
    victim = posted[5]
    client.delete_tweet(victim.tweet_id, author.user_id)
    edited = client.edit_tweet(posted[6].tweet_id, author.user_id, "burst 6, edited")
    cluster.kill_shard(DOWN)
    cluster.restart_shard(DOWN)
    reachable(client, author.user_id)
    want = newest_first(*(t for t in posted if t.tweet_id != victim.tweet_id))

    def delivered() -> None:
        for reader in readers:
            page = client.home_timeline(reader.user_id, page_size=200)
            assert [t.tweet_id for t in page.tweets] == want, reader.user_id
            texts = {t.tweet_id: t.text for t in page.tweets}
            assert texts[edited.tweet_id] == "burst 6, edited"

    eventually(delivered, timeout=15)
    client.close()


def _assert_follower_count(client: MurmurClient, user_id: int, count: int) -> None:
    assert client.get_user(user_id=user_id).follower_count == count


def test_unsafe_no_fsync_still_survives_a_kill9(tmp_path: Path) -> None:
    """``--unsafe-no-fsync`` gives up durability against a power cut only:
    LevelDB hands each write to the OS before it returns, so a killed shard
    still has every write it acknowledged. It says so in its log, in
    ``murmur_unsafe_no_fsync`` and in the Admin API's cluster status, and its
    group commit syncs nothing meanwhile."""
    cluster = LocalCluster(
        tmp_path / "cluster",
        shards=2,
        extra_args=["--metrics-port", "0"],
        shard_args=["--unsafe-no-fsync"],
        router_args=["--admin-token", "operator"],
    ).start()
    try:
        with MurmurClient(cluster.target) as client:
            author = client.create_user(cluster.handle_on_shard(1, "unsafe"))
            reader = client.create_user(cluster.handle_on_shard(0, "reader"))
            client.follow(reader.user_id, author.user_id)
            posted = [client.post_tweet(author.user_id, f"unsynced {i}") for i in range(20)]
            shard_metrics = scrape(cluster.tmp_path / "shard-1.log")
            cluster.kill_shard(1)
            cluster.restart_shard(1)
            reachable(client, author.user_id)
            assert timeline(client, author.user_id) == newest_first(*posted)
            eventually(lambda: _assert_home(client, reader.user_id, newest_first(*posted)))
        assert "--unsafe-no-fsync: writes are acknowledged without an fsync" in (
            cluster.shard_log(1)
        )
        assert 'murmur_unsafe_no_fsync{shard="1"} 1.0' in shard_metrics
        assert 'murmur_fsyncs_total{shard="1"} 0.0' in shard_metrics
        with grpc.insecure_channel(cluster.target) as channel:
            status = admin_pb2_grpc.AdminStub(channel).GetClusterStatus(
                admin_pb2.GetClusterStatusRequest(),
                metadata=[("authorization", "Bearer operator")],
                timeout=10,
            )
        assert [(s.shard_id, s.unsafe_no_fsync) for s in status.shards] == [(0, True), (1, True)]
    finally:
        cluster.stop()


def _assert_home(client: MurmurClient, user_id: int, want: list[int]) -> None:
    assert home(client, user_id) == want


# -- a crashed router --------------------------------------------------------------------


def test_kill9_router_and_restart_serves_the_same_data(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    with MurmurClient(cluster.target) as client:
        alice = client.create_user(cluster.handle_on_shard(0, "alice"))
        bob = client.create_user(cluster.handle_on_shard(2, "bob"))
        client.follow(alice.user_id, bob.user_id)
        posts = [client.post_tweet(bob.user_id, f"bob {i}") for i in range(3)]
        eventually(lambda: _assert_home_has(client, alice.user_id, {t.tweet_id for t in posts}))
        before = {
            "alice": client.get_user(user_id=alice.user_id),
            "bob": client.get_user(user_id=bob.user_id),
            "home": home(client, alice.user_id),
            "timeline": timeline(client, bob.user_id),
        }
    old_target = cluster.target
    cluster.kill_router()
    with MurmurClient(old_target, timeout=2) as stale, pytest.raises(errors.Unavailable):
        stale.ping()
    cluster.restart_router()
    with MurmurClient(cluster.target) as client:
        assert client.get_user(user_id=alice.user_id) == before["alice"]
        assert client.get_user(handle=bob.handle) == before["bob"]
        assert home(client, alice.user_id) == before["home"]
        assert timeline(client, bob.user_id) == before["timeline"]
        assert following(client, alice.user_id) == {bob.user_id}
        assert followers(client, bob.user_id) == {alice.user_id}
        for shard in range(cluster.shards):
            user = client.create_user(cluster.handle_on_shard(shard, "post"))
            assert client.ping(user.user_id).shard_id == shard


# -- a whole-cluster restart -----------------------------------------------------------------


def _seed(client: MurmurClient, cluster: LocalCluster) -> dict:
    users = [client.create_user(cluster.handle_on_shard(i % 3, "keep")) for i in range(6)]
    for i, user in enumerate(users):
        client.follow(user.user_id, users[(i + 1) % 6].user_id)
        client.follow(user.user_id, users[(i + 2) % 6].user_id)
    tweets = [client.post_tweet(u.user_id, f"hello from {u.handle}") for u in users]
    client.edit_tweet(tweets[0].tweet_id, users[0].user_id, "edited before the stop")
    client.delete_tweet(tweets[1].tweet_id, users[1].user_id)

    def settled() -> None:
        for user in users:
            assert len(followers(client, user.user_id)) == 2
            assert client.get_user(user_id=user.user_id).follower_count == 2
            assert len(home(client, user.user_id)) >= 2

    eventually(settled)
    return {"users": users, "deleted": tweets[1].tweet_id}


def _snapshot(client: MurmurClient, users: list[pb.User]) -> dict:
    return {
        user.user_id: (
            client.get_user(user_id=user.user_id),
            client.get_user(handle=user.handle.lower()).user_id,
            sorted(followers(client, user.user_id)),
            sorted(following(client, user.user_id)),
            list(client.user_timeline(user.user_id, page_size=200).tweets),
            list(client.home_timeline(user.user_id, page_size=200).tweets),
        )
        for user in users
    }


@pytest.mark.parametrize("ports", ["same", "new"])
def test_sigterm_whole_cluster_then_restart_on_the_same_folders(tmp_path: Path, ports: str) -> None:
    folder = tmp_path / "cluster"
    first = LocalCluster(folder, shards=3).start()
    try:
        with MurmurClient(first.target) as client:
            seeded = _seed(client, first)
            users = seeded["users"]
            before = _snapshot(client, users)
            newest = max(t.tweet_id for snap in before.values() for t in snap[4])
        infos = [first.shard_info(i) for i in range(3)]
        old_ports = [first.shard_port(i) for i in range(3)]
    finally:
        codes = first.stop()
    assert codes == {"router": 0, "shard 0": 0, "shard 1": 0, "shard 2": 0}, (
        codes,
        log_tail(folder / "shard-0.log"),
    )

    again = LocalCluster(folder, shards=3, shard_ports=None if ports == "same" else [0, 0, 0])
    with again:
        if ports == "same":
            assert [again.shard_port(i) for i in range(3)] == old_ports
        with MurmurClient(again.target) as client:
            assert _snapshot(client, users) == before
            with pytest.raises(errors.NotFound):
                client.get_tweet(seeded["deleted"])
            for i in range(3):
                info = again.shard_info(i)
                assert info.shard_id == i
                assert list(info.owned) == list(infos[i].owned)
                assert list(info.slot_map.owners) == list(infos[i].slot_map.owners)
                assert dict(info.slot_map.addresses) == {
                    j: again.shard_address(j) for j in range(3)
                }
                if ports == "same":
                    assert info.slot_map == infos[i].slot_map
                else:
                    assert info.map_version > infos[i].map_version
            # ids keep increasing, and fan-out works across the restarted shards
            fresh = client.post_tweet(users[0].user_id, "after the restart")
            assert fresh.tweet_id > newest
            readers = [u.user_id for u in users if users[0].user_id in following(client, u.user_id)]
            assert len(readers) == 2
            for reader in readers:
                eventually(lambda r=reader: _assert_home_has(client, r, {fresh.tweet_id}))


# -- murmur-cluster --------------------------------------------------------------------------


def free_port_run(count: int) -> int:
    """A port P such that P .. P+count-1 are all free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        held = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no run of free ports found")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class ClusterCommand:
    """``python -m server.cluster`` as a subprocess, its output in files."""

    def __init__(self, tmp_path: Path, port: int, data_dir: Path, shards: int = 2) -> None:
        run = len(list(tmp_path.glob("cluster-*.out")))
        self.out = tmp_path / f"cluster-{run}.out"
        self.err = tmp_path / f"cluster-{run}.err"
        self.data_dir = data_dir
        self.port = port
        argv = [
            sys.executable,
            "-m",
            "server.cluster",
            "--shards",
            str(shards),
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"murmur-cluster exited with {self.proc.returncode} before {text!r}:\n"
                    f"{self.output()}\n{log_tail(self.err)}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout}s:\n{log_tail(self.err)}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def cleanup(self) -> None:
        """Stop it (and whatever it started) however the test ended."""
        children = children_of(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_all([pid for pid in children if running(pid)])
        kill_all(processes_mentioning(str(self.data_dir)))
        kill_all(processes_mentioning(f"--port {self.port} "))


@pytest.fixture
def cluster_commands(tmp_path: Path) -> Iterator[list[ClusterCommand]]:
    started: list[ClusterCommand] = []
    yield started
    for command in started:
        command.cleanup()


def start_cluster_command(
    tmp_path: Path, data_dir: Path, started: list[ClusterCommand], port: int | None = None
) -> ClusterCommand:
    """murmur-cluster serving on ``port`` (or on a run found free).

    It takes fixed ports (router P, shard i P+1+i), so a run found free can
    be taken before it binds: a start that fails with "cannot listen" is
    tried again on a new run, and the race costs a retry, not the test."""
    for attempt in range(5):
        command = ClusterCommand(
            tmp_path, port if port and not attempt else free_port_run(3), data_dir
        )
        started.append(command)
        try:
            command.wait_for("serving on")
            return command
        except AssertionError:
            if command.proc.poll() is None or "cannot listen" not in command.err.read_text():
                raise
    raise AssertionError(f"murmur-cluster found no free ports in 5 tries; logs in {tmp_path}")


def assert_all_gone(pids: list[int]) -> None:
    assert [pid for pid in pids if running(pid)] == [], "processes left running"


def test_murmur_cluster_command_starts_serves_stops_and_restarts(
    tmp_path: Path, cluster_commands: list[ClusterCommand]
) -> None:
    data_dir = tmp_path / "data"
    first = start_cluster_command(tmp_path, data_dir, cluster_commands)
    children = children_of(first.proc.pid)
    assert len(children) == 3, children  # two shards and a router
    with MurmurClient(f"127.0.0.1:{first.port}") as client:
        created = client.create_user("clusterfan", display_name="Started by murmur-cluster")
        tweet = client.post_tweet(created.user_id, "hello from murmur-cluster")
    assert first.terminate() == 0, log_tail(first.err)
    assert "stopping" in first.output()
    eventually(lambda: assert_all_gone(children))
    assert sorted(p.name for p in data_dir.iterdir()) == ["shard-0", "shard-1"]

    second = start_cluster_command(tmp_path, data_dir, cluster_commands, port=first.port)
    with MurmurClient(f"127.0.0.1:{second.port}") as client:
        found = client.get_user(handle="ClusterFan")
        assert (found.user_id, found.handle, found.display_name, found.created_at) == (
            created.user_id,
            created.handle,
            created.display_name,
            created.created_at,
        )
        assert found.tweet_count == 1
        assert client.get_tweet(tweet.tweet_id) == tweet
    children = children_of(second.proc.pid)
    assert second.terminate() == 0, log_tail(second.err)
    eventually(lambda: assert_all_gone(children))


def squat_a_router_port() -> socket.socket:
    """A listening socket on a port P whose shard ports (P+1, P+2) were
    free: murmur-cluster on P starts its shards, then fails on the router.
    (Were a shard port taken meanwhile, it would fail on that shard
    instead; the cleanup checked is the same.)"""
    for _ in range(20):
        squatter = socket.socket()
        try:
            squatter.bind(("127.0.0.1", free_port_run(3)))
        except OSError:  # taken since it was found free
            squatter.close()
            continue
        squatter.listen()
        return squatter
    raise RuntimeError("no free run of ports to squat")


def test_murmur_cluster_cleans_up_when_start_up_fails(
    tmp_path: Path, cluster_commands: list[ClusterCommand]
) -> None:
    data_dir = tmp_path / "data"
    with squat_a_router_port() as squatter:
        command = ClusterCommand(tmp_path, squatter.getsockname()[1], data_dir)
        cluster_commands.append(command)
        code = command.proc.wait(timeout=60)
    assert code != 0
    # murmur-cluster has exited: a shard still running now was left behind
    eventually(lambda: _assert_none_mention(str(data_dir)))


def _assert_none_mention(text: str) -> None:
    assert processes_mentioning(text) == [], f"processes left running: {text}"


def test_a_busy_port_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "shard.main",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "shard"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr

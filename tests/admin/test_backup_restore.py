"""Maintenance verbs on a real cluster: backup and restore, compaction,
cluster-wide settings, and consistency check and repair of a shard whose
LevelDB was edited behind its back."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import plyvel
import pytest

from client.admin_cli import parse_slot_ranges
from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2, shard_pb2_grpc
from shard import keys
from shard.backup import BACKUP_BATCH
from tests.admin.launcher import Processes, Server, eventually

pytestmark = pytest.mark.integration

USERS = 200
FOLLOWS_PER_USER = 8
POSTS = 800


@dataclass
class Cluster:
    procs: Processes
    shards: dict[int, Server]
    router: Server
    client: MurmurClient
    admin: AdminClient
    users: list[int]
    edges: set[tuple[int, int]]
    token: str

    def shard_of(self, user_id: int) -> int:
        slot = slot_for_user(user_id)
        for status in self.admin.get_cluster_status().shards:
            if any(r.start <= slot <= r.end for r in status.slots):
                return status.shard_id
        raise AssertionError(f"no shard owns slot {slot}")

    def restart(self, shard_id: int) -> None:
        self.shards[shard_id] = self.procs.restart(self.shards[shard_id])
        # the router reconnects on its own; wait until it reaches the shard again
        eventually(lambda: _serving(self.admin, shard_id), timeout=20)


def _serving(admin: AdminClient, shard_id: int) -> None:
    assert admin.get_shard_stats(shard_id).status.health == "SERVING"


def shard_stub(address: str) -> tuple[grpc.Channel, shard_pb2_grpc.ShardStub]:
    channel = grpc.insecure_channel(address)
    return channel, shard_pb2_grpc.ShardStub(channel)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    token = secrets.token_hex(16)
    rng = random.Random(3)
    with Processes(tmp_path_factory.mktemp("maintenance")) as procs:
        shards = {i: procs.shard(i) for i in (0, 1)}
        router = procs.router([s.address for s in shards.values()], token)
        with (
            MurmurClient(router.address, timeout=20) as client,
            AdminClient(router.address, token) as admin,
            ThreadPoolExecutor(8) as pool,
        ):
            users = list(pool.map(lambda i: client.create_user(f"b{i}").user_id, range(USERS)))
            edges = {(u, v) for u in users for v in rng.sample(users, FOLLOWS_PER_USER) if u != v}
            list(pool.map(lambda e: client.follow(*e), sorted(edges)))
            list(pool.map(lambda i: client.post_tweet(users[i % USERS], f"post {i}"), range(POSTS)))
            cluster = Cluster(procs, shards, router, client, admin, users, edges, token)
            eventually(lambda: _settled(admin), timeout=30)
            yield cluster


def _settled(admin: AdminClient) -> None:
    for shard_id in (0, 1):
        assert admin.get_shard_stats(shard_id).outbox_backlog == 0


def test_backup_refuses_bad_requests(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        list(cluster.admin.backup_shard(0, "relative/folder"))
    with pytest.raises(AlreadyExists, match="exists"):
        list(cluster.admin.backup_shard(0, str(tmp_path)))
    with pytest.raises(NotFound, match="shard 7"):
        list(cluster.admin.backup_shard(7, str(tmp_path / "nope")))
    assert not (tmp_path / "nope").exists()
    with pytest.raises(FailedPrecondition, match=r"folder .*missing does not exist on shard 0"):
        list(cluster.admin.backup_shard(0, str(tmp_path / "missing" / "backup")))
    with pytest.raises(InvalidArgument, match="contains a NUL"):
        list(cluster.admin.backup_shard(0, str(tmp_path / "cut\x00short")))
    assert not (tmp_path / "cut").exists()
    with pytest.raises(InvalidArgument, match="own data folder"):
        list(cluster.admin.backup_shard(0, str(cluster.procs.data_dir(0) / "copy")))
    other = cluster.procs.data_dir(1)
    with pytest.raises(InvalidArgument, match=f"inside the LevelDB folder {other}"):
        list(cluster.admin.backup_shard(0, str(other / "copy")))
    assert not (other / "copy").exists()
    with pytest.raises(FailedPrecondition, match="No such file or directory"):  # errno's text
        list(cluster.admin.backup_shard(0, "/proc/no-backup-here"))


def test_compact_reports_disk_bytes(cluster: Cluster) -> None:
    reply = cluster.admin.compact_shard(0)
    assert reply.disk_bytes_before > 0 and reply.disk_bytes_after > 0
    status = cluster.admin.get_shard_stats(0).status
    assert status.disk_bytes > 0
    with pytest.raises(NotFound):
        cluster.admin.compact_shard(9)


def test_settings_round_trip_on_every_shard(cluster: Cluster) -> None:
    admin = cluster.admin
    before = admin.get_settings()
    try:
        updated = admin.update_settings(inbox_cap=640, backfill_limit=123)
        assert (updated.inbox_cap, updated.backfill_limit) == (640, 123)
        assert updated.celebrity_threshold == before.celebrity_threshold  # untouched
        assert admin.get_settings() == updated
        for server in cluster.shards.values():
            channel, stub = shard_stub(server.address)
            with channel:
                assert stub.GetSettings(shard_pb2.GetSettingsRequest(), timeout=10) == updated
        threshold = admin.update_settings(celebrity_threshold=5000)
        assert threshold.celebrity_threshold == 5000 and threshold.inbox_cap == 640
        with pytest.raises(InvalidArgument, match="inbox_cap"):
            admin.update_settings(inbox_cap=0)
        assert admin.get_settings() == threshold
    finally:
        admin.update_settings(
            celebrity_threshold=before.celebrity_threshold,
            inbox_cap=before.inbox_cap,
            backfill_limit=before.backfill_limit,
        )
    assert admin.get_settings() == before


def test_settings_that_did_not_reach_a_shard_are_named_and_repeating_aligns_them(
    cluster: Cluster,
) -> None:
    admin = cluster.admin
    before = admin.get_settings()
    assert list(before.disagreeing_shards) == list(before.unreachable_shards) == []
    # an update that reached shard 1 only (as when the others timed out)
    channel, stub = shard_stub(cluster.shards[1].address)
    with channel:
        stub.UpdateSettings(
            shard_pb2.UpdateSettingsRequest(backfill_limit=before.backfill_limit + 1), timeout=10
        )
    try:
        seen = admin.get_settings()
        assert seen.backfill_limit == before.backfill_limit  # shard 0's
        assert list(seen.disagreeing_shards) == [1]
        # a shard that stops answering fails the update, naming who took it
        pid = cluster.shards[1].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            impatient = AdminClient(
                cluster.router.address, cluster.token, timeout=3.0, long_timeout=3.0
            )
            with impatient, pytest.raises(DeadlineExceeded) as caught:
                impatient.update_settings(backfill_limit=before.backfill_limit + 2)
            message = str(caught.value)
            assert "changed on shards [0] but may not have on shards [1]" in message
            assert "shard 1 (" in message
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        # once the router's probe finds shard 1 again, the repeat reaches both
        repeated = eventually(lambda: _update_or_retry(admin, before.backfill_limit))
    assert list(repeated.disagreeing_shards) == []
    assert admin.get_settings() == before


def _update_or_retry(admin: AdminClient, backfill_limit: int) -> shard_pb2.Settings:
    try:
        return admin.update_settings(backfill_limit=backfill_limit)
    except (Unavailable, DeadlineExceeded) as exc:  # shard 1 just resumed
        raise AssertionError(str(exc)) from exc


def test_check_finds_corruption_and_repair_fixes_it(cluster: Cluster) -> None:
    client, admin = cluster.client, cluster.admin
    on_shard = {u: cluster.shard_of(u) for u in cluster.users}
    # a user on shard 0 whose counter we bump, and a cross-shard edge B -> C
    # (C on shard 0) whose followers side we delete
    victim = next(u for u in cluster.users if on_shard[u] == 0)
    follower, followee = next(
        (b, c)
        for b, c in sorted(cluster.edges)
        if on_shard[b] == 1
        and on_shard[c] == 0
        and c != victim
        and slot_for_user(c) != slot_for_user(victim)
    )
    victim_count = client.get_user(user_id=victim).follower_count
    followee_count = client.get_user(user_id=followee).follower_count
    assert admin.check_consistency().wrong_counters == 0

    server = cluster.shards[0]
    assert server.stop() == 0
    db = plyvel.DB(str(cluster.procs.data_dir(0)))
    try:
        user_key = keys.user(slot_for_user(victim), victim)
        record = shard_pb2.UserRecord.FromString(db.get(user_key))
        assert record.user.follower_count == victim_count
        record.user.follower_count = victim_count + 7
        db.put(user_key, record.SerializeToString(), sync=True)
        edge_key = keys.followers(slot_for_user(followee), followee, follower)
        assert db.get(edge_key) is not None
        db.delete(edge_key, sync=True)
    finally:
        db.close()
    cluster.restart(0)

    assert client.get_user(user_id=victim).follower_count == victim_count + 7
    report = admin.check_consistency()
    assert report.wrong_counters == 2, report.findings  # victim and followee
    assert report.one_sided_edges == 1, report.findings
    assert report.repaired == 0
    findings = "\n".join(report.findings)
    assert f"user {victim}: follower_count {victim_count + 7} should be {victim_count}" in findings
    assert f"user {followee}: follower_count {followee_count} should be" in findings
    assert f"edge {follower} -> {followee} has no followers side" in findings

    only_victim = admin.check_consistency([slot_for_user(victim)])
    assert (only_victim.wrong_counters, only_victim.one_sided_edges) == (1, 0)

    repaired = admin.repair()
    assert repaired.repaired >= 3, repaired.findings

    def clean() -> None:
        after = admin.check_consistency()
        assert (after.wrong_counters, after.one_sided_edges) == (0, 0), after.findings

    eventually(clean, timeout=20)
    assert client.get_user(user_id=victim).follower_count == victim_count
    assert client.get_user(user_id=followee).follower_count == followee_count
    followers = {u.user_id for u in client.iter_followers(followee)}
    assert follower in followers and len(followers) == followee_count


def _read_all(path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path), create_if_missing=False)
    try:
        return dict(db.iterator())
    finally:
        db.close()


def test_backup_streams_and_restores_identically(cluster: Cluster, tmp_path: Path) -> None:
    admin = cluster.admin
    shard_id = 1
    path = tmp_path / "backup-shard-1"
    expected_keys = sum(admin.get_shard_stats(shard_id).status.key_counts.values())
    assert expected_keys > BACKUP_BATCH, "load more data: the backup should stream progress"

    progress = list(admin.backup_shard(shard_id, str(path)))
    assert len(progress) >= 2, progress
    copied = [p.keys_copied for p in progress]
    assert copied == sorted(copied) and copied[0] > 0
    assert [p.done for p in progress] == [False] * (len(progress) - 1) + [True]
    last = progress[-1]
    assert last.path == str(path)
    assert last.keys_total == last.keys_copied == expected_keys
    assert path.is_dir()

    # restore: a fresh murmur-shard on the backup folder, same --shard-id
    original = cluster.shards[shard_id]
    channel, stub = shard_stub(original.address)
    with channel:
        original_info = stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=10)
    restored = cluster.procs.shard(shard_id, data_dir=path, name="shard-1-restored")
    channel, stub = shard_stub(restored.address)
    with channel:
        info = stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=10)
        assert info.shard_id == shard_id
        assert list(info.owned) == list(original_info.owned)
        assert info.map_version == original_info.map_version
        mine = [u for u in cluster.users if cluster.shard_of(u) == shard_id][:20]
        found = stub.GetUsers(shard_pb2.GetUsersRequest(user_ids=mine), timeout=10)
        assert sorted(r.user.user_id for r in found.users) == sorted(mine)
    assert restored.stop() == 0
    assert original.stop() == 0
    try:
        backup, live = _read_all(path), _read_all(cluster.procs.data_dir(shard_id))
        assert len(backup) == len(live) == expected_keys
        differing = sorted(k for k in backup.keys() | live.keys() if backup.get(k) != live.get(k))
        assert not differing, [k.hex() for k in differing[:10]]
    finally:
        cluster.restart(shard_id)
    status = admin.get_cluster_status()
    assert all(s.health == "SERVING" for s in status.shards)


@dataclass
class SmallCluster:
    """Two shards and a router, 40 users; for tests that restore shard 0."""

    procs: Processes
    shards: dict[int, Server]
    client: MurmurClient
    admin: AdminClient
    users: list[int]

    def on(self, shard_id: int) -> list[int]:
        owners = admin_owners(self.admin)
        return [u for u in self.users if owners[slot_for_user(u)] == shard_id]

    def restore_shard_0(self, backup: Path, root: Path) -> None:
        """Stop shard 0, put the backup in its data folder's place, start it."""
        self.shards[0].stop()
        self.procs.data_dir(0).rename(root / "shard-0-before-restore")
        backup.rename(self.procs.data_dir(0))
        self.shards[0] = self.procs.restart(self.shards[0])
        eventually(lambda: _serving(self.admin, 0), timeout=20)


@contextmanager
def small_cluster(root: Path, prefix: str) -> Iterator[SmallCluster]:
    token = secrets.token_hex(16)
    with Processes(root / "cluster") as procs:
        shards = {i: procs.shard(i) for i in (0, 1)}
        router = procs.router([s.address for s in shards.values()], token)
        with (
            MurmurClient(router.address, timeout=20) as client,
            AdminClient(router.address, token) as admin,
        ):
            users = [client.create_user(f"{prefix}{i}").user_id for i in range(40)]
            yield SmallCluster(procs, shards, client, admin, users)


def test_copies_of_tweets_a_restore_lost_are_found_and_repair_removes_them(tmp_path: Path) -> None:
    """A tweet posted after the backup is gone from its author's restored
    shard, but its copy stayed in a follower's inbox on the other shard:
    shown in home timelines, NOT_FOUND on GetTweet, and beyond its author's
    reach. check names it; repair removes the copy and nothing else."""
    with small_cluster(tmp_path, "r") as c:
        client, admin = c.client, c.admin
        author = c.on(0)[0]
        reader, other = c.on(1)[:2]
        client.follow(reader, author)
        client.follow(other, author)
        kept = client.post_tweet(author, "before the backup").tweet_id
        eventually(lambda: _settled(admin), timeout=30)
        backup = tmp_path / "backup-0"
        list(admin.backup_shard(0, str(backup)))
        lost = client.post_tweet(author, "after the backup").tweet_id

        def home() -> list[int]:
            return [t.tweet_id for t in client.home_timeline(reader).tweets]

        eventually(lambda: _shows(home(), lost), timeout=20)
        c.restore_shard_0(backup, tmp_path)
        with pytest.raises(NotFound):
            client.get_tweet(lost)

        found = admin.check_consistency()
        assert found.ghost_inbox_copies == 2, found  # one copy in each reader's inbox
        named = [line for line in found.findings if line.startswith(f"tweet {lost} no longer")]
        assert named and len(set(named)) == len(named), found.findings
        slots: set[int] = set()
        for line in named:
            where = re.fullmatch(r".* on shard 1 \(inboxes in slots ([0-9,-]+)\)", line)
            assert where, line
            slots.update(parse_slot_ranges(where[1]))
        assert {slot_for_user(reader), slot_for_user(other)} <= slots, found.findings
        repaired = admin.repair()
        assert repaired.ghost_inbox_copies == 2 and repaired.repaired >= 2, repaired
        assert home() == [kept]
        assert admin.check_consistency().ghost_inbox_copies == 0


def admin_owners(admin: AdminClient) -> list[int]:
    owners = [0] * 4096
    for status in admin.get_cluster_status().shards:
        for run in status.slots:
            owners[run.start : run.end + 1] = [status.shard_id] * (run.end - run.start + 1)
    return owners


def _shows(tweet_ids: list[int], tweet_id: int) -> None:
    assert tweet_id in tweet_ids, tweet_ids


def test_a_shard_restored_from_before_a_move_takes_the_newer_map(tmp_path: Path) -> None:
    """Restored from a backup taken before one of its slots moved away, a
    shard starts with the older map. It must adopt its peers' newer one
    before its fan-out acts: else its authors' tweets go into the stale
    copy of the moved readers' inboxes left in its folder, and never reach
    the home timelines served from the slot's new shard."""
    with small_cluster(tmp_path, "m") as c:
        client, admin = c.client, c.admin
        author, reader = c.on(0)[:2]
        slot = slot_for_user(reader)
        eventually(lambda: _settled(admin), timeout=30)
        backup = tmp_path / "backup-0"
        list(admin.backup_shard(0, str(backup)))
        moved = list(admin.move_slots([slot], 1))
        assert moved[-1].slots_done == moved[-1].slots_total == 1, moved
        assert moved[-1].step == f"slots {slot} now on shard 1", moved
        newest = admin.get_cluster_status().map_version
        assert newest == moved[-1].map_version

        c.restore_shard_0(backup, tmp_path)
        channel, stub = shard_stub(c.shards[0].address)
        with channel:
            info = stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=10)
        assert info.map_version == newest
        assert info.slot_map.owners[slot] == 1
        assert all(not (r.start <= slot <= r.end) for r in info.owned)

        client.follow(reader, author)
        posted = client.post_tweet(author, "after the restore").tweet_id
        eventually(
            lambda: _shows([t.tweet_id for t in client.home_timeline(reader).tweets], posted),
            timeout=20,
        )

"""A full disk: writes fail with a clear status naming the shard's storage,
never INTERNAL, and the store is intact once there is room again."""

from __future__ import annotations

import os
import subprocess

import pytest

from client import MurmurClient
from client.errors import MurmurError
from tests.integration.cluster import LocalCluster

pytestmark = pytest.mark.integration


def mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return result.returncode == 0


def test_a_full_disk_is_a_clear_error_and_never_corrupts_the_store(tmp_path):
    root = tmp_path / "cluster"
    data = root / "shard-0"
    if not mount_tmpfs(data, "2m"):
        pytest.skip("needs root and tmpfs mounts to make a small disk")
    try:
        cluster = LocalCluster(root, shards=1).start()
        try:
            with MurmurClient(cluster.target, timeout=10, retries=False) as client:
                author = client.create_user("filler").user_id
                acknowledged, failure = [], None
                for i in range(50_000):
                    try:
                        tweet = client.post_tweet(author, f"{i:06d} " + "x" * 270)
                    except MurmurError as exc:
                        failure = exc
                        break
                    acknowledged.append(tweet.tweet_id)
                assert failure is not None, "the 2 MB disk never filled up"
                assert failure.code.name in ("RESOURCE_EXHAUSTED", "UNAVAILABLE"), failure
                assert "storage" in failure.details and "shard 0" in failure.details
                assert "Traceback" not in failure.details
            cluster.kill_shard(0)
            subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True)
            cluster.restart_shard(0)
            with MurmurClient(cluster.target, timeout=10) as client:
                for tweet_id in acknowledged:
                    assert client.get_tweet(tweet_id).tweet_id == tweet_id
                assert client.get_user(user_id=author).tweet_count >= len(acknowledged)
                client.post_tweet(author, "room again")
        finally:
            cluster.stop()
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)

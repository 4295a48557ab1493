"""Prometheus metrics on every router and shard, structured JSON logs, and
clear start-up errors.

Every process here takes its ports with 0 and says which it bound (gRPC on
stdout, metrics in its log), so no port is probed free and used later; each
keeps its log in the test's folder, and is killed if it does not stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import grpc
import pytest

from client import MurmurClient
from murmur.v1 import murmur_pb2, shard_pb2_grpc
from tests.integration.cluster import (
    HOST,
    ROOT,
    SHARD_BANNER,
    LocalCluster,
    ServerProcess,
    eventually,
    scrape,
)

pytestmark = pytest.mark.integration

ROUTER_SERIES = (
    'murmur_rpc_total{code="OK",method="PostTweet",service="Murmur"}',
    "murmur_rpc_seconds_bucket",
    "murmur_router_shard_batch_requests_bucket",
)
SHARD_SERIES = (
    "murmur_fanout_backlog_records",
    "murmur_fanout_oldest_record_seconds",
    "murmur_fanout_lag_p99_seconds",
    "murmur_fanout_inbox_entries_total",
    "murmur_inbox_size_entries_bucket",
    "murmur_celebrities",
    "murmur_slots_owned",
    "murmur_slots_frozen",
    "murmur_leveldb_bytes",
    "murmur_fsyncs_total",
    "murmur_inline_fsyncs_total",
    "murmur_fsync_seconds_total",
    "murmur_inline_fsync_seconds_total",
    "murmur_fsync_seconds_average",
    'murmur_rpc_total{code="OK",method="ReadInbox",service="Shard"}',
)


def _is_celebrity(client: MurmurClient, user_id: int) -> None:
    assert client.get_user(user_id=user_id).celebrity


def make_traffic(cluster: LocalCluster) -> None:
    """A post, a home read and a promotion to celebrity (threshold 1)."""
    with MurmurClient(cluster.target) as client:
        a = client.create_user(cluster.handle_on_shard(0, "metrica"))
        b = client.create_user(cluster.handle_on_shard(1, "metricb"))
        client.follow(b.user_id, a.user_id)
        client.post_tweet(b.user_id, "counted")
        client.home_timeline(b.user_id)
        eventually(lambda: _is_celebrity(client, a.user_id), timeout=10)


def test_metrics_endpoints_expose_the_series(tmp_path):
    cluster = LocalCluster(
        tmp_path, shards=2, celebrity_threshold=1, extra_args=["--metrics-port", "0"]
    ).start()
    try:
        make_traffic(cluster)
        router = scrape(tmp_path / "router.log")
        shards = scrape(tmp_path / "shard-0.log") + scrape(tmp_path / "shard-1.log")
    finally:
        codes = cluster.stop()
    assert set(codes.values()) == {0}, f"{codes}; logs in {tmp_path}"
    for series in ROUTER_SERIES:
        assert series in router, f"the router serves no {series}; its log: {tmp_path}/router.log"
    for series in SHARD_SERIES:
        assert series in shards, f"no shard serves {series}; their logs: {tmp_path}/shard-*.log"
    unsafe = [line for line in shards.splitlines() if line.startswith("murmur_unsafe_no_fsync{")]
    assert [line.split()[-1] for line in unsafe] == ["0.0", "0.0"]  # both shards sync writes
    celebrities = [
        float(line.split()[-1])
        for line in shards.splitlines()
        if line.startswith("murmur_celebrities{")
    ]
    assert sum(celebrities) >= 1


def test_json_logs_name_the_rpc_user_and_duration_of_failed_calls(tmp_path):
    log = tmp_path / "shard.log"
    shard = ServerProcess(
        "shard",
        ["-m", "shard.main", "--host", HOST, "--data-dir", str(tmp_path / "s")]
        + ["--log-format", "json"],
        log,
        SHARD_BANNER,
    )
    shard.start(0)
    try:
        with grpc.insecure_channel(shard.address) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            with pytest.raises(grpc.RpcError):  # no slots assigned yet: UNAVAILABLE
                stub.PostTweet(murmur_pb2.PostTweetRequest(user_id=42, text="x"), timeout=5)
    finally:
        shard.terminate()
        code = shard.wait(timeout=30)  # SIGKILL if it does not stop
        shard.close()
    assert code == 0, f"exit code {code}; log {log}"
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries), log
    failed = [e for e in entries if e.get("rpc") == "Shard.PostTweet"]
    assert failed, f"no failed Shard.PostTweet line in {log}"
    assert failed[0]["code"] == "UNAVAILABLE" and failed[0]["user_id"] == 42
    assert failed[0]["duration_ms"] >= 0 and failed[0]["shard"] == 0


def test_an_unwritable_data_folder_is_a_clear_error_at_start(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "not-a-folder"
        target.write_text("a file where the data folder should be")
    else:
        target = tmp_path / "locked"
        target.mkdir()
        target.chmod(0o500)
    result = subprocess.run(
        [sys.executable, "-m", "shard.main", "--port", "0", "--data-dir", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(target) in result.stderr

"""Prometheus metrics on every router and shard, structured JSON logs, and
clear start-up errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from client import MurmurClient
from tests.integration.cluster import ROOT, eventually

pytestmark = pytest.mark.integration


def free_port_block(size: int) -> int:
    """A base port with ``size`` consecutive free ports after it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size >= 65000:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free block of ports")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_endpoints_expose_the_series(tmp_path):
    base = free_port_block(3)
    metrics = free_port_block(3)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cluster",
            "--shards",
            "2",
            "--port",
            str(base),
            "--data-dir",
            str(tmp_path / "data"),
            "--metrics-port",
            str(metrics),
            "--celebrity-threshold",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "serving on" in process.stdout.readline()
        with MurmurClient(f"127.0.0.1:{base}") as client:
            a, b = client.create_user("metrica"), client.create_user("metricb")
            client.follow(b.user_id, a.user_id)
            client.post_tweet(b.user_id, "counted")
            client.home_timeline(b.user_id)
            eventually(lambda: _is_celebrity(client, a.user_id), timeout=10)
        router = scrape(metrics)
        assert 'murmur_rpc_total{code="OK",method="PostTweet",service="Murmur"}' in router
        assert "murmur_rpc_seconds_bucket" in router
        assert "murmur_router_shard_batch_requests_bucket" in router
        shards = scrape(metrics + 1) + scrape(metrics + 2)
        for series in (
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
        ):
            assert series in shards, series
        celebrities = [
            float(line.split()[-1])
            for line in shards.splitlines()
            if line.startswith("murmur_celebrities{")
        ]
        assert sum(celebrities) >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _is_celebrity(client: MurmurClient, user_id: int) -> None:
    assert client.get_user(user_id=user_id).celebrity


def test_json_logs_name_the_rpc_user_and_duration_of_failed_calls(tmp_path):
    shard = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shard.main",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "s"),
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = shard.stdout.readline().split()[-1]
        import grpc

        from murmur.v1 import murmur_pb2, shard_pb2_grpc

        with grpc.insecure_channel(address) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            with pytest.raises(grpc.RpcError):  # no slots assigned yet: UNAVAILABLE
                stub.PostTweet(murmur_pb2.PostTweetRequest(user_id=42, text="x"), timeout=5)
    finally:
        shard.send_signal(signal.SIGTERM)
        _, err = shard.communicate(timeout=30)
    entries = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    failed = [e for e in entries if e.get("rpc") == "Shard.PostTweet"]
    assert failed, entries
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
    started = time.monotonic()
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
    assert time.monotonic() - started < 30

"""A start that fails tells the operator why in one line and changes nothing.

The port is taken first: a router whose port was taken had already pushed
its --celebrity-threshold to every shard (and a new cluster's first map),
and a shard had already made and stamped its data folder with the
--shard-id, so the next start with the right id was refused. A signal
while starting (the store opening, the router waiting for its shards)
printed a traceback (SIGINT) or nothing at all (SIGTERM). A data folder
another shard holds open named LevelDB's lock in raw bytes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from murmur.v1 import shard_pb2, shard_pb2_grpc
from tests.admin.launcher import ROOT, Processes

pytestmark = pytest.mark.integration


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def start(module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def shard_info(address: str) -> shard_pb2.ShardInfo:
    with grpc.insecure_channel(address) as channel:
        stub = shard_pb2_grpc.ShardStub(channel)
        return stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=10)


def test_a_router_whose_port_is_taken_changes_nothing_on_the_shards(tmp_path: Path) -> None:
    with Processes(tmp_path) as procs, taken_port() as port:
        shard = procs.shard(0)
        result = run(
            "server.main",
            "--port",
            str(port),
            "--shards",
            shard.address,
            "--celebrity-threshold",
            "3",
        )
        assert result.returncode == 1, result
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
        assert "Traceback" not in result.stderr
        assert shard_info(shard.address).map_version == 0, "it founded the cluster first"
        with grpc.insecure_channel(shard.address) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            settings = stub.GetSettings(shard_pb2.GetSettingsRequest(), timeout=10)
        assert settings.celebrity_threshold != 3, "it pushed its settings first"


def test_a_shard_whose_port_is_taken_leaves_no_folder(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    with taken_port() as port:
        result = run(
            "shard.main", "--port", str(port), "--data-dir", str(folder), "--shard-id", "5"
        )
    assert result.returncode == 1, result
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert not folder.exists(), "the folder was made (and stamped shard 5) by a failed start"


def test_a_folder_another_shard_holds_names_the_lock(tmp_path: Path) -> None:
    with Processes(tmp_path) as procs:
        procs.shard(0)
        result = run("shard.main", "--port", "0", "--data-dir", str(procs.data_dir(0)))
    assert result.returncode == 1, result
    assert "another process holds its lock: is a shard already running on it?" in result.stderr
    assert "b'" not in result.stderr and "Traceback" not in result.stderr


def test_a_data_folder_that_is_a_file_says_so(tmp_path: Path) -> None:
    file = tmp_path / "data"
    file.write_text("")
    result = run("shard.main", "--port", "0", "--data-dir", str(file))
    assert result.returncode == 1, result
    assert f"data folder {file} is a file, not a folder" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_router_waits_for_its_shards_is_one_line(sig: int) -> None:
    with socket.socket() as silent:  # accepts connections, never speaks gRPC
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        router = start("server.main", "--port", "0", "--shards", address, "--shard-wait", "60")
        try:
            time.sleep(3)  # imported, bound, asking the shard
            assert router.poll() is None, router.communicate()
            router.send_signal(sig)
            _, err = router.communicate(timeout=30)
        finally:
            if router.poll() is None:
                router.kill()
    assert router.returncode == 1, err
    assert err.strip().endswith("murmur-router: stopped by a signal while starting"), err
    assert "Traceback" not in err

"""``--metrics-port``: 0 takes a free port and logs it (a port probed free
and used later can be taken in between), a port already taken is a one-line
error, and murmur-cluster passes 0 on as 0 rather than as fixed low ports."""

from __future__ import annotations

import argparse
import logging
import socket
import urllib.request

import pytest

from murmur.observability import serve_metrics
from server.cluster import metrics_flags


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_port_0_binds_a_free_port_and_logs_which(caplog) -> None:
    caplog.set_level(logging.INFO, logger="murmur.metrics")
    server = serve_metrics("127.0.0.1", 0, "shard 3")
    assert server is not None
    try:
        port = server.server_port
        assert port > 0
        assert "murmur_rpc_seconds" in scrape(port)
        [record] = [r for r in caplog.records if r.name == "murmur.metrics"]
        assert f"http://127.0.0.1:{port}/metrics" in record.getMessage()
        assert record.fields == {"component": "shard 3", "metrics_port": port}
    finally:
        server.shutdown()
        server.server_close()


def test_no_port_serves_nothing() -> None:
    assert serve_metrics("127.0.0.1", None, "router") is None


def test_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(SystemExit) as caught:
            serve_metrics("127.0.0.1", port, "router")
    assert str(caught.value).startswith(f"cannot serve metrics on 127.0.0.1:{port}: ")


@pytest.mark.parametrize(
    ("given", "offset", "flags"),
    [
        (None, 0, []),
        (9100, 0, ["--metrics-port", "9100"]),
        (9100, 2, ["--metrics-port", "9102"]),
        (0, 0, ["--metrics-port", "0"]),
        (0, 2, ["--metrics-port", "0"]),  # not port 2
    ],
)
def test_murmur_cluster_passes_port_0_on_to_every_process(given, offset, flags) -> None:
    assert metrics_flags(argparse.Namespace(metrics_port=given), offset) == flags

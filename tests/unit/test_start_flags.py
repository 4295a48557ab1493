"""Start-up flags of murmur-shard, murmur-router and murmur-cluster: a bad
value is a usage error naming the flag and its limits before anything
starts (not a traceback, nor a cluster half up); and murmur-cluster refuses
ports something else holds and a data folder with more shards than asked."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server import cluster
from tests.unit.server_programs import PROGRAMS, usage_error


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_an_unknown_log_level_is_a_usage_error(program: str, capsys) -> None:
    err = usage_error(program, ["--log-level", "FOO"], capsys)
    assert "argument --log-level: invalid choice: 'FOO'" in err
    assert "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'" in err


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_log_level_in_any_case_is_taken(program: str) -> None:
    parse, required = PROGRAMS[program]
    assert parse([*required, "--log-level", "debug"]).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("program", "flags", "message"),
    [
        ("murmur-router", ["--inbox-cap", "0"], "inbox_cap is 0; it must be 1-100000"),
        ("murmur-router", ["--celebrity-threshold", "-1"], "celebrity_threshold is -1"),
        ("murmur-router", ["--celebrity-cache-ms", "-5"], "-5 must be 0-3600000 ms"),
        ("murmur-router", ["--celebrity-cache-ms", "nan"], "nan must be 0-3600000 ms"),
        ("murmur-router", ["--shard-wait", "-1"], "-1 must be 0-86400 seconds"),
        ("murmur-router", ["--shard-wait", "nan"], "nan must be 0-86400 seconds"),
        ("murmur-router", ["--shard-wait", "soon"], "'soon' is not a number of seconds"),
        ("murmur-cluster", ["--inbox-cap", "0"], "inbox_cap is 0; it must be 1-100000"),
        ("murmur-cluster", ["--celebrity-cache-ms", "soon"], "'soon' is not a number"),
        ("murmur-cluster", ["--shards", "0"], "0 shards; it must be 1-64"),
    ],
)
def test_a_setting_out_of_its_limits_is_a_usage_error(program, flags, message, capsys) -> None:
    err = usage_error(program, flags, capsys)
    assert f"argument {flags[0]}: " in err and message in err


def test_the_cluster_refuses_a_port_something_else_holds(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        args = cluster.parse_args(["--shards", "1", "--port", str(port - 1)])
        args.data_dir = str(tmp_path)
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is taken"):
            cluster.start_cluster(args, children := [])
    assert children == [], "nothing may start"


def test_the_cluster_refuses_a_data_folder_with_more_shards(tmp_path: Path) -> None:
    for index in range(4):
        (tmp_path / f"shard-{index}").mkdir()
    args = cluster.parse_args(["--shards", "2", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"holds shard\(s\) 2, 3, beyond --shards 2: start with"):
        cluster.start_cluster(args, children := [])
    assert children == []

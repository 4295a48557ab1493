"""``murmur-admin`` through click's CliRunner against an in-process fake Admin
service: the exit codes and messages that need no real cluster (that side is
tests/admin/test_admin_cli.py)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from client.admin_cli import UNSAFE_NO_FSYNC, cli
from murmur.v1 import admin_pb2 as apb
from murmur.v1 import admin_pb2_grpc as apb_grpc
from tests.unit.loopback_server import serving

TOKEN = "test-token"


class FakeAdmin(apb_grpc.AdminServicer):
    """The few Admin RPCs these tests drive; streams send what a test sets."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.moves: list[apb.MoveProgress] = []
        self.backups: list[apb.BackupProgress] = []
        self.stats = apb.ShardStats()
        self.report = apb.ConsistencyReport()
        self.status = apb.ClusterStatus(map_version=3)
        self.target = ""

    def GetClusterStatus(self, request: Any, context: Any) -> apb.ClusterStatus:
        self.calls["GetClusterStatus"] += 1
        return self.status

    def AddShard(self, request: apb.AddShardRequest, context: Any) -> apb.AddShardResponse:
        self.calls["AddShard"] += 1
        return apb.AddShardResponse(shard_id=2, map_version=4)

    def MoveSlots(self, request: apb.MoveSlotsRequest, context: Any) -> Iterator[Any]:
        self.calls["MoveSlots"] += 1
        yield from self.moves

    def GetShardStats(self, request: apb.GetShardStatsRequest, context: Any) -> apb.ShardStats:
        self.calls["GetShardStats"] += 1
        return self.stats

    def BackupShard(self, request: apb.BackupShardRequest, context: Any) -> Iterator[Any]:
        self.calls["BackupShard"] += 1
        yield from self.backups

    def CheckConsistency(self, request: Any, context: Any) -> apb.ConsistencyReport:
        self.calls["CheckConsistency"] += 1
        return self.report

    def Repair(self, request: Any, context: Any) -> apb.ConsistencyReport:
        self.calls["Repair"] += 1
        return apb.ConsistencyReport(
            wrong_counters=self.report.wrong_counters, repaired=self.report.wrong_counters
        )


@pytest.fixture
def fake() -> Iterator[FakeAdmin]:
    servicer = FakeAdmin()
    with serving(servicer, apb_grpc.add_AdminServicer_to_server) as servicer.target:
        yield servicer


def run(fake: FakeAdmin, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--target", fake.target, "--token", TOKEN, *args], env=env)


def test_the_fake_answers(fake: FakeAdmin) -> None:
    result = run(fake, "status")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("map version 3; 0 shards")


# -- moves --------------------------------------------------------------------------


def test_moving_slots_already_in_place_prints_one_truthful_line(fake: FakeAdmin) -> None:
    """The router's only message says nothing moved; no "moved 4 of 4 slots" after it."""
    step = "slots 0-3 are already on shard 0: nothing to move"
    fake.moves = [
        apb.MoveProgress(slots_done=4, slots_total=4, slots_in_place=4, step=step, map_version=9)
    ]
    result = run(fake, "move-slots", "0-3", "--to", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{step}\n"


def test_a_real_move_still_reports_the_count(fake: FakeAdmin) -> None:
    fake.moves = [
        apb.MoveProgress(slots_done=0, slots_total=4, step="shard 1 -> shard 0: copying"),
        apb.MoveProgress(
            slots_done=4, slots_total=4, step="slots 0-3 now on shard 0", map_version=9
        ),
    ]
    result = run(fake, "move-slots", "0-3", "--to", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout == "slots 0-3 now on shard 0\nmoved 4 of 4 slots; map version 9\n"


def test_slots_already_in_place_are_not_counted_as_moved(fake: FakeAdmin) -> None:
    fake.moves = [
        apb.MoveProgress(
            slots_done=21,
            slots_total=21,
            slots_in_place=11,
            step="slots 11-20 now on shard 0",
            map_version=7,
        ),
    ]
    result = run(fake, "move-slots", "0-20", "--to", "0")
    assert result.stdout.splitlines() == [
        "slots 11-20 now on shard 0",
        "moved 10 of 21 slots (11 already there); map version 7",
    ]


def test_a_move_in_chunks_names_every_chunk(fake: FakeAdmin) -> None:
    """The last chunk's line alone ("slots 100 now on shard 1") read as if
    only slot 100 had moved."""
    fake.moves = [
        apb.MoveProgress(slots_done=64, slots_total=65, step="slots 0-63 now on shard 1"),
        apb.MoveProgress(slots_done=65, slots_total=65, step="slots 100 now on shard 1"),
    ]
    result = run(fake, "move-slots", "0-63,100", "--to", "1")
    assert result.stdout.splitlines() == [
        "slots 0-63 now on shard 1",
        "slots 100 now on shard 1",
        "moved 65 of 65 slots; map version 0",
    ]


# -- check --------------------------------------------------------------------------


def test_a_check_that_finds_problems_exits_1_and_a_repair_0(fake: FakeAdmin) -> None:
    assert run(fake, "check").exit_code == 0  # consistent
    fake.report = apb.ConsistencyReport(wrong_counters=3, stale_outbox_records=1)
    found = run(fake, "check")
    assert found.exit_code == 1 and found.stdout.endswith(
        "3 problems found; `murmur-admin check --repair` fixes them\n"
    )
    assert run(fake, "--json", "check").exit_code == 1
    repaired = run(fake, "check", "--repair")
    assert repaired.exit_code == 0 and "3 problems found, 3 repairs made" in repaired.stdout


# -- shard-stats --------------------------------------------------------------------


def _stats(health: str) -> apb.ShardStats:
    status = apb.ShardStatus(shard_id=2, address="s2:1", health=health, slot_count=0)
    return apb.ShardStats(status=status, outbox_backlog=7 if health == "SERVING" else 0)


def _value(table: str, name: str) -> str:
    return next(line.split()[1] for line in table.splitlines() if line.split()[0] == name)


def test_stats_of_a_shard_that_answered_are_shown(fake: FakeAdmin) -> None:
    fake.stats = _stats("SERVING")
    result = run(fake, "shard-stats", "2")
    assert result.exit_code == 0, result.output
    assert _value(result.stdout, "outbox_backlog") == "7" and result.stderr == ""


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_shard_that_did_not_answer_shows_no_zeros_and_fails(
    fake: FakeAdmin, as_json: bool
) -> None:
    """Zeros read as "nothing queued", which is what an operator checks
    before remove-shard."""
    fake.stats = _stats("UNAVAILABLE: connection refused")
    result = run(fake, *(["--json"] if as_json else []), "shard-stats", "2")
    assert result.exit_code == 1, result.output
    assert result.stderr == "error: shard 2 did not answer: UNAVAILABLE: connection refused\n"
    if as_json:
        assert json.loads(result.stdout)["status"]["health"].startswith("UNAVAILABLE")
    else:
        for name in ("outbox_backlog", "parked_ops", "disk_MB", "fsyncs"):
            assert _value(result.stdout, name) == "-", name
        assert _value(result.stdout, "health") == "UNAVAILABLE"  # the reason is on stderr


REFUSING = (
    "SERVING READS; WRITES REFUSED since a write failed (IO error: 000003.log: No space left "
    "on device): make room if the disk is full, then restart the shard"
)


def test_a_shard_that_refuses_writes_shows_its_stats_and_fails(fake: FakeAdmin) -> None:
    """It answered: its counts are real. It did not fail to answer, as the
    line on stderr used to say."""
    fake.stats = _stats(REFUSING)
    fake.stats.outbox_backlog = 7
    result = run(fake, "shard-stats", "2")
    assert result.exit_code == 1, result.output
    assert _value(result.stdout, "outbox_backlog") == "7"
    assert "SERVING READS; WRITES REFUSED" in result.stdout and "IO error" not in result.stdout
    assert result.stderr == f"error: shard 2 is {REFUSING}\n"


def test_status_keeps_reasons_out_of_the_table(fake: FakeAdmin) -> None:
    """A silent shard's gRPC error in the health cell widened every row to
    ~200 columns; the table shows the state and the reasons follow it."""
    silent = "UNAVAILABLE: shard 1 (127.0.0.1:9) is unavailable: " + "failed to connect; " * 8
    fake.status.shards.extend(
        [
            apb.ShardStatus(shard_id=0, address="a:1", health="SERVING", slot_count=2048),
            apb.ShardStatus(shard_id=1, address="b:1", health=silent, slot_count=2048),
            apb.ShardStatus(shard_id=2, address="c:1", health=REFUSING, slot_count=0),
        ]
    )
    fake.status.shards[2].key_counts["users"] = 5
    result = run(fake, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert [row[4] for row in rows[:2]] == ["SERVING", "UNAVAILABLE"], lines
    assert " ".join(rows[2][4:8]) == "SERVING READS; WRITES REFUSED", lines
    assert rows[1][5:] == ["-"] * 5 and rows[2][8] == "5", lines  # the fenced shard's counts
    assert max(len(line) for line in lines[:5]) < 120, lines
    assert lines[5:] == [f"shard 1: {silent}", f"shard 2: {REFUSING}"]


def test_a_shard_without_fsync_is_flagged_in_status_and_stats(fake: FakeAdmin) -> None:
    fake.status.shards.extend(
        [
            apb.ShardStatus(shard_id=0, address="a:1", health="SERVING", slot_count=2048),
            apb.ShardStatus(
                shard_id=1, address="b:1", health="SERVING", slot_count=2048, unsafe_no_fsync=True
            ),
        ]
    )
    result = run(fake, "status")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"shard 1: {UNSAFE_NO_FSYNC}"
    assert result.stdout.count("UNSAFE") == 1
    fake.stats = _stats("SERVING")
    assert _value(run(fake, "shard-stats", "2").stdout, "fsync") == "on"
    fake.stats.status.unsafe_no_fsync = True
    assert _value(run(fake, "shard-stats", "2").stdout, "fsync") == "OFF"


# -- backup -------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_backup_stream_without_done_is_an_error(fake: FakeAdmin, as_json: bool) -> None:
    """Text and --json alike: ``error: ...`` on stderr, exit 1, nothing on stdout."""
    fake.backups = [apb.BackupProgress(keys_copied=10, keys_total=50)]
    json_flag = ["--json"] if as_json else []
    result = run(fake, *json_flag, "backup", "0", "/backups/b0")
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "error: backup of shard 0 ended without finishing (10 keys copied); "
        "do not rely on /backups/b0\n"
    )


def test_an_empty_backup_stream_is_an_error(fake: FakeAdmin) -> None:
    result = run(fake, "--json", "backup", "0", "/backups/b0")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: backup of shard 0 ended without finishing (0 keys")


def test_a_finished_backup(fake: FakeAdmin) -> None:
    fake.backups = [
        apb.BackupProgress(keys_copied=10, keys_total=50),
        apb.BackupProgress(keys_copied=50, keys_total=50, done=True, path="/backups/b0"),
    ]
    assert run(fake, "backup", "0", "/backups/b0").stdout == (
        "backed up shard 0: 50 keys in /backups/b0\n"
    )
    doc = json.loads(run(fake, "--json", "backup", "0", "/backups/b0").stdout)
    assert doc["done"] is True and doc["keys_copied"] == "50"


# -- usage errors and local failures -----------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "nohost",
        "h:99999",
        "h:0",
        "http://h:80",
        "unix:/tmp/s:80",
        "a b:80",
        "h:²",
        "a" * 300 + ":8",
    ],
)
def test_an_address_that_is_not_host_port_is_a_usage_error(fake: FakeAdmin, address: str) -> None:
    result = run(fake, "add-shard", address)
    assert result.exit_code == 2 and "Invalid value for 'HOST:PORT'" in result.stderr
    assert "must be host:port" in result.stderr or "the limit is 253" in result.stderr
    assert fake.calls["AddShard"] == 0
    assert run(fake, "add-shard", "[::1]:50061").exit_code == 0


@pytest.mark.parametrize("path", ["relative/folder", "backup", "./b0", "~/b0", "/b\x000"])
def test_a_backup_path_the_shard_would_refuse_is_a_usage_error(fake: FakeAdmin, path: str) -> None:
    result = run(fake, "backup", "0", path)
    assert result.exit_code == 2 and "Invalid value for 'PATH'" in result.stderr
    assert fake.calls["BackupShard"] == 0


BAD = "h\udcff:1"  # an undecodable byte, as Python hands it over from argv (PEP 383)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["add-shard", BAD], "'HOST:PORT'"),
        (["backup", "0", "/b/" + BAD], "'PATH'"),
        (["settings", "inbox_cap=" + BAD], "'[KEY=VALUE]...'"),
        (["--target", BAD, "status"], "'--target'"),
    ],
)
def test_text_that_is_not_utf8_is_a_usage_error(
    fake: FakeAdmin, args: list[str], named: str
) -> None:
    result = run(fake, *args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no UnicodeEncodeError traceback
    assert f"Invalid value for {named}" in result.stderr
    assert "is not valid UTF-8 (byte 0xff at position" in result.stderr
    assert sum(fake.calls.values()) == 0


def test_a_token_that_is_not_utf8_is_a_usage_error_that_does_not_echo_it(
    fake: FakeAdmin,
) -> None:
    token = "secret\udcffvalue"
    result = CliRunner().invoke(
        cli, ["--target", fake.target, "status"], env={"MURMUR_ADMIN_TOKEN": token}
    )
    assert result.exit_code == 2, result.output
    assert "'--token' (env var: 'MURMUR_ADMIN_TOKEN'): the value is not valid UTF-8" in (
        result.stderr
    )
    assert "secret" not in result.stderr


@pytest.mark.parametrize("timeout", ["inf", "nan", "1e10", "0", "-1"])
def test_an_unusable_timeout_is_a_usage_error(fake: FakeAdmin, timeout: str) -> None:
    """inf, nan or 1e10 used to be accepted and make every call DEADLINE_EXCEEDED."""
    result = run(fake, "--timeout", timeout, "status")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--timeout'" in result.stderr
    assert fake.calls["GetClusterStatus"] == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_an_unreadable_tls_ca_is_an_error_naming_the_file(fake: FakeAdmin) -> None:
    """Exists but cannot be read (even as root): ``error: ...``, exit 1, as in ``murmur``."""
    result = run(fake, "--tls-ca", "/proc/self/mem", "status")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: cannot read the --tls-ca file /proc/self/mem: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_tls_ca_that_is_not_a_file_is_a_usage_error(
    fake: FakeAdmin, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "absent.pem" if kind == "missing" else tmp_path
    result = run(fake, "--tls-ca", str(path), "status")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--tls-ca'" in result.stderr


def test_parked_ops_read_per_destination() -> None:
    from client.admin_cli import _parked

    assert _parked({}) == "none" and _parked({3: 0}) == "none"
    assert _parked({7: 12, 2: 1204}) == "for shard 2: 1,204; for shard 7: 12"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("inbox_cap=0", "inbox_cap is 0; it must be 1-100000"),
        ("backfill_limit=10001", "backfill_limit is 10001; it must be 0-10000"),
        ("foo=1", "unknown setting 'foo'"),
    ],
)
def test_a_setting_outside_the_shards_limits_is_refused_before_any_call(
    fake: FakeAdmin, setting: str, message: str
) -> None:
    """The CLI used to check only what the proto field holds, so inbox_cap=0
    reached the server (exit 1) while foo=1 was a usage error (exit 2)."""
    result = run(fake, "settings", setting)
    assert result.exit_code == 2, result.output
    assert "Invalid value for KEY=VALUE" in result.stderr and message in result.stderr
    assert fake.calls["UpdateSettings"] == 0


def test_the_data_cli_pointed_at_a_server_without_the_api_says_what_is_likely_wrong(
    fake: FakeAdmin,
) -> None:
    """gRPC's own words were "Method not found!" alone."""
    from client.cli import cli as murmur_cli

    result = CliRunner().invoke(murmur_cli, ["--target", fake.target, "ping"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: UNIMPLEMENTED: ")
    assert f"(is {fake.target} a Murmur router?" in result.stderr


def test_a_closed_socket_without_tls_suggests_tls() -> None:
    from client.cli import hint_for
    from client.errors import Unavailable

    closed = Unavailable("failed to connect to all addresses; last error: Socket closed")
    assert hint_for(closed, "h:1", None) == " (if the server speaks TLS, pass --tls-ca)"
    assert hint_for(closed, "h:1", "ca.pem") == ""
    assert hint_for(Unavailable("shard 2 is not answering"), "h:1", None) == ""


def test_a_target_without_a_port_says_grpc_dialed_443() -> None:
    """gRPC's own words name 443 only inside its resolver's text."""
    from client.cli import hint_for
    from client.errors import Unavailable

    refused = Unavailable("failed to connect to all addresses; ipv4:127.0.0.1:443: refused")
    hint = " (localhost names no port, so gRPC dialed 443; a router listens on 50051 by default)"
    assert hint_for(refused, "localhost", None) == hint
    assert "dns:///localhost names no port" in hint_for(refused, "dns:///localhost", None)
    for target in ("localhost:50051", "dns:///localhost:5", "unix:/tmp/s", "[::1]:5"):
        assert hint_for(refused, target, None) == "", target


def test_a_shard_id_that_is_no_number_names_the_id_wanted(fake: FakeAdmin) -> None:
    result = run(fake, "compact", "x1")
    assert result.exit_code == 2
    assert "'x1' is not a shard id (a whole number 0 to 4294967295)" in result.stderr


def test_a_negative_shard_id_is_not_called_positive_only(fake: FakeAdmin) -> None:
    """Shard 0 is a shard: "ids are positive" was wrong here."""
    result = run(fake, "compact", "-1")
    assert result.exit_code == 2 and "-1 is not an option, nor an id (no id is negative)" in (
        result.stderr
    )

"""``murmur-admin`` against a real cluster: tables, --json, progress bars, exit codes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import MurmurError
from murmur.slots import slot_for_handle
from tests.admin.launcher import Processes, Server

pytestmark = pytest.mark.integration

CONSOLE_SCRIPT = Path(sys.executable).with_name("murmur-admin")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cluster:
    procs: Processes
    token: str
    shards: list[Server]
    router: Server
    client: MurmurClient
    users: list[int]

    def run(self, *args: str, token: str | None = "", target: str | None = None) -> Result:
        """Run murmur-admin with MURMUR_TARGET / MURMUR_ADMIN_TOKEN set (token=None: unset)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MURMUR_")}
        env["MURMUR_TARGET"] = target or self.router.address
        if token is not None:
            env["MURMUR_ADMIN_TOKEN"] = token or self.token
        command = (
            [str(CONSOLE_SCRIPT)]
            if CONSOLE_SCRIPT.exists()
            else [sys.executable, "-m", "client.admin_cli"]
        )
        done = subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=120
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code == 0, result
        assert self.token not in result.out + result.err
        return result

    def json(self, *args: str) -> dict:
        return json.loads(self.ok("--json", *args).out)


def handles_in_slots(low: int, high: int, count: int, prefix: str) -> list[str]:
    """Handles whose users will live in slots low..high (ids are minted in the handle's slot)."""
    found = []
    while len(found) < count:
        handle = f"{prefix}{secrets.token_hex(4)}"
        if low <= slot_for_handle(handle) <= high:
            found.append(handle)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    token = secrets.token_hex(16)
    with Processes(tmp_path_factory.mktemp("cli")) as procs:
        shards = [procs.shard(i) for i in (0, 1)]
        router = procs.router([s.address for s in shards], token)
        with MurmurClient(router.address) as client:
            handles = [f"c{i}" for i in range(30)]
            handles += handles_in_slots(0, 63, 3, "lo") + handles_in_slots(64, 127, 3, "hi")
            users = [client.create_user(h).user_id for h in handles]
            for i, user in enumerate(users):
                client.follow(user, users[(i + 1) % len(users)])
                client.post_tweet(user, f"hello {i}")
            yield Cluster(procs, token, shards, router, client, users)


def test_status_table(cluster: Cluster) -> None:
    out = cluster.ok("status").out.splitlines()
    assert out[0].startswith("map version ") and "2 shards; 4096 slots owned" in out[0]
    assert out[1].split() == [
        "shard", "address", "slots", "count", "health",
        "users", "tweets", "inbox", "outbox", "disk_MB",
    ]  # fmt: skip
    rows = [line.split() for line in out[2:]]
    assert [r[:5] for r in rows] == [
        ["0", cluster.shards[0].address, "0-2047", "2048", "SERVING"],
        ["1", cluster.shards[1].address, "2048-4095", "2048", "SERVING"],
    ]
    assert sum(int(r[5]) for r in rows) == len(cluster.users)
    assert sum(int(r[6]) for r in rows) == len(cluster.users)


def test_status_json(cluster: Cluster) -> None:
    doc = cluster.json("status")
    assert int(doc["map_version"]) >= 1
    shards = {s["shard_id"]: s for s in doc["shards"]}
    assert sorted(shards) == [0, 1]
    assert shards[0]["slots"] == [{"start": 0, "end": 2047}]
    assert shards[1]["slot_count"] == 2048 and shards[1]["health"] == "SERVING"
    users = sum(int(s["key_counts"].get("users", 0)) for s in shards.values())
    assert users == len(cluster.users)


def test_shard_stats(cluster: Cluster) -> None:
    table = cluster.ok("shard-stats", "1").out
    names = {line.split()[0] for line in table.splitlines()}
    assert {"health", "outbox_backlog", "delivery_lag_p99_ms", "fsyncs", "keys.users"} <= names
    parked = next(line for line in table.splitlines() if line.startswith("parked_ops"))
    assert parked.split()[1:] == ["none"]  # every shard answers
    with_leveldb = cluster.ok("shard-stats", "1", "--leveldb").out
    assert "Compactions" in with_leveldb
    doc = cluster.json("shard-stats", "0")
    assert doc["status"]["shard_id"] == 0 and "outbox_backlog" in doc and "leveldb_stats" in doc
    missing = cluster.run("shard-stats", "9")
    assert missing.code == 1 and missing.out == ""
    assert missing.err.startswith("error: NOT_FOUND: shard 9 is not in the cluster")
    assert cluster.run("shard-stats", "zero").code == 2


def test_settings_show_change_and_refuse(cluster: Cluster) -> None:
    shown = dict(line.split() for line in cluster.ok("settings").out.splitlines()[1:])
    assert set(shown) == {
        "celebrity_threshold",
        "inbox_cap",
        "backfill_limit",
        "post_rate_limit",
        "follow_rate_limit",
    }
    assert (shown["post_rate_limit"], shown["follow_rate_limit"]) == ("300", "300")
    try:
        changed = cluster.json(
            "settings", "inbox_cap=700", "backfill-limit=150", "post-rate-limit=0"
        )
        assert (changed["inbox_cap"], changed["backfill_limit"]) == (700, 150)
        assert (changed["post_rate_limit"], changed["follow_rate_limit"]) == (0, 300)
        assert changed["celebrity_threshold"] == shown["celebrity_threshold"]  # uint64: a string
        table = dict(line.split() for line in cluster.ok("settings").out.splitlines()[1:])
        assert table["inbox_cap"] == "700" and table["backfill_limit"] == "150"
    finally:
        cluster.ok(*["settings"] + [f"{k}={v}" for k, v in shown.items()])
    assert cluster.json("settings")["inbox_cap"] == int(shown["inbox_cap"])

    for args, message in [
        (["colour=blue"], "unknown setting 'colour'; known settings: celebrity_threshold"),
        (["inbox_cap=many"], "inbox_cap must be a non-negative integer, not 'many'"),
        (["inbox_cap=-5"], "inbox_cap must be a non-negative integer"),
        (["inbox_cap"], "'inbox_cap' is not KEY=VALUE"),
        (["inbox_cap=99999999999"], "inbox_cap is 99999999999; it must be 1-100000"),
        (["inbox_cap=0"], "inbox_cap is 0; it must be 1-100000"),  # the shards' own limits
    ]:
        refused = cluster.run("settings", *args)
        assert refused.code == 2, refused
        assert message in refused.err, refused.err
    with AdminClient(cluster.router.address, token=cluster.token) as admin:  # past the CLI
        with pytest.raises(MurmurError) as server_side:
            admin.update_settings(inbox_cap=0)
    assert server_side.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "inbox_cap is 0; it must be 1-100000" in server_side.value.details


def test_check(cluster: Cluster) -> None:
    out = cluster.ok("check").out
    assert "one_sided_edges" in out and out.rstrip().endswith("consistent")
    doc = cluster.json("check", "--slots", "0-63,100,2048-2100")
    assert doc["wrong_counters"] == "0" and doc["one_sided_edges"] == "0"
    assert "repaired" in cluster.ok("check", "--repair").out
    for bad in ("4096", "5-1", "1,,2", "a-b"):
        refused = cluster.run("check", "--slots", bad)
        assert refused.code == 2 and "Invalid value for '--slots'" in refused.err, refused


def test_move_slots_with_progress_bar(cluster: Cluster) -> None:
    moved = cluster.ok("--progress", "move-slots", "0-99", "--to", "1")
    assert "moved 100 of 100 slots" in moved.out
    assert "100/100" in moved.err and "slot" in moved.err and "100%" in moved.err
    status = {s["shard_id"]: s for s in cluster.json("status")["shards"]}
    assert status[1]["slots"][0] == {"start": 0, "end": 99}
    assert status[0]["slot_count"] == 1948
    # half of them there already: the count says what moved
    overlap = cluster.ok("move-slots", "90-109", "--to", "1")
    lines = overlap.out.splitlines()
    assert lines[0] == "slots 100-109 now on shard 1" and len(lines) == 2, lines
    assert lines[1].startswith("moved 10 of 20 slots (10 already there); map version "), lines
    # and back, as JSON: every progress message; no bar unless asked (stderr is a pipe)
    back = cluster.run("--json", "move-slots", "0-109", "--to", "0")
    assert back.code == 0 and back.err == ""
    progress = json.loads(back.out)["progress"]
    assert progress[-1]["slots_done"] == progress[-1]["slots_total"] == 110
    assert progress[-1]["slots_in_place"] == 0
    assert [s["slot_count"] for s in cluster.json("status")["shards"]] == [2048, 2048]
    # nothing was lost on the way
    for user in cluster.users:
        assert cluster.client.get_user(user_id=user).tweet_count == 1


def test_move_slots_refusals(cluster: Cluster) -> None:
    for args, code, message in [
        (["move-slots", "10-5", "--to", "1"], 2, "ends before it starts"),
        (["move-slots", "0-4096", "--to", "1"], 2, "slot 4096 is out of range"),
        (["move-slots", "0-3"], 2, "Missing option '--to'"),
        (["move-slots", "0-3", "--to", "7"], 1, "error: NOT_FOUND: shard 7"),
    ]:
        result = cluster.run(*args)
        assert result.code == code and message in result.err, result
    owner = cluster.json("status")["shards"][0]
    first = owner["slots"][0]["start"]
    stay = cluster.ok("move-slots", f"{first}-{first + 3}", "--to", str(owner["shard_id"]))
    assert f"already on shard {owner['shard_id']}: nothing to move" in stay.out


def test_rebalance_when_balanced(cluster: Cluster) -> None:
    assert cluster.ok("rebalance", "--dry-run").out.strip() == "nothing to move"
    assert json.loads(cluster.ok("--json", "rebalance").out)["progress"][-1]["step"] == (
        "nothing to move"
    )


def test_token_and_target_errors(cluster: Cluster) -> None:
    missing = cluster.run("status", token=None)
    assert missing.code == 2 and "no operator token" in missing.err
    wrong = secrets.token_hex(8)
    denied = cluster.run("--token", wrong, "status", token=None)
    assert denied.code == 1 and denied.err.startswith("error: PERMISSION_DENIED: ")
    assert wrong not in denied.err + denied.out
    env_wrong = cluster.run("status", token=wrong)
    assert env_wrong.code == 1 and wrong not in env_wrong.err
    help_text = cluster.run("--help").out
    assert cluster.token not in help_text and "MURMUR_ADMIN_TOKEN" in help_text
    down = cluster.run("--timeout", "2", "status", target="127.0.0.1:1")
    assert down.code == 1 and down.err.startswith("error: UNAVAILABLE: "), down


def test_shard_lifecycle(cluster: Cluster) -> None:
    extra = cluster.procs.shard(2)
    joined = cluster.ok("add-shard", extra.address).out
    assert joined.startswith(f"shard 2 at {extra.address} joined; map version ")
    again = cluster.ok("add-shard", extra.address).out  # a retry after a lost answer
    assert again.startswith(f"shard 2 at {extra.address} was already in the cluster; map version")
    plan = cluster.ok("rebalance", "--dry-run").out
    assert "would move" in plan and "to shard 2" in plan
    balanced = cluster.ok("--progress", "rebalance")
    assert "moved 1365 of 1365 slots" in balanced.out and "1365/1365" in balanced.err
    counts = sorted(s["slot_count"] for s in cluster.json("status")["shards"])
    assert counts == [1365, 1365, 1366]
    drained = cluster.ok("--progress", "drain", "2")
    assert "moved 1365 of 1365 slots" in drained.out
    busy = cluster.run("remove-shard", "0")
    assert busy.code == 1 and busy.err.startswith("error: FAILED_PRECONDITION: shard 0 still owns")
    # a shard that is down shows why, without failing the whole status
    extra.stop()
    shown = cluster.ok("status").out.splitlines()
    down = shown[4].split()
    assert down[:5] == ["2", extra.address, "-", "0", "UNAVAILABLE"] and down[-5:] == ["-"] * 5
    assert shown[5].startswith("shard 2: UNAVAILABLE: ") and extra.address in shown[5], shown
    refused = cluster.run("move-slots", "0-3", "--to", "2")
    assert refused.code == 1 and refused.err.startswith(
        "error: UNAVAILABLE: the move did not start: shard 2 does not answer"
    ), refused
    assert cluster.ok("remove-shard", "2").out.startswith("shard 2 removed; map version ")
    shards = cluster.json("status")["shards"]
    assert [(s["shard_id"], s["slot_count"]) for s in shards] == [(0, 2048), (1, 2048)]
    bad_addresses = (
        *("nohost", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:-1", ":50061", "h:²"),
        *("http://localhost:50061", "unix:/tmp/x:80", "host with space:80", "bad\x01host:80"),
    )
    with AdminClient(cluster.router.address, cluster.token) as admin:  # the router's own check
        for address in bad_addresses:
            with pytest.raises(MurmurError) as refused:
                admin.add_shard(address)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT, address
            assert "must be host:port" in refused.value.details
    for address in bad_addresses:  # and the CLI's, before any call
        bad = cluster.run("add-shard", address)
        assert bad.code == 2 and "must be host:port" in bad.err, address
    router = cluster.run("add-shard", cluster.router.address)
    assert router.err.startswith(
        f"error: FAILED_PRECONDITION: the server at {cluster.router.address} is not a Murmur shard"
    ), router
    renamed = f"localhost:{cluster.shards[0].port}"
    same = cluster.run("add-shard", renamed)
    assert same.err.startswith(
        f"error: ALREADY_EXISTS: {renamed} reaches shard 0, already in the cluster at "
        f"{cluster.shards[0].address}; there is nothing to add"
    ), same
    for user in cluster.users:
        assert cluster.client.get_user(user_id=user).tweet_count == 1


def test_compact_and_backup(cluster: Cluster, tmp_path: Path) -> None:
    compacted = cluster.ok("compact", "0").out
    assert compacted.startswith("compacted shard 0: ") and " MB -> " in compacted
    assert int(cluster.json("compact", "1")["disk_bytes_after"]) > 0
    target = tmp_path / "backup-0"
    backed_up = cluster.ok("--progress", "backup", "0", str(target))
    assert backed_up.out.startswith("backed up shard 0: ") and f"keys in {target}" in backed_up.out
    assert "key" in backed_up.err and "100%" in backed_up.err
    assert target.is_dir()
    again = cluster.run("backup", "0", str(target))
    assert again.code == 1 and again.err.startswith("error: ALREADY_EXISTS: ")
    doc = cluster.json("backup", "1", str(tmp_path / "backup-1"))
    assert doc["done"] is True and int(doc["keys_total"]) == int(doc["keys_copied"]) > 0
    shutil.rmtree(target)


def test_move_progress_counts_keys_across_chunks(cluster: Cluster) -> None:
    with AdminClient(cluster.router.address, cluster.token) as admin:
        there = list(admin.move_slots(range(128), 1))  # two chunks, users in both
        list(admin.move_slots(range(128), 0))
    copied = [p.keys_copied for p in there]
    assert copied == sorted(copied), copied

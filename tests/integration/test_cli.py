"""The ``murmur`` console script, run as a subprocess against a real cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client.client import MurmurClient
from tests.integration.cluster import ROOT, LocalCluster, eventually, unique_handle

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "murmur"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "client.cli"]
USER_HEADER = ["id", "handle", "name", "followers", "following", "tweets", "celebrity"]
TWEET_HEADER = ["id", "author", "created_at", "edited", "text"]


def murmur(
    *args: str, target: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; ``target`` becomes ``--target`` (MURMUR_TARGET is never inherited)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MURMUR_TARGET"}
    full_env.update(env or {})
    argv = [*COMMAND, *(["--target", target] if target else []), *args]
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


class Cli:
    def __init__(self, target: str) -> None:
        self.target = target

    def ok(self, *args: str) -> str:
        result = murmur(*args, target=self.target)
        assert result.returncode == 0, (args, result.returncode, result.stderr)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args))

    def fails(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = murmur(*args, target=self.target)
        assert result.returncode != 0, (args, result.stdout)
        return result


@pytest.fixture(scope="module")
def cli(cluster: LocalCluster) -> Cli:
    return Cli(cluster.target)


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


def test_user_create_and_show_by_handle_and_id(cli: Cli) -> None:
    handle = unique_handle("Cli")
    table = rows(cli.ok("user", "create", handle, "--name", "Cli User", "--bio", "from a shell"))
    assert table[0] == USER_HEADER
    user_id, shown_handle, name, *counts = table[1]
    assert (shown_handle, name, counts) == (handle, "Cli User", ["0", "0", "0", "no"])

    by_handle = cli.json("user", "show", handle.lower())
    assert by_handle["user_id"] == user_id
    assert by_handle["handle"] == handle
    assert by_handle["display_name"] == "Cli User"
    assert by_handle["bio"] == "from a shell"
    by_id = cli.json("user", "show", user_id)
    assert by_id == by_handle
    at_handle = rows(cli.ok("user", "show", "@" + handle.upper()))
    assert at_handle[1][:2] == [user_id, handle]

    created = cli.json("user", "create", unique_handle("cli"))
    assert int(created["user_id"]) > int(user_id)
    assert created["follower_count"] == "0"


def test_user_update_changes_name_and_bio(cli: Cli) -> None:
    handle = unique_handle("Upd")
    cli.ok("user", "create", handle, "--name", "Before", "--bio", "old bio")
    table = rows(cli.ok("user", "update", "@" + handle, "--name", "After"))
    assert table[1][1:3] == [handle, "After"]
    cleared = cli.json("user", "update", handle, "--bio", "")
    assert (cleared["display_name"], cleared.get("bio", "")) == ("After", "")
    assert "profile_updated_at" in cleared
    nothing = cli.fails("user", "update", handle)
    assert nothing.returncode == 2 and "give --name or --bio" in nothing.stderr
    too_long = cli.fails("user", "update", handle, "--name", "n" * 51)
    assert "INVALID_ARGUMENT" in too_long.stderr and "display_name" in too_long.stderr


def test_follow_post_edit_delete_and_timelines(cli: Cli, cluster: LocalCluster) -> None:
    reader = cluster.handle_on_shard(0, "clir")
    author = cluster.handle_on_shard(2, "clia")
    reader_id = cli.json("user", "create", reader)["user_id"]
    author_id = cli.json("user", "create", author)["user_id"]

    assert cli.ok("follow", reader, author).strip()
    assert cli.json("follow", reader, author) == {"ok": True}  # idempotent
    following = cli.json("following", reader)
    assert [u["user_id"] for u in following["users"]] == [author_id]

    def followers_listed() -> None:
        listed = cli.json("followers", author)
        assert [u["handle"] for u in listed["users"]] == [reader]

    eventually(followers_listed)
    assert rows(cli.ok("followers", author_id))[0] == USER_HEADER

    first = cli.json("post", author, "first from the shell")
    assert first["user_id"] == author_id and first["text"] == "first from the shell"
    posted = rows(cli.ok("post", author_id, "second from the shell"))
    assert posted[0] == TWEET_HEADER
    second_id = posted[1][0]
    assert posted[1][1] == author_id and posted[1][-1] == "second from the shell"
    assert int(second_id) > int(first["tweet_id"])

    shown = cli.json("tweet", "show", first["tweet_id"])
    assert shown == first
    edited = cli.json("tweet", "edit", author, first["tweet_id"], "first, edited")
    assert edited["text"] == "first, edited" and "edited_at" in edited
    shown_rows = rows(cli.ok("tweet", "show", first["tweet_id"]))
    assert shown_rows[1][3] == "yes" and shown_rows[1][-1] == "first, edited"

    timeline = cli.json("timeline", author)
    assert [t["tweet_id"] for t in timeline["tweets"]] == [second_id, first["tweet_id"]]
    limited = cli.json("timeline", author_id, "--limit", "1")
    assert [t["tweet_id"] for t in limited["tweets"]] == [second_id]
    older = cli.json("timeline", author, "--before", second_id)
    assert [t["tweet_id"] for t in older["tweets"]] == [first["tweet_id"]]
    assert rows(cli.ok("timeline", author))[0] == TWEET_HEADER

    def home_has_both() -> None:
        home = cli.json("home", reader)
        assert [t["tweet_id"] for t in home["tweets"]] == [second_id, first["tweet_id"]]
        assert home["tweets"][1]["text"] == "first, edited"
        assert "partial" not in home

    eventually(home_has_both)

    assert second_id in cli.ok("tweet", "delete", author, second_id)
    gone = cli.fails("tweet", "show", second_id)
    assert "NOT_FOUND" in gone.stderr and second_id in gone.stderr
    assert [t["tweet_id"] for t in cli.json("timeline", author)["tweets"]] == [first["tweet_id"]]

    def home_without_deleted() -> None:
        home = cli.json("home", reader_id)
        assert [t["tweet_id"] for t in home["tweets"]] == [first["tweet_id"]]

    eventually(home_without_deleted)

    assert cli.json("unfollow", reader, author) == {"ok": True}
    assert cli.json("following", reader) == {"users": []}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["user", "show", "nosuchuser"], "NOT_FOUND"),
        (["user", "show", "123456789"], "NOT_FOUND"),
        (["tweet", "show", "123456789"], "NOT_FOUND"),
        (["user", "create", "bad-handle!"], "INVALID_ARGUMENT"),
        (["timeline", "nosuchuser"], "NOT_FOUND"),
    ],
)
def test_errors_exit_nonzero_with_the_status_code_on_stderr(
    cli: Cli, args: list[str], code: str
) -> None:
    for json_flag in ([], ["--json"]):
        result = cli.fails(*json_flag, *args)
        assert result.returncode == 1
        assert code in result.stderr
        assert result.stdout == ""


def test_errors_from_a_real_cluster(cli: Cli, cluster: LocalCluster) -> None:
    with MurmurClient(cluster.target) as client:
        owner = client.create_user(unique_handle("eo"))
        other = client.create_user(unique_handle("ex"))
        tweet = client.post_tweet(owner.user_id, "mine")
    taken = cli.fails("user", "create", owner.handle.upper())
    assert "ALREADY_EXISTS" in taken.stderr
    denied = cli.fails("tweet", "edit", other.handle, str(tweet.tweet_id), "not yours")
    assert "PERMISSION_DENIED" in denied.stderr
    blank = cli.fails("post", owner.handle, "   ")
    assert "INVALID_ARGUMENT" in blank.stderr and "text" in blank.stderr
    itself = cli.fails("follow", owner.handle, str(owner.user_id))
    assert "INVALID_ARGUMENT" in itself.stderr


def test_murmur_target_environment_variable_is_honoured(cli: Cli, cluster: LocalCluster) -> None:
    handle = unique_handle("env")
    created = murmur("--json", "user", "create", handle, env={"MURMUR_TARGET": cluster.target})
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["user_id"]
    shown = murmur("--json", "user", "show", handle, env={"MURMUR_TARGET": cluster.target})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["user_id"] == user_id
    # and it really is the variable that picks the router: a dead one fails
    dead = murmur("--timeout", "2", "user", "show", handle, env={"MURMUR_TARGET": "127.0.0.1:1"})
    assert dead.returncode == 1
    assert "UNAVAILABLE" in dead.stderr
    # --target wins over the variable
    both = murmur(
        "--json",
        "user",
        "show",
        handle,
        target=cluster.target,
        env={"MURMUR_TARGET": "127.0.0.1:1"},
    )
    assert both.returncode == 0, both.stderr

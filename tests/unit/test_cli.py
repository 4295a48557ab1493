"""The ``murmur`` CLI, run through click's CliRunner against the in-process fake."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from client.cli import cli, main, render_table
from client.client import MurmurClient
from murmur import page_tokens
from murmur.page_tokens import TokenKind
from tests.unit.test_client import FIRST_TWEET_ID, FIRST_USER_ID, FakeMurmur, serve_fake


@pytest.fixture
def fake() -> Iterator[FakeMurmur]:
    with serve_fake() as servicer:
        yield servicer


@pytest.fixture
def seed(fake: FakeMurmur) -> Iterator[MurmurClient]:
    """A direct client for setting up state the CLI then reads."""
    with MurmurClient(fake.target, retries=False) as c:
        yield c


def run(fake: FakeMurmur, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--target", fake.target, *args], env=env)


def run_json(fake: FakeMurmur, *args: str) -> Any:
    result = run(fake, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table(result: Result) -> list[list[str]]:
    """Rows of a printed table split on runs of 2+ spaces (cells never contain those here)."""
    assert result.exit_code == 0, result.output
    return [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]


USER_HEADER = ["id", "handle", "name", "followers", "following", "tweets", "celebrity"]
TWEET_HEADER = ["id", "author", "created_at", "edited", "text"]


# -- users -------------------------------------------------------------------------


def test_user_create_prints_a_table(fake: FakeMurmur) -> None:
    result = run(fake, "user", "create", "@alice", "--name", "Alice Liddell", "--bio", "curious")
    assert table(result) == [
        USER_HEADER,
        [str(FIRST_USER_ID), "alice", "Alice Liddell", "0", "0", "0", "no"],
    ]
    assert fake.requests["CreateUser"][0].handle == "alice"  # leading @ dropped
    assert fake.requests["CreateUser"][0].bio == "curious"


def test_user_create_json(fake: FakeMurmur) -> None:
    doc = run_json(fake, "user", "create", "bob")
    assert doc["user_id"] == str(FIRST_USER_ID)  # canonical proto3 JSON: uint64 as string
    assert doc["handle"] == "bob"
    assert doc["follower_count"] == "0"  # zero values are present, not omitted
    assert doc["celebrity"] is False
    assert doc["created_at"].endswith("Z")


def test_user_show_digits_are_ids_and_at_digits_are_handles(
    fake: FakeMurmur,
    seed: MurmurClient,
) -> None:
    alice = seed.create_user("alice")
    numeric = seed.create_user(str(alice.user_id))  # a user whose handle is alice's id
    assert numeric.user_id != alice.user_id

    assert run_json(fake, "user", "show", str(alice.user_id))["handle"] == "alice"
    assert run_json(fake, "user", "show", f"@{alice.user_id}")["user_id"] == str(numeric.user_id)
    assert run_json(fake, "user", "show", "ALICE")["user_id"] == str(alice.user_id)
    assert run_json(fake, "user", "show", "@alice")["user_id"] == str(alice.user_id)
    keys = [r.WhichOneof("key") for r in fake.requests["GetUser"]]
    assert keys == ["user_id", "handle", "handle", "handle"]
    assert [r.handle for r in fake.requests["GetUser"][1:]] == [
        str(alice.user_id),
        "ALICE",
        "alice",
    ]


def test_user_show_table_aligns_columns(fake: FakeMurmur, seed: MurmurClient) -> None:
    seed.create_user("a", display_name="Line one\nline two")
    result = run(fake, "user", "show", "a")
    header, row = result.stdout.splitlines()
    assert row.startswith(str(FIRST_USER_ID))
    assert "Line one line two" in row
    assert header.index("celebrity") == row.rindex("no")  # text columns: left-aligned
    assert header.index("tweets") + len("tweets") == row.rindex("0") + 1  # numbers: right


# -- follows -----------------------------------------------------------------------


def test_follow_and_unfollow_by_handle_and_id(fake: FakeMurmur, seed: MurmurClient) -> None:
    alice, bob = seed.create_user("alice"), seed.create_user("bob")
    result = run(fake, "follow", "@alice", str(bob.user_id))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"@alice now follows user {bob.user_id}\n"
    assert fake.follows == {(alice.user_id, bob.user_id)}

    assert run_json(fake, "unfollow", "alice", "bob") == {"ok": True}
    assert fake.follows == set()
    result = run(fake, "unfollow", "alice", "bob")
    assert result.stdout == "@alice no longer follows @bob\n"


def test_followers_pages_until_limit(fake: FakeMurmur, seed: MurmurClient) -> None:
    star = seed.create_user("star")
    fans = [seed.create_user(f"fan{i}") for i in range(14)]
    for f in fans:
        seed.follow(f.user_id, star.user_id)
    fake.max_page_size = 5  # force several pages

    rows = table(run(fake, "followers", "star", "--limit", "12"))
    assert rows[0] == USER_HEADER
    assert [r[1] for r in rows[1:]] == [f"fan{i}" for i in range(12)]
    assert fake.calls["ListFollowers"] == 3

    doc = run_json(fake, "followers", str(star.user_id))  # default limit 20 > 14
    assert [u["handle"] for u in doc["users"]] == [f"fan{i}" for i in range(14)]


def test_following(fake: FakeMurmur, seed: MurmurClient) -> None:
    fan = seed.create_user("fan")
    for name in ("x", "y", "z"):
        seed.follow(fan.user_id, seed.create_user(name).user_id)
    doc = run_json(fake, "following", "fan", "--limit", "2")
    assert [u["handle"] for u in doc["users"]] == ["x", "y"]
    assert [u["follower_count"] for u in doc["users"]] == ["1", "1"]


def test_empty_list_prints_only_a_header(fake: FakeMurmur, seed: MurmurClient) -> None:
    seed.create_user("loner")
    assert table(run(fake, "followers", "loner")) == [USER_HEADER]
    assert run_json(fake, "followers", "loner") == {"users": []}


def _star_with_fans(seed: MurmurClient, count: int) -> None:
    """``count`` fans follow "star"; "fan0" also follows the other fans, so
    both star's followers and fan0's followees number ``count``."""
    star = seed.create_user("star")
    fans = [seed.create_user(f"fan{i}") for i in range(count)]
    for f in fans:
        seed.follow(f.user_id, star.user_id)
        if f is not fans[0]:
            seed.follow(fans[0].user_id, f.user_id)


@pytest.mark.parametrize("command", ["followers", "following"])
def test_a_list_cut_short_by_the_limit_says_so(
    fake: FakeMurmur, seed: MurmurClient, command: str
) -> None:
    """The default --limit 20 used to stop silently; now stderr and JSON say more exist."""
    _star_with_fans(seed, 25)
    who = "star" if command == "followers" else "fan0"
    result = run(fake, command, who)
    assert len(table(result)) == 1 + 20
    what = "followers" if command == "followers" else "followed users"
    assert result.stderr == (
        f"note: more {what} exist; showing the first 20 (raise --limit to see more)\n"
    )
    doc = run_json(fake, command, who)
    assert len(doc["users"]) == 20
    assert doc["truncated"] is True


@pytest.mark.parametrize("command", ["followers", "following"])
def test_a_complete_list_has_no_note(fake: FakeMurmur, seed: MurmurClient, command: str) -> None:
    _star_with_fans(seed, 20)  # exactly the default limit
    who = "star" if command == "followers" else "fan0"
    result = run(fake, command, who)
    assert len(table(result)) == 1 + 20
    assert result.stderr == ""
    doc = run_json(fake, command, who)
    assert len(doc["users"]) == 20
    assert "truncated" not in doc


# -- tweets ------------------------------------------------------------------------


def test_post_prints_the_tweet(fake: FakeMurmur, seed: MurmurClient) -> None:
    alice = seed.create_user("alice")
    result = run(fake, "post", "alice", "hello\nworld", "--request-id", "abc")
    assert table(result) == [
        TWEET_HEADER,
        [str(FIRST_TWEET_ID), str(alice.user_id), "2025-03-04T05:06:07Z", "no", "hello world"],
    ]
    request = fake.requests["PostTweet"][0]
    assert (request.text, request.request_id) == ("hello\nworld", "abc")

    doc = run_json(fake, "post", str(alice.user_id), "again", "--request-id", "abc")
    assert doc["tweet_id"] == str(FIRST_TWEET_ID)  # same request id: same tweet
    assert doc["text"] == "hello\nworld"


def test_tweet_show_edit_delete(fake: FakeMurmur, seed: MurmurClient) -> None:
    alice = seed.create_user("alice")
    tweet = seed.post_tweet(alice.user_id, "draft")
    tid = str(tweet.tweet_id)

    assert run_json(fake, "tweet", "show", tid)["text"] == "draft"
    rows = table(run(fake, "tweet", "edit", "alice", tid, "final"))
    assert rows[1][3:] == ["yes", "final"]
    doc = run_json(fake, "tweet", "show", tid)
    assert doc["edited_at"] == "2025-03-04T06:06:07Z"

    result = run(fake, "tweet", "delete", "@alice", tid)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"deleted tweet {tid}\n"
    assert fake.tweets == {}
    assert fake.requests["DeleteTweet"][0].user_id == alice.user_id


def test_tweet_delete_json(fake: FakeMurmur, seed: MurmurClient) -> None:
    alice = seed.create_user("alice")
    tweet = seed.post_tweet(alice.user_id, "bye")
    assert run_json(fake, "tweet", "delete", "alice", str(tweet.tweet_id)) == {"ok": True}


# -- timelines ---------------------------------------------------------------------


def _posts(seed: MurmurClient, handle: str, count: int) -> tuple[int, list[int]]:
    user = seed.create_user(handle)
    return user.user_id, [
        seed.post_tweet(user.user_id, f"{handle} {i}").tweet_id for i in range(count)
    ]


def test_timeline_limit_and_pages(fake: FakeMurmur, seed: MurmurClient) -> None:
    _, ids = _posts(seed, "alice", 9)
    fake.max_page_size = 4
    rows = table(run(fake, "timeline", "alice", "--limit", "6"))
    assert rows[0] == TWEET_HEADER
    assert [int(r[0]) for r in rows[1:]] == ids[::-1][:6]
    assert fake.calls["GetUserTimeline"] == 2


@pytest.mark.parametrize("command", ["timeline", "home"])
def test_a_timeline_cut_short_by_the_limit_says_so(
    fake: FakeMurmur, seed: MurmurClient, command: str
) -> None:
    _, ids = _posts(seed, "alice", 5)
    newest = ids[::-1]
    result = run(fake, command, "alice", "--limit", "3")
    assert [int(r[0]) for r in table(result)[1:]] == newest[:3]
    assert result.stderr == (
        "note: more tweets exist; showing the newest 3 "
        f"(--before {newest[2]} shows the next ones)\n"
    )
    assert run_json(fake, command, "alice", "--limit", "3")["truncated"] is True
    assert run(fake, command, "alice", "--limit", "5").stderr == ""
    assert "truncated" not in run_json(fake, command, "alice", "--limit", "5")


def test_timeline_before_builds_a_user_timeline_token(
    fake: FakeMurmur,
    seed: MurmurClient,
) -> None:
    alice_id, ids = _posts(seed, "alice", 6)
    doc = run_json(fake, "timeline", "alice", "--before", str(ids[3]))
    assert [int(t["tweet_id"]) for t in doc["tweets"]] == [ids[2], ids[1], ids[0]]
    token = fake.requests["GetUserTimeline"][0].page_token
    assert page_tokens.decode(TokenKind.USER_TIMELINE, alice_id, token) == ids[3]


def test_home_before_builds_a_home_timeline_token(
    fake: FakeMurmur,
    seed: MurmurClient,
) -> None:
    alice_id, mine = _posts(seed, "alice", 2)
    bob_id, bobs = _posts(seed, "bob", 2)
    seed.follow(alice_id, bob_id)
    doc = run_json(fake, "home", "alice", "--before", str(bobs[1]))
    assert [int(t["tweet_id"]) for t in doc["tweets"]] == [bobs[0], mine[1], mine[0]]
    assert "partial" not in doc
    token = fake.requests["GetHomeTimeline"][0].page_token
    assert page_tokens.decode(TokenKind.HOME_TIMELINE, alice_id, token) == bobs[1]


def test_home_partial_is_reported(fake: FakeMurmur, seed: MurmurClient) -> None:
    _posts(seed, "alice", 1)
    fake.partial_shards = [2, 11]
    result = run(fake, "home", "alice")
    assert result.exit_code == 0
    assert "warning: partial timeline: shards 2, 11 did not answer" in result.stderr
    assert "warning" not in result.stdout
    doc = run_json(fake, "home", "alice")
    assert doc["partial"] is True
    assert doc["unavailable_shards"] == [2, 11]


# -- ping, target, entry point -------------------------------------------------------


def test_ping(fake: FakeMurmur) -> None:
    result = run(fake, "ping")
    assert result.exit_code == 0
    assert result.stdout.startswith("pong from shard 3 in ")
    assert run_json(fake, "ping") == {"shard_id": 3}


def test_target_comes_from_the_environment(fake: FakeMurmur) -> None:
    result = CliRunner().invoke(cli, ["ping"], env={"MURMUR_TARGET": fake.target})
    assert result.exit_code == 0, result.output
    assert fake.calls["Ping"] == 1


def test_main_is_the_console_script(fake: FakeMurmur, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["murmur", "--target", fake.target, "--json", "ping"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0
    assert fake.calls["Ping"] == 1


# -- errors --------------------------------------------------------------------------


def test_rpc_error_goes_to_stderr_with_exit_1(fake: FakeMurmur) -> None:
    result = run(fake, "user", "show", "nobody")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: NOT_FOUND: user @nobody\n"


def test_rpc_error_with_json_is_still_on_stderr(fake: FakeMurmur, seed: MurmurClient) -> None:
    alice, bob = seed.create_user("alice"), seed.create_user("bob")
    tweet = seed.post_tweet(alice.user_id, "mine")
    result = run(fake, "--json", "tweet", "edit", "bob", str(tweet.tweet_id), "hijack")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: PERMISSION_DENIED: tweet {tweet.tweet_id} belongs to user {alice.user_id}\n"
    )
    assert bob.user_id not in {t.user_id for t in fake.tweets.values()}


def test_resolving_an_unknown_handle_fails_before_the_action(fake: FakeMurmur) -> None:
    result = run(fake, "post", "ghost", "boo")
    assert result.exit_code == 1
    assert result.stderr == "error: NOT_FOUND: user @ghost\n"
    assert fake.calls["PostTweet"] == 0


def test_unreachable_target_is_unavailable() -> None:
    result = CliRunner().invoke(cli, ["--target", "127.0.0.1:1", "--timeout", "2", "ping"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAVAILABLE: ")


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_tls_ca_that_is_not_a_file_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    """As in murmur-admin: checked before connecting, exit 2, naming the option."""
    path = tmp_path / "absent.pem" if kind == "missing" else tmp_path
    result = CliRunner().invoke(cli, ["--tls-ca", str(path), "ping"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--tls-ca'" in result.stderr
    assert str(path) in result.stderr


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_an_unreadable_tls_ca_is_an_error_naming_the_file() -> None:
    """A file that exists but cannot be read (even as root): ``error: ...``, exit 1."""
    result = CliRunner().invoke(cli, ["--tls-ca", "/proc/self/mem", "ping"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error: cannot read the --tls-ca file /proc/self/mem: ")
    assert result.stderr.count("\n") == 1


# Undecodable bytes on a POSIX command line reach Python as lone surrogates (PEP 383).
BAD = "al\udcffice"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["user", "show", BAD], "'HANDLE|ID'"),
        (["user", "create", BAD], "'HANDLE'"),
        (["user", "create", "alice", "--name", BAD], "'--name'"),
        (["user", "create", "alice", "--bio", BAD], "'--bio'"),
        (["follow", "alice", BAD], "'WHOM'"),
        (["post", "alice", BAD], "'TEXT'"),
        (["post", "alice", "hi", "--request-id", BAD], "'--request-id'"),
        (["tweet", "edit", "alice", "5000", BAD], "'TEXT'"),
        (["timeline", BAD], "'USER'"),
        (["--target", BAD, "ping"], "'--target'"),
    ],
)
def test_text_that_is_not_utf8_is_a_usage_error(
    fake: FakeMurmur, args: list[str], named: str
) -> None:
    """Exit 2 naming the argument and showing the bad byte, not a UnicodeEncodeError."""
    result = run(fake, *args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"Invalid value for {named}" in result.stderr
    assert "'al\\xffice' is not valid UTF-8 (byte 0xff at position 2)" in result.stderr
    assert sum(fake.calls.values()) == 0


def test_a_target_from_the_environment_that_is_not_utf8_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["ping"], env={"MURMUR_TARGET": "h\udcff:1"})
    assert result.exit_code == 2, result.output
    assert "'--target' (env var: 'MURMUR_TARGET')" in result.stderr


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            UnicodeEncodeError("utf-8", "h\udcff", 1, 2, "surrogates not allowed"),
            2,
            "Error: an argument or environment variable is not valid UTF-8 "
            "(at position 1 of 'h\\xff')",
        ),
        (
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
            1,
            "error: text could not be encoded or decoded: invalid start byte",
        ),
    ],
)
def test_a_stray_unicode_error_is_a_message_not_a_traceback(
    fake: FakeMurmur,
    monkeypatch: pytest.MonkeyPatch,
    error: UnicodeError,
    code: int,
    message: str,
) -> None:
    """The group's backstop, for text that did not pass through a checked parameter."""

    def broken_ping(self: MurmurClient, user_id: int = 0) -> Any:
        raise error

    monkeypatch.setattr(MurmurClient, "ping", broken_ping)
    result = run(fake, "ping")
    assert result.exit_code == code
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.strip().endswith(message)


@pytest.mark.parametrize(
    "args",
    [
        ["tweet", "show", "abc"],
        ["tweet", "show", "0"],
        ["user", "show", "@"],
        ["timeline", "alice", "--limit", "0"],
        ["home", "alice", "--before", "x"],
        ["follow", "alice"],
        ["user", "show", str(1 << 64)],
        ["user", "show", "0"],
        ["user", "show", "000"],
        ["user", "show", "--", "-5"],
        ["follow", "0", "alice"],
        ["unfollow", "alice", "0"],
        ["--timeout", "inf", "ping"],
        ["--timeout", "nan", "ping"],
        ["--timeout", "1e10", "ping"],
        ["--timeout", "0", "ping"],
        ["nope"],
    ],
)
def test_usage_errors_exit_2_without_calling(fake: FakeMurmur, args: list[str]) -> None:
    result = run(fake, *args)
    assert result.exit_code == 2, result.output
    assert sum(fake.calls.values()) == 0


# -- table rendering -----------------------------------------------------------------


def test_render_table_aligns_and_right_aligns_numbers() -> None:
    text = render_table(("id", "name", "text"), [(7, "a", "x"), (1234, "日本", "long\ttext")], {0})
    assert text.splitlines() == [
        "  id  name  text",
        "   7  a     x",
        "1234  日本  long text",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "show", "-5"], "-5 is not an option, nor an id (no id is negative)"),
        (["tweet", "show", "-7"], "-7 is not an option, nor an id"),
        (["tweet", "show", str(1 << 63)], f"is not in the range 1<=x<={(1 << 63) - 1}"),
        (["user", "show", str(1 << 63)], f"too large for a user id (1 to {(1 << 63) - 1})"),
        (
            ["tweet", "show", "abc"],
            f"'abc' is not a tweet id (a whole number 1 to {(1 << 63) - 1})",
        ),
        (["timeline", "alice", "--before", "1e5"], "'1e5' is not a tweet id"),
    ],
)
def test_ids_out_of_range_are_usage_errors_naming_the_range(
    fake: FakeMurmur, args: list[str], message: str
) -> None:
    """Negative ids used to read as unknown options ("No such option '-5'"),
    and ids past 2^63-1 reached the server as INVALID_ARGUMENT (exit 1)."""
    result = run(fake, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("", "the address is empty"),
        ("a b:1", "white"),
        (":52051", "':52051' names no host; give HOST:PORT (localhost:52051, say)"),
        (":", "':' names no host and no port; give HOST:PORT"),
    ],
)
def test_an_unusable_target_is_a_usage_error(target: str, message: str) -> None:
    """An empty one used to reach gRPC's resolver, which logged to stderr."""
    result = CliRunner().invoke(cli, ["--target", target, "ping"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--target'" in result.stderr and message in result.stderr

"""Every public RPC with random and adversarial fields, against the real router
servicer over an in-process cluster (real shard servicers and LevelDBs).

Each answer is checked by ``tests/fuzz/oracle.py``: success or exactly the
predicted status code, a message that names the offending field or the
missing thing and leaks no internals, and no change to any shard's store
after a refused request or a read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from murmur.errors import ServiceError
from murmur.page_tokens import TokenKind
from murmur.v1 import murmur_pb2 as pb
from tests.fuzz.oracle import (
    INVALID,
    LISTINGS,
    NOT_FOUND,
    RPCS,
    Code,
    effective_page,
    exercise,
)
from tests.fuzz.support import (
    EDGE_IDS,
    FUZZ,
    I32_MAX,
    I32_MIN,
    I64_MAX,
    U64_MAX,
    encode_raw_token,
    examples,
    make_legacy_token,
    make_token,
    token_bytes,
)
from tests.fuzz.world import World
from tests.timeline.memory_cluster import MemoryCluster


class Big(str):
    """A long string with a short repr, so failure reports stay readable."""

    def __repr__(self) -> str:
        return f"<{len(self)} chars: {str.__repr__(self[:12])}...>"


MB = Big("x" * (1 << 20))

# adversarial values ----------------------------------------------------------------
HANDLE_CASES = [
    "",
    "a",
    "a" * 15,
    "a" * 16,
    "A" * 64,
    "al\x00ice",
    "bell\x07",
    "tab\tx",
    "new\nline",
    "alice\n",
    "zw\u200bsp",
    "\u200djoiner",
    "\ufeffbom",
    "ålice",
    "bébé",
    "ＡＢＣ",  # fullwidth letters
    "\u212aelvin",  # KELVIN SIGN lower-cases to ASCII k
    "dotless\u0131",
    "a b",
    "a-b",
    "@alice",
    "ALICE",
    "Bob",
    "\U0001f600",
    MB,
]
SHORT_TEXT_CASES = [
    "",
    "x" * 50,
    "x" * 51,
    "x" * 160,
    "x" * 161,
    "e\u0301" * 50,  # 100 code points, 50 after NFC
    "e\u0301" * 51,
    "\x00",
    "esc\x1bape",
    "tab\tand\nnewline",
    "cr\r",
    "\u200b" * 10,
    "\u0958" * 26,  # 26 code points, 52 after NFC (it decomposes)
    MB,
]
TEXT_CASES = [
    "",
    " ",
    "\t\n ",
    "\u3000\u2003\u00a0",
    "\u200b",
    "\u200d\ufeff",
    "a\x00b",
    "\x00",
    "\x7f",
    "ok\r\n",
    "\x85",
    "e\u0301" * 280,
    "e\u0301" * 281,
    "x" * 280,
    "x" * 281,
    "\U0001d160" * 94,  # 94 code points, 282 after NFC
    "\u0958" * 140,  # 280 after NFC
    "\u0958" * 141,  # 282 after NFC
    "\U0001f642" * 280,
    "\U0001f642" * 281,
    "hello",
    MB,
]
REQUEST_ID_CASES = ["", "r", "x" * 64, "x" * 65, "\x00", "seed-bob-0", "seed-dave-0", "é" * 65]
PAGE_SIZES = [I32_MIN, -1, 0, 1, 2, 20, 199, 200, 201, I32_MAX]
KINDS = [int(kind) for kind in TokenKind]


# strategies --------------------------------------------------------------------------
# Strategies must not read the model while drawing (its contents change as
# examples run), so existing users, handles and tweets are drawn as ``Ref``s
# and resolved against the model just before the call.
@dataclass(frozen=True)
class Ref:
    what: str  # "user", "handle", "tweet" or "deleted"
    index: int

    def resolve(self, world: World) -> Any:
        if self.what == "handle":
            return sorted(world.users.values())[self.index % len(world.users)].swapcase()
        pool = {
            "user": sorted(world.users),
            "tweet": sorted(world.tweets),
            "deleted": sorted(world.deleted),
        }[self.what]
        return pool[self.index % len(pool)] if pool else I64_MAX


def resolve(world: World, message: type, fields: dict[str, Any]) -> Any:
    return message(**{k: v.resolve(world) if isinstance(v, Ref) else v for k, v in fields.items()})


def refs(what: str) -> st.SearchStrategy[Ref]:
    return st.integers(0, 1 << 16).map(lambda i: Ref(what, i))


def user_ids() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(EDGE_IDS),
        st.integers(1, U64_MAX),
        st.integers(1, I64_MAX),
        refs("user"),
        refs("user"),
    )


def tweet_ids() -> st.SearchStrategy[Any]:
    forged = st.builds(  # well-formed ids (time | slot | sequence) that were never minted
        lambda ms, slot, seq: (ms << 22) | (slot << 10) | seq,
        st.integers(0, (1 << 41) - 1),
        st.integers(0, 4095),
        st.integers(0, 1023),
    )
    return st.one_of(
        st.sampled_from(EDGE_IDS),
        st.integers(1, U64_MAX),
        forged,
        refs("tweet"),
        refs("tweet"),
        refs("deleted"),
    )


def handles() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(HANDLE_CASES),
        st.from_regex(r"[A-Za-z0-9_]{1,15}", fullmatch=True),
        st.text(max_size=20),
        refs("handle"),
    )


def short_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just(""),
        st.sampled_from(SHORT_TEXT_CASES),
        st.text(max_size=60),
        st.text(st.characters(categories=["Cc", "Cf", "Zs", "Mn"]), max_size=60),
    )


def tweet_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(TEXT_CASES),
        st.text(min_size=1, max_size=300),
        st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Mn", "Lo"]), max_size=300),
        st.integers(270, 290).map(lambda n: "e\u0301" * n),
        st.integers(275, 285).map(lambda n: "\U0001f642" * n),
    )


def request_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(REQUEST_ID_CASES), st.text(max_size=70))


def page_sizes() -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from(PAGE_SIZES), st.integers(0, 300), st.integers(I32_MIN, I32_MAX)
    )


def _flip_bit(token: str, bit: int) -> str:
    raw = bytearray(token_bytes(token) or b"")
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return encode_raw_token(bytes(raw))


def page_tokens(world: World, kind: int) -> st.SearchStrategy[str]:
    """``world.tokens`` is fixed once the world is seeded, so drawing from it is stable."""
    valid = world.tokens[kind]
    others = [t for k, tokens in world.tokens.items() if k != kind for t in tokens]
    mine = st.sampled_from(valid)
    owners = st.one_of(
        st.sampled_from([world.id_of("alice"), world.id_of("bob"), 0, U64_MAX]),
        st.integers(0, U64_MAX),
    )
    cursors = st.one_of(st.sampled_from([0, 1, I64_MAX, U64_MAX]), st.integers(0, U64_MAX))
    return st.one_of(
        st.just(""),
        mine,
        st.just(""),
        mine,
        st.sampled_from(others),
        st.tuples(mine, st.integers(1, 18)).map(lambda p: p[0][: -p[1]]),  # truncated
        st.tuples(mine, st.integers(0, 22 * 8 - 1)).map(lambda p: _flip_bit(*p)),
        st.tuples(mine, st.integers(0, 29), st.sampled_from("A_-=/+.!")).map(
            lambda p: p[0][: p[1]] + p[2] + p[0][p[1] + 1 :]
        ),
        st.binary(max_size=40).map(encode_raw_token),
        st.binary(min_size=14, max_size=14).map(encode_raw_token),
        st.binary(min_size=22, max_size=22).map(encode_raw_token),
        st.tuples(st.sampled_from([*KINDS, 0, 255]), owners, cursors).map(lambda p: make_token(*p)),
        st.tuples(st.sampled_from([*KINDS, 0, 255]), cursors).map(lambda p: make_legacy_token(*p)),
        st.tuples(owners, cursors).map(lambda p: make_token(kind, *p, version=3)),
        st.text(max_size=40),
        st.sampled_from([Big("A" * (1 << 20)), valid[0] + "=", " " + valid[0], valid[0] + "\x00"]),
    )


def requests(world: World, method: str) -> st.SearchStrategy[tuple[type, dict[str, Any]]]:
    """(message class, fields) for ``method``; fields may hold ``Ref``s."""
    message = getattr(pb, f"{method}Request")
    uid = user_ids()

    def fields(**strategies: st.SearchStrategy) -> st.SearchStrategy:
        return st.fixed_dictionaries(strategies).map(lambda f: (message, f))

    if method == "CreateUser":
        return fields(handle=handles(), display_name=short_texts(), bio=short_texts())
    if method == "GetUser":
        return st.one_of(fields(), fields(user_id=uid), fields(handle=handles()))
    if method == "UpdateUser":
        return st.one_of(
            fields(user_id=uid),
            fields(user_id=uid, display_name=short_texts()),
            fields(user_id=uid, bio=short_texts()),
            fields(user_id=uid, display_name=short_texts(), bio=short_texts()),
        )
    if method in ("Follow", "Unfollow"):
        same = uid.map(lambda i: (message, {"follower_id": i, "followee_id": i}))
        pair = fields(follower_id=uid, followee_id=uid)
        return st.one_of(pair, pair, same)
    if method in LISTINGS:
        token = page_tokens(world, int(LISTINGS[method]))
        return fields(user_id=uid, page_size=page_sizes(), page_token=token)
    if method == "PostTweet":
        return fields(user_id=uid, text=tweet_texts(), request_id=request_ids())
    if method == "GetTweet":
        return fields(tweet_id=tweet_ids())
    if method == "EditTweet":
        return fields(tweet_id=tweet_ids(), user_id=uid, text=tweet_texts())
    if method == "DeleteTweet":
        return fields(tweet_id=tweet_ids(), user_id=uid)
    if method == "Ping":
        return fields(user_id=uid)
    raise AssertionError(method)


# 1. every RPC, random and adversarial fields -------------------------------------------
@pytest.mark.parametrize("method", RPCS)
@settings(FUZZ, max_examples=examples(60))
@given(data=st.data())
def test_every_rpc_answers_precisely_and_refusals_change_nothing(world, method, data):
    message, fields = data.draw(requests(world, method), label="request")
    result = exercise(world, method, resolve(world, message, fields))
    event(result.code.name if isinstance(result, ServiceError) else "OK")


# 2. the specific cases of the issue, spelled out ----------------------------------------
Build = Callable[[World], Any]


def case(name: str, method: str, build: Build, codes: Any, needle: str | None = None):
    """``codes``: the status code (None: success) or a set of acceptable ones;
    ``needle``: text the error message must contain."""
    return pytest.param(method, build, codes, needle, id=name)


def alice(w: World) -> int:
    return w.id_of("alice")


def bob_tweet(w: World) -> int:
    return min(t for t, author in w.tweets.items() if author == w.id_of("bob"))


def create(handle: str | None = None, **fields: str) -> Build:
    """CreateUser with ``handle``, or with a fresh valid one when None."""
    return lambda w: pb.CreateUserRequest(
        handle=w.fresh_handle() if handle is None else handle, **fields
    )


def post(text: str, request_id: str = "") -> Build:
    return lambda w: pb.PostTweetRequest(user_id=alice(w), text=text, request_id=request_id)


HANDLE_REFUSALS = {
    "control-nul": "al\x00ice",
    "control-bell": "bell\x07",
    "control-newline": "alice\n",
    "zero-width-space": "ali\u200bce",
    "zero-width-joiner": "\u200dalice",
    "byte-order-mark": "\ufeffalice",
    "non-ascii-letter": "ålice",
    "fullwidth": "ＡＢＣ",
    "kelvin-sign": "\u212aelvin",
    "sixteen-chars": "a" * 16,
    "empty": "",
    "megabyte": MB,
}
TEXT_REFUSALS = {
    "281-after-nfc": ("e\u0301" * 281, "281"),
    "281-plain": ("x" * 281, "281"),
    "282-after-nfc-from-94": ("\U0001d160" * 94, "282"),
    "whitespace-only": (" \t\n\u3000\u00a0", "white space"),
    "empty": ("", "text"),
    "nul": ("a\x00b", "U+0000"),
    "escape": ("\x1b[31mred", "U+001B"),
    "megabyte": (MB, "1048576"),
}
CASES = [
    *(
        case(f"handle-{name}", "CreateUser", create(handle), INVALID, "handle")
        for name, handle in HANDLE_REFUSALS.items()
    ),
    case("handle-15-chars", "CreateUser", lambda w: create(w.fresh_handle(15))(w), None),
    case("handle-taken-other-case", "CreateUser", create("ALICE"), Code.ALREADY_EXISTS, "ALICE"),
    case("display-name-51", "CreateUser", create(display_name="x" * 51), INVALID, "display_name"),
    case("display-name-50", "CreateUser", create(display_name="x" * 50), None),
    case("display-name-50-nfc", "CreateUser", create(display_name="e\u0301" * 50), None),
    case("display-name-51-nfc", "CreateUser", create(display_name="e\u0301" * 51), INVALID, "51"),
    case("display-name-nul", "CreateUser", create(display_name="a\x00"), INVALID, "display_name"),
    case("bio-161", "CreateUser", create(bio="x" * 161), INVALID, "bio"),
    case("bio-megabyte", "CreateUser", create(bio=MB), INVALID, "bio"),
    case("text-280-after-nfc", "PostTweet", post("e\u0301" * 280), None),
    case("text-280-emoji", "PostTweet", post("\U0001f642" * 280), None),
    case("text-280-after-decomposing-nfc", "PostTweet", post("\u0958" * 140), None),
    *(
        case(f"text-{name}", "PostTweet", post(text), INVALID, needle)
        for name, (text, needle) in TEXT_REFUSALS.items()
    ),
    case(
        "edit-text-281",
        "EditTweet",
        lambda w: pb.EditTweetRequest(
            tweet_id=bob_tweet(w), user_id=w.id_of("bob"), text="x" * 281
        ),
        INVALID,
        "text",
    ),
    case("request-id-65", "PostTweet", post("hi", "r" * 65), INVALID, "request_id"),
    case(
        "request-id-of-deleted-tweet",
        "PostTweet",
        lambda w: pb.PostTweetRequest(
            user_id=w.id_of("dave"), text="dave 0", request_id="seed-dave-0"
        ),
        NOT_FOUND,
        "seed-dave-0",
    ),
    case(
        "request-id-retry",
        "PostTweet",
        lambda w: pb.PostTweetRequest(
            user_id=w.id_of("bob"), text="bob 0", request_id="seed-bob-0"
        ),
        None,
    ),
    case(
        "request-id-reused-for-another-text",
        "PostTweet",
        lambda w: pb.PostTweetRequest(
            user_id=w.id_of("bob"), text="other text", request_id="seed-bob-0"
        ),
        INVALID,
        "request_id",
    ),
    case("get-user-0", "GetUser", lambda w: pb.GetUserRequest(user_id=0), INVALID, "user_id"),
    case("get-user-none", "GetUser", lambda w: pb.GetUserRequest(), INVALID, "user_id"),
    case(
        "get-user-handle-empty",
        "GetUser",
        lambda w: pb.GetUserRequest(handle=""),
        INVALID,
        "handle",
    ),
    case(
        "get-user-handle-missing",
        "GetUser",
        lambda w: pb.GetUserRequest(handle="nobody_here"),
        NOT_FOUND,
        "nobody_here",
    ),
    case("get-user-handle-case", "GetUser", lambda w: pb.GetUserRequest(handle="ALICE"), None),
    *(
        case(
            f"get-user-{uid}",
            "GetUser",
            lambda w, uid=uid: pb.GetUserRequest(user_id=uid),
            NOT_FOUND if uid <= I64_MAX else {NOT_FOUND, INVALID},
            str(uid),
        )
        for uid in (1, 2, I64_MAX, U64_MAX)
    ),
    case("get-tweet-0", "GetTweet", lambda w: pb.GetTweetRequest(tweet_id=0), INVALID, "tweet_id"),
    *(
        case(
            f"get-tweet-{tid}",
            "GetTweet",
            lambda w, tid=tid: pb.GetTweetRequest(tweet_id=tid),
            NOT_FOUND if tid <= I64_MAX else {NOT_FOUND, INVALID},
            str(tid),
        )
        for tid in (1, 2, I64_MAX, U64_MAX)
    ),
    case(
        "follow-missing-followee",
        "Follow",
        lambda w: pb.FollowRequest(follower_id=alice(w), followee_id=w.missing_user()),
        NOT_FOUND,
        "7777777777",
    ),
    case(
        "follow-missing-follower",
        "Follow",
        lambda w: pb.FollowRequest(follower_id=w.missing_user(), followee_id=alice(w)),
        NOT_FOUND,
        "7777777777",
    ),
    case(
        "follow-uint64-max",
        "Follow",
        lambda w: pb.FollowRequest(follower_id=alice(w), followee_id=U64_MAX),
        {NOT_FOUND, INVALID},
        str(U64_MAX),
    ),
    case(
        "follow-self",
        "Follow",
        lambda w: pb.FollowRequest(follower_id=alice(w), followee_id=alice(w)),
        INVALID,
        "yourself",
    ),
    case(
        "follow-zero",
        "Follow",
        lambda w: pb.FollowRequest(followee_id=alice(w)),
        INVALID,
        "follower_id",
    ),
    case(
        "unfollow-missing-follower",
        "Unfollow",
        lambda w: pb.UnfollowRequest(follower_id=w.missing_user(), followee_id=alice(w)),
        NOT_FOUND,
        "7777777777",
    ),
    case(
        "unfollow-missing-followee-is-noop",
        "Unfollow",
        lambda w: pb.UnfollowRequest(follower_id=alice(w), followee_id=w.missing_user()),
        None,
    ),
    case(
        "post-missing-user",
        "PostTweet",
        lambda w: pb.PostTweetRequest(user_id=w.missing_user(), text="hi"),
        NOT_FOUND,
        "7777777777",
    ),
    case(
        "edit-not-author",
        "EditTweet",
        lambda w: pb.EditTweetRequest(tweet_id=bob_tweet(w), user_id=alice(w), text="mine now"),
        Code.PERMISSION_DENIED,
    ),
    case(
        "delete-not-author",
        "DeleteTweet",
        lambda w: pb.DeleteTweetRequest(tweet_id=bob_tweet(w), user_id=alice(w)),
        Code.PERMISSION_DENIED,
    ),
    case(
        "delete-missing-tweet",
        "DeleteTweet",
        lambda w: pb.DeleteTweetRequest(tweet_id=I64_MAX, user_id=alice(w)),
        NOT_FOUND,
        str(I64_MAX),
    ),
    case(
        "edit-deleted-tweet",
        "EditTweet",
        lambda w: pb.EditTweetRequest(
            tweet_id=min(w.deleted), user_id=w.id_of("dave"), text="back"
        ),
        NOT_FOUND,
    ),
    case("ping-uint64-max", "Ping", lambda w: pb.PingRequest(user_id=U64_MAX), None),
]


@pytest.mark.parametrize(("method", "build", "codes", "needle"), CASES)
def test_issue_cases(world, method, build, codes, needle):
    request = build(world)
    result = exercise(world, method, request)
    if codes is None:
        assert not isinstance(result, ServiceError)
        if method == "PostTweet":
            assert len(result.text) <= 280
        if method == "CreateUser" and request.display_name:
            assert len(result.display_name) <= 50
        return
    assert isinstance(result, ServiceError), f"{method} succeeded; expected {codes}"
    allowed = codes if isinstance(codes, set) else {codes}
    assert result.code in allowed, f"{result.code.name}: {result.message}"
    if needle is not None:
        assert needle in result.message, f"{needle!r} not in {result.message!r}"


def test_nfc_composed_text_is_stored_composed(world):
    tweet = exercise(world, "PostTweet", post("e\u0301" * 280)(world))
    assert tweet.text == "\u00e9" * 280
    again = world.ok("GetTweet", pb.GetTweetRequest(tweet_id=tweet.tweet_id))
    assert again.text == "\u00e9" * 280


# 3. page sizes and page tokens on every listing -------------------------------------------
LISTING_OWNER = {
    "ListFollowers": "bob",
    "ListFollowing": "alice",
    "GetUserTimeline": "bob",
    "GetHomeTimeline": "alice",
}


def listing(world: World, method: str, **fields: Any) -> Any:
    message = getattr(pb, f"{method}Request")
    return message(user_id=world.id_of(LISTING_OWNER[method]), **fields)


@pytest.mark.parametrize("method", list(LISTINGS))
@pytest.mark.parametrize("size", [I32_MIN, -1, 0, 1, 201, I32_MAX])
def test_page_sizes(world, method, size):
    result = exercise(world, method, listing(world, method, page_size=size))
    if size < 0:
        assert isinstance(result, ServiceError) and result.code == INVALID
        assert "page_size" in result.message and str(size) in result.message
    else:
        items = result.users if method.startswith("List") else result.tweets
        assert len(items) <= effective_page(size)


def bad_tokens(world: World, method: str) -> dict[str, str]:
    kind = int(LISTINGS[method])
    owner = world.id_of(LISTING_OWNER[method])
    stranger = world.id_of("dave")
    valid = world.tokens[kind][0]
    other = next(t for k, tokens in world.tokens.items() if k != kind for t in tokens)
    raw = token_bytes(valid) or b""
    return {
        "random-string": "not a token",
        "random-base64": encode_raw_token(b"\x8f\x01\xfe\x00\x13\x37" * 3),
        "right-length-bad-checksum": encode_raw_token(bytes(range(22))),
        "legacy-length-bad-checksum": encode_raw_token(bytes(range(14))),
        "truncated-by-one": valid[:-1],
        "truncated-half": valid[: len(valid) // 2],
        "other-listing": other,
        "other-user": make_token(kind, stranger, 12345),
        "legacy-other-listing": make_legacy_token(kind % len(KINDS) + 1, 12345),
        "flipped-owner-bit": _flip_bit(valid, 5 * 8),
        "flipped-cursor-bit": _flip_bit(valid, 13 * 8),
        "flipped-checksum-bit": _flip_bit(valid, 19 * 8),
        "extended": encode_raw_token(raw + b"\x00"),
        "version-3": make_token(kind, owner, 12345, version=3),
        "non-ascii": valid[:5] + "é" + valid[6:],
        "nul": "\x00" * 19,
        "megabyte": "A" * (1 << 20),
    }


@pytest.mark.parametrize("method", list(LISTINGS))
def test_page_tokens(world, method):
    kind = int(LISTINGS[method])
    owner = world.id_of(LISTING_OWNER[method])
    for name, token in bad_tokens(world, method).items():
        result = exercise(world, method, listing(world, method, page_token=token))
        assert isinstance(result, ServiceError), f"{name}: a bad page_token was accepted"
        assert result.code == INVALID and "page_token" in result.message, (name, result.message)
    for token in world.tokens[kind]:
        assert not isinstance(
            exercise(world, method, listing(world, method, page_token=token)), ServiceError
        )
    for cursor in (0, 1, I64_MAX, U64_MAX - 1, U64_MAX):  # forged, but with a good checksum
        for forged in (make_token(kind, owner, cursor), make_legacy_token(kind, cursor)):
            result = exercise(world, method, listing(world, method, page_token=forged))
            assert not isinstance(result, ServiceError), (cursor, result)


# 4. counters equal the real counts after any sequence of operations ------------------------
TEXTS = ["hi", "e\u0301" * 280, "x" * 281, " ", "a\x00", ""]
OPERATIONS = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["", "x" * 16, "u0", "U1", "fresh", "z\u200b"])),
    st.tuples(st.just("follow"), st.integers(-1, 5), st.integers(-1, 5)),
    st.tuples(st.just("follow"), st.integers(-1, 5), st.integers(-1, 5)),
    st.tuples(st.just("unfollow"), st.integers(-1, 5), st.integers(-1, 5)),
    st.tuples(
        st.just("post"), st.integers(-1, 5), st.sampled_from(TEXTS), st.sampled_from(["", "a"])
    ),
    st.tuples(st.just("edit"), st.integers(-1, 20), st.integers(-1, 5), st.sampled_from(TEXTS)),
    st.tuples(st.just("delete"), st.integers(-1, 20), st.integers(-1, 5)),
    st.tuples(st.just("settle")),
)


def _operation(world: World, op: tuple) -> tuple[str, Any]:
    users = sorted(world.users)
    tweets = sorted(world.tweets | dict.fromkeys(world.deleted, 0))

    def user(i: int) -> int:
        return world.missing_user() if i < 0 else users[i % len(users)]

    def tweet(i: int) -> int:
        return I64_MAX if i < 0 or not tweets else tweets[i % len(tweets)]

    kind = op[0]
    if kind == "create":
        handle = world.fresh_handle() if op[1] == "fresh" else op[1]
        return "CreateUser", pb.CreateUserRequest(handle=handle)
    if kind in ("follow", "unfollow"):
        message = pb.FollowRequest if kind == "follow" else pb.UnfollowRequest
        return kind.capitalize(), message(follower_id=user(op[1]), followee_id=user(op[2]))
    if kind == "post":
        return "PostTweet", pb.PostTweetRequest(user_id=user(op[1]), text=op[2], request_id=op[3])
    if kind == "edit":
        return "EditTweet", pb.EditTweetRequest(
            tweet_id=tweet(op[1]), user_id=user(op[2]), text=op[3]
        )
    return "DeleteTweet", pb.DeleteTweetRequest(tweet_id=tweet(op[1]), user_id=user(op[2]))


def _all(world: World, method: str, user_id: int) -> list[int]:
    message, ids, token = getattr(pb, f"{method}Request"), [], None
    while token != "":
        page = world.ok(method, message(user_id=user_id, page_size=200, page_token=token or ""))
        items = page.users if method.startswith("List") else page.tweets
        ids += [item.user_id if method.startswith("List") else item.tweet_id for item in items]
        token = page.next_page_token
    return ids


def check_counters(world: World) -> None:
    world.settle()
    assert world.cluster.backlog() == 0
    for uid in world.users:
        user = world.ok("GetUser", pb.GetUserRequest(user_id=uid))
        followers = {a for a, b in world.following if b == uid}
        following = {b for a, b in world.following if a == uid}
        own = {t for t, author in world.tweets.items() if author == uid}
        assert set(_all(world, "ListFollowers", uid)) == followers
        assert set(_all(world, "ListFollowing", uid)) == following
        assert set(_all(world, "GetUserTimeline", uid)) == own
        counted = (user.follower_count, user.following_count, user.tweet_count)
        assert counted == (len(followers), len(following), len(own)), f"user {uid}"
        home = sorted(
            (t for t, a in world.tweets.items() if a == uid or a in following), reverse=True
        )
        assert _all(world, "GetHomeTimeline", uid) == home, f"home timeline of {uid}"


@settings(FUZZ, max_examples=examples(30))
@given(ops=st.lists(OPERATIONS, min_size=1, max_size=30))
def test_counters_equal_real_counts_after_any_operations(fuzz_loop, ops):
    with tempfile.TemporaryDirectory(prefix="murmur-fuzz-") as root:
        cluster = MemoryCluster(Path(root), shards=2, celebrity_threshold=3, inbox_cap=4)
        try:
            world = World(cluster, fuzz_loop).add_users(("u0", "u1", "u2", "u3"))
            for op in ops:
                if op[0] == "settle":
                    world.settle()
                else:
                    exercise(world, *_operation(world, op))
            check_counters(world)
        finally:
            cluster.close()

"""Predicts the exact answer of the public API to any request, from the
documented rules and the model of what the cluster holds, and checks the
router's real answer against it: the status code, that the message names the
offending field (or the missing thing), that no internals leak, and that a
refused request (or any read) leaves every shard's LevelDB unchanged.

The rules are restated here from the README and the proto rather than
imported from ``murmur.validation``, so the two can disagree.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import grpc

from murmur.errors import ServiceError
from murmur.page_tokens import TokenKind
from tests.fuzz.support import I64_MAX, message_problems, snapshot, snapshot_diff, token_cursor
from tests.fuzz.world import World

Code = grpc.StatusCode
INVALID = Code.INVALID_ARGUMENT
NOT_FOUND = Code.NOT_FOUND

RPCS = (
    "CreateUser",
    "GetUser",
    "UpdateUser",
    "Follow",
    "Unfollow",
    "ListFollowers",
    "ListFollowing",
    "PostTweet",
    "GetTweet",
    "EditTweet",
    "DeleteTweet",
    "GetUserTimeline",
    "GetHomeTimeline",
    "Ping",
)
WRITES = {
    "CreateUser",
    "UpdateUser",
    "Follow",
    "Unfollow",
    "PostTweet",
    "EditTweet",
    "DeleteTweet",
}
ALLOWED: dict[str, set[Code]] = {
    "CreateUser": {INVALID, Code.ALREADY_EXISTS},
    "GetUser": {INVALID, NOT_FOUND},
    "UpdateUser": {INVALID, NOT_FOUND},
    "Follow": {INVALID, NOT_FOUND},
    "Unfollow": {INVALID, NOT_FOUND},
    "ListFollowers": {INVALID, NOT_FOUND},
    "ListFollowing": {INVALID, NOT_FOUND},
    "PostTweet": {INVALID, NOT_FOUND},
    "GetTweet": {INVALID, NOT_FOUND},
    "EditTweet": {INVALID, NOT_FOUND, Code.PERMISSION_DENIED},
    "DeleteTweet": {INVALID, NOT_FOUND, Code.PERMISSION_DENIED},
    "GetUserTimeline": {INVALID, NOT_FOUND},
    "GetHomeTimeline": {INVALID, NOT_FOUND},
    "Ping": set(),
}
LISTINGS = {
    "ListFollowers": TokenKind.FOLLOWERS,
    "ListFollowing": TokenKind.FOLLOWING,
    "GetUserTimeline": TokenKind.USER_TIMELINE,
    "GetHomeTimeline": TokenKind.HOME_TIMELINE,
}

# the documented rules ----------------------------------------------------------
HANDLE_CHARS = frozenset(string.ascii_letters + string.digits + "_")
MAX_HANDLE, MAX_DISPLAY_NAME, MAX_BIO, MAX_TEXT, MAX_REQUEST_ID = 15, 50, 160, 280, 64
DEFAULT_PAGE, MAX_PAGE = 20, 200


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def bad_handle(handle: str) -> bool:
    return not (1 <= len(handle) <= MAX_HANDLE and set(handle) <= HANDLE_CHARS)


def has_control(text: str) -> bool:
    """C0/C1 controls other than newline and tab are refused in free text."""
    return any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text)


def bad_short_text(text: str, limit: int) -> bool:
    normal = nfc(text)
    return len(normal) > limit or has_control(normal)


BLANK = frozenset("\u115f\u1160\u2800\u3164\uffa0")  # draw nothing, yet letters/symbols


def shows_something(text: str) -> bool:
    """The documented rule: one character that is not white space, a
    control or format character, a combining mark or a blank filler."""
    hidden = {"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"}
    return any(
        not c.isspace() and c not in BLANK and unicodedata.category(c) not in hidden for c in text
    )


def bad_tweet_text(text: str) -> bool:
    normal = nfc(text)
    return len(normal) > MAX_TEXT or has_control(normal) or not shows_something(normal)


def effective_page(page_size: int) -> int:
    return DEFAULT_PAGE if page_size == 0 else min(page_size, MAX_PAGE)


# predictions ---------------------------------------------------------------------
@dataclass
class Expect:
    """What a correct router answers.

    ``invalid``: fields that break a rule; INVALID_ARGUMENT must name one.
    ``maybe``: fields the router may refuse as INVALID_ARGUMENT or pass on
    (ids above 2**63-1, which no user or tweet can have).
    Otherwise ``code`` (None: success), whose message names one of ``names``.
    ``changes``: a success must change the store (a new write, not a no-op).
    """

    invalid: list[str] = field(default_factory=list)
    maybe: list[str] = field(default_factory=list)
    code: Code | None = None
    names: tuple[str, ...] = ()
    changes: bool = False


def _id(name: str, value: int, expect: Expect) -> None:
    if value == 0:
        expect.invalid.append(name)
    elif value > I64_MAX:
        expect.maybe.append(name)


def _listing(world: World, method: str, request: Any, expect: Expect) -> None:
    _id("user_id", request.user_id, expect)
    if request.page_size < 0:
        expect.invalid.append("page_size")
    if token_cursor(int(LISTINGS[method]), request.user_id, request.page_token) is None:
        expect.invalid.append("page_token")
    if request.user_id not in world.users:
        expect.code, expect.names = NOT_FOUND, (str(request.user_id),)


PROFILE_FIELDS = (("display_name", MAX_DISPLAY_NAME), ("bio", MAX_BIO))


def _update_user(world: World, request: Any, expect: Expect) -> None:
    _id("user_id", request.user_id, expect)
    given = [name for name, _ in PROFILE_FIELDS if request.HasField(name)]
    if not given:
        expect.invalid += ["display_name", "bio"]
    for name, limit in PROFILE_FIELDS:
        if name in given and bad_short_text(getattr(request, name), limit):
            expect.invalid.append(name)
    if request.user_id not in world.users:
        expect.code, expect.names = NOT_FOUND, (str(request.user_id),)
        return
    held = dict(zip(("display_name", "bio"), world.profiles[request.user_id], strict=True))
    expect.changes = any(nfc(getattr(request, name)) != held[name] for name in given)


def predict(world: World, method: str, request: Any) -> Expect:
    expect = Expect()
    users, tweets = world.users, world.tweets
    if method == "CreateUser":
        if bad_handle(request.handle):
            expect.invalid.append("handle")
        if bad_short_text(request.display_name, MAX_DISPLAY_NAME):
            expect.invalid.append("display_name")
        if bad_short_text(request.bio, MAX_BIO):
            expect.invalid.append("bio")
        if request.handle.lower() in world.by_handle:
            expect.code, expect.names = Code.ALREADY_EXISTS, (request.handle,)
        expect.changes = True
    elif method == "GetUser":
        which = request.WhichOneof("key")
        if which is None:
            expect.invalid += ["user_id", "handle"]
        elif which == "handle":
            if bad_handle(request.handle):
                expect.invalid.append("handle")
            elif request.handle.lower() not in world.by_handle:
                expect.code, expect.names = NOT_FOUND, (request.handle,)
        else:
            _id("user_id", request.user_id, expect)
            if request.user_id not in users:
                expect.code, expect.names = NOT_FOUND, (str(request.user_id),)
    elif method == "UpdateUser":
        _update_user(world, request, expect)
    elif method in ("Follow", "Unfollow"):
        follower, followee = request.follower_id, request.followee_id
        _id("follower_id", follower, expect)
        _id("followee_id", followee, expect)
        if method == "Follow" and follower == followee and follower:
            expect.invalid.append("follower_id")
        if method == "Follow":
            missing = [str(u) for u in (followee, follower) if u not in users]
        else:  # unfollowing somebody you do not follow (or who does not exist) is a no-op
            missing = [str(follower)] if follower not in users else []
        if missing:
            expect.code, expect.names = NOT_FOUND, tuple(missing)
        edge = (follower, followee) in world.following
        expect.changes = not edge if method == "Follow" else edge
    elif method in LISTINGS:
        _listing(world, method, request, expect)
    elif method == "PostTweet":
        author = request.user_id
        _id("user_id", author, expect)
        if bad_tweet_text(request.text):
            expect.invalid.append("text")
        if len(request.request_id) > MAX_REQUEST_ID:
            expect.invalid.append("request_id")
        first = world.requests.get((author, request.request_id)) if request.request_id else None
        if author not in users:
            expect.code, expect.names = NOT_FOUND, (str(author),)
        elif first is not None and first.text != nfc(request.text):  # not a retry
            expect.code, expect.names = INVALID, ("request_id",)
        elif first is not None and first.tweet_id not in tweets:
            expect.code, expect.names = NOT_FOUND, (str(first.tweet_id),)
        expect.changes = first is None
    elif method in ("GetTweet", "EditTweet", "DeleteTweet"):
        tweet_id = request.tweet_id
        _id("tweet_id", tweet_id, expect)
        if method != "GetTweet":
            _id("user_id", request.user_id, expect)
        if method == "EditTweet" and bad_tweet_text(request.text):
            expect.invalid.append("text")
        if tweet_id not in tweets:
            expect.code, expect.names = NOT_FOUND, (str(tweet_id),)
        elif method != "GetTweet" and tweets[tweet_id] != request.user_id:
            expect.code, expect.names = Code.PERMISSION_DENIED, (str(tweet_id),)
        expect.changes = method != "GetTweet"
    elif method != "Ping":
        raise AssertionError(f"no prediction for {method}")
    return expect


# checking ------------------------------------------------------------------------
def describe(method: str, request: Any, limit: int = 300) -> str:
    text = repr(request.SerializeToString()) if request is not None else ""
    shown = str(request).replace("\n", " ")
    if len(shown) > limit:
        shown = shown[:limit] + f"... ({len(text)} bytes serialized)"
    return f"{method}({shown})"


def check_failure(method: str, request: Any, error: ServiceError, expect: Expect) -> None:
    where = describe(method, request)
    code, message = error.code, error.message
    assert code in ALLOWED[method], f"{where} -> {code.name}: {message!r} (not allowed)"
    problems = message_problems(message)
    assert not problems, f"{where} -> {code.name}: message {', '.join(problems)}: {message!r}"
    if expect.invalid or (code == INVALID and expect.maybe):
        fields = expect.invalid + expect.maybe
        assert code == INVALID, f"{where} -> {code.name}: {message!r}; {fields} are invalid"
        assert any(name in message for name in fields), (
            f"{where} -> INVALID_ARGUMENT {message!r} names none of {fields}"
        )
        return
    expected = expect.code.name if expect.code else "success"
    assert code == expect.code, f"{where} -> {code.name}: {message!r}; expected {expected}"
    assert any(name in message for name in expect.names), (
        f"{where} -> {code.name} {message!r} names none of {expect.names}"
    )


def check_success(world: World, method: str, request: Any, response: Any) -> None:
    """What a successful answer must contain; updates the model."""
    where = describe(method, request)
    if method == "CreateUser":
        user = response
        assert (user.handle, user.display_name, user.bio) == (
            request.handle,
            nfc(request.display_name),
            nfc(request.bio),
        ), where
        assert user.user_id > 0 and user.user_id not in world.users, where
        assert (user.follower_count, user.following_count, user.tweet_count) == (0, 0, 0)
        world.created(user)
    elif method == "GetUser":
        wanted = (
            request.user_id
            if request.WhichOneof("key") == "user_id"
            else world.by_handle[request.handle.lower()]
        )
        assert response.user_id == wanted and response.handle == world.users[wanted], where
    elif method == "Follow":
        world.following.add((request.follower_id, request.followee_id))
    elif method == "Unfollow":
        world.following.discard((request.follower_id, request.followee_id))
    elif method in ("ListFollowers", "ListFollowing"):
        ids = [user.user_id for user in response.users]
        cursor = token_cursor(int(LISTINGS[method]), request.user_id, request.page_token) or 0
        assert len(ids) <= effective_page(request.page_size), where
        assert ids == sorted(set(ids)) and all(i > cursor for i in ids), f"{where}: {ids}"
        assert set(ids) <= set(world.users), where
        if method == "ListFollowing":  # the follower's side is written synchronously
            assert all((request.user_id, i) in world.following for i in ids), f"{where}: {ids}"
    elif method in ("GetUserTimeline", "GetHomeTimeline"):
        ids = [tweet.tweet_id for tweet in response.tweets]
        cursor = token_cursor(int(LISTINGS[method]), request.user_id, request.page_token) or 0
        assert len(ids) <= effective_page(request.page_size), where
        assert ids == sorted(set(ids), reverse=True), f"{where}: {ids}"
        assert not cursor or all(i < cursor for i in ids), f"{where}: {ids} after {cursor}"
        if method == "GetUserTimeline":
            assert all(world.tweets.get(i) == request.user_id for i in ids), f"{where}: {ids}"
        else:  # copies of deleted tweets may wait for fan-out
            assert set(ids) <= set(world.tweets) | world.deleted, f"{where}: {ids}"
    elif method == "PostTweet":
        first = world.requests.get((request.user_id, request.request_id))
        if first is not None:
            assert response.tweet_id == first.tweet_id, f"{where}: a retry posted again"
        else:
            assert response.user_id == request.user_id, where
            assert response.text == nfc(request.text), where
            assert response.tweet_id not in world.tweets and response.tweet_id > 0, where
            world.posted(response, request.request_id)
    elif method == "UpdateUser":
        held = dict(zip(("display_name", "bio"), world.profiles[request.user_id], strict=True))
        for name, _ in PROFILE_FIELDS:
            want = nfc(getattr(request, name)) if request.HasField(name) else held[name]
            assert getattr(response, name) == want, where
        assert response.handle == world.users[request.user_id], where
        world.updated(response)
    elif method == "GetTweet":
        assert response.tweet_id == request.tweet_id, where
        assert response.user_id == world.tweets[request.tweet_id], where
    elif method == "EditTweet":
        assert response.tweet_id == request.tweet_id, where
        assert response.text == nfc(request.text) and response.HasField("edited_at"), where
    elif method == "DeleteTweet":
        world.removed(request.tweet_id)
    elif method == "Ping":
        assert response.shard_id in world.cluster.states, where


def exercise(world: World, method: str, request: Any) -> Any:
    """Send ``request`` through the router and check the answer and the store."""
    expect = predict(world, method, request)
    before = snapshot(world.cluster)
    result = world.call(method, request)
    after = snapshot(world.cluster)
    diff = snapshot_diff(before, after)
    where = describe(method, request)
    if isinstance(result, ServiceError):
        check_failure(method, request, result, expect)
        assert not diff, f"{where} was refused ({result.code.name}) but changed {diff}"
        return result
    assert not expect.invalid, f"{where} succeeded although {expect.invalid} are invalid"
    assert expect.code is None, (
        f"{where} succeeded; expected {expect.code.name} naming {expect.names}"
    )
    if method in WRITES and expect.changes:
        assert diff, f"{where} succeeded but wrote nothing"
    else:
        assert not diff, f"{where} is a read or a no-op but changed {diff}"
    check_success(world, method, request, result)
    return result

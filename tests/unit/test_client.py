"""MurmurClient against an in-process fake server.

The fake is a small in-memory ``MurmurServicer`` served by a real
``grpc.server`` on 127.0.0.1, so these tests cover the wire, the status codes
and the channel's retry policy, not just Python calls. ``test_cli.py`` reuses
it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from client import errors
from client.admin_client import AdminClient
from client.client import (
    IDEMPOTENT_METHODS,
    MAX_TIMEOUT_S,
    SERVICE_NAME,
    MurmurClient,
    channel_options,
)
from client.errors import MurmurError, error_from_rpc
from murmur import page_tokens
from murmur.page_tokens import BadPageToken, TokenKind
from murmur.v1 import murmur_pb2 as pb
from murmur.v1 import murmur_pb2_grpc as pb_grpc
from tests.unit.loopback_server import serving

FIRST_USER_ID = 1000
FIRST_TWEET_ID = 5000
BASE_SECONDS = 1_741_064_767  # 2025-03-04T05:06:07Z


class FakeMurmur(pb_grpc.MurmurServicer):
    """Just enough Murmur to test a client: in memory, documented status codes,
    real page tokens, plus knobs to inject failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[int, pb.User] = {}
        self.by_handle: dict[str, int] = {}
        self.follows: set[tuple[int, int]] = set()
        self.tweets: dict[int, pb.Tweet] = {}
        self.request_ids: dict[tuple[int, str], int] = {}
        self.next_user_id = FIRST_USER_ID
        self.next_tweet_id = FIRST_TWEET_ID
        # Observability and failure injection.
        self.calls: Counter[str] = Counter()
        self.requests: defaultdict[str, list[Any]] = defaultdict(list)
        self.metadata: list[dict[str, str]] = []  # each call's invocation metadata
        self.time_left: list[float | None] = []  # each call's deadline, as the server saw it
        self.fail_next: Counter[str] = Counter()  # method -> UNAVAILABLE answers still to give
        self.forced: tuple[grpc.StatusCode, str] | None = None  # every call fails like this
        self.delay = 0.0  # seconds every call sleeps before answering
        self.max_page_size = 200
        self.partial_shards: list[int] = []  # home timeline pages report these missing
        self.stuck_token = False  # ListFollowers keeps returning the token it was given
        self.target = ""

    # -- helpers -------------------------------------------------------------

    def _enter(self, name: str, request: Any, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[name] += 1
            self.requests[name].append(request)
            self.metadata.append(dict(context.invocation_metadata()))
            self.time_left.append(context.time_remaining())
            fail = self.fail_next[name] > 0
            if fail:
                self.fail_next[name] -= 1
        if self.delay:
            time.sleep(self.delay)
        if self.forced is not None:
            context.abort(*self.forced)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "shard 7 did not answer")

    def _user(self, user_id: int, context: grpc.ServicerContext) -> pb.User:
        stored = self.users.get(user_id)
        if stored is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"user {user_id}")
        user = pb.User()
        user.CopyFrom(stored)
        user.follower_count = sum(1 for _, b in self.follows if b == user_id)
        user.following_count = sum(1 for a, _ in self.follows if a == user_id)
        user.tweet_count = sum(1 for t in self.tweets.values() if t.user_id == user_id)
        return user

    def _tweet(self, tweet_id: int, context: grpc.ServicerContext) -> pb.Tweet:
        tweet = self.tweets.get(tweet_id)
        if tweet is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"tweet {tweet_id}")
        return tweet

    def _page_size(self, requested: int, context: grpc.ServicerContext) -> int:
        if requested < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        return min(requested or 20, self.max_page_size)

    def _cursor(self, kind: TokenKind, request: Any, context: grpc.ServicerContext) -> int:
        try:
            return page_tokens.decode(kind, request.user_id, request.page_token)
        except BadPageToken as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises

    @staticmethod
    def _check_text(text: str, context: grpc.ServicerContext) -> None:
        if not text.strip() or len(text) > 280:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text must be 1-280 characters")

    def _list_users(
        self, ids: list[int], kind: TokenKind, request: Any, context: grpc.ServicerContext
    ) -> pb.ListUsersResponse:
        size = self._page_size(request.page_size, context)
        cursor = self._cursor(kind, request, context)
        rest = [i for i in sorted(ids) if i > cursor]
        page = rest[:size]
        token = page_tokens.encode(kind, request.user_id, page[-1]) if len(rest) > size else ""
        if self.stuck_token and request.page_token:
            token = request.page_token
        return pb.ListUsersResponse(
            users=[self._user(i, context) for i in page], next_page_token=token
        )

    def _timeline(
        self, authors: set[int], kind: TokenKind, request: Any, context: grpc.ServicerContext
    ) -> pb.TimelineResponse:
        size = self._page_size(request.page_size, context)
        cursor = self._cursor(kind, request, context)
        ids = sorted(
            (t.tweet_id for t in self.tweets.values() if t.user_id in authors), reverse=True
        )
        rest = [i for i in ids if not cursor or i < cursor]
        page = rest[:size]
        token = page_tokens.encode(kind, request.user_id, page[-1]) if len(rest) > size else ""
        return pb.TimelineResponse(tweets=[self.tweets[i] for i in page], next_page_token=token)

    # -- RPCs ----------------------------------------------------------------

    def CreateUser(self, request: pb.CreateUserRequest, context: Any) -> pb.User:
        self._enter("CreateUser", request, context)
        if not request.handle or len(request.handle) > 15:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "handle must be 1-15 characters")
        with self.lock:
            if request.handle.lower() in self.by_handle:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"handle {request.handle} is taken")
            user_id = self.next_user_id
            self.next_user_id += 1
            self.by_handle[request.handle.lower()] = user_id
            self.users[user_id] = pb.User(
                user_id=user_id,
                handle=request.handle,
                display_name=request.display_name,
                bio=request.bio,
                created_at=Timestamp(seconds=BASE_SECONDS),
            )
        return self._user(user_id, context)

    def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.User:
        self._enter("GetUser", request, context)
        key = request.WhichOneof("key")
        if key is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id or handle is required")
        if key == "handle":
            user_id = self.by_handle.get(request.handle.lower())
            if user_id is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"user @{request.handle}")
            return self._user(user_id, context)
        return self._user(request.user_id, context)

    def Follow(self, request: pb.FollowRequest, context: Any) -> pb.FollowResponse:
        self._enter("Follow", request, context)
        if request.follower_id == request.followee_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a user cannot follow themself")
        self._user(request.follower_id, context)
        self._user(request.followee_id, context)
        self.follows.add((request.follower_id, request.followee_id))
        return pb.FollowResponse()

    def Unfollow(self, request: pb.UnfollowRequest, context: Any) -> pb.UnfollowResponse:
        self._enter("Unfollow", request, context)
        self.follows.discard((request.follower_id, request.followee_id))
        return pb.UnfollowResponse()

    def ListFollowers(self, request: pb.ListFollowersRequest, context: Any) -> Any:
        self._enter("ListFollowers", request, context)
        self._user(request.user_id, context)
        ids = [a for a, b in self.follows if b == request.user_id]
        return self._list_users(ids, TokenKind.FOLLOWERS, request, context)

    def ListFollowing(self, request: pb.ListFollowingRequest, context: Any) -> Any:
        self._enter("ListFollowing", request, context)
        self._user(request.user_id, context)
        ids = [b for a, b in self.follows if a == request.user_id]
        return self._list_users(ids, TokenKind.FOLLOWING, request, context)

    def PostTweet(self, request: pb.PostTweetRequest, context: Any) -> pb.Tweet:
        self._enter("PostTweet", request, context)
        self._user(request.user_id, context)
        self._check_text(request.text, context)
        with self.lock:
            key = (request.user_id, request.request_id)
            if request.request_id and key in self.request_ids:
                return self.tweets[self.request_ids[key]]
            tweet_id = self.next_tweet_id
            self.next_tweet_id += 1
            tweet = pb.Tweet(
                tweet_id=tweet_id,
                user_id=request.user_id,
                text=request.text,
                created_at=Timestamp(seconds=BASE_SECONDS + tweet_id - FIRST_TWEET_ID),
            )
            self.tweets[tweet_id] = tweet
            if request.request_id:
                self.request_ids[key] = tweet_id
        return tweet

    def GetTweet(self, request: pb.GetTweetRequest, context: Any) -> pb.Tweet:
        self._enter("GetTweet", request, context)
        return self._tweet(request.tweet_id, context)

    def EditTweet(self, request: pb.EditTweetRequest, context: Any) -> pb.Tweet:
        self._enter("EditTweet", request, context)
        tweet = self._tweet(request.tweet_id, context)
        if tweet.user_id != request.user_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"tweet {request.tweet_id} belongs to user {tweet.user_id}",
            )
        self._check_text(request.text, context)
        tweet.text = request.text
        tweet.edited_at.seconds = BASE_SECONDS + 3600
        return tweet

    def DeleteTweet(self, request: pb.DeleteTweetRequest, context: Any) -> Any:
        self._enter("DeleteTweet", request, context)
        tweet = self._tweet(request.tweet_id, context)
        if tweet.user_id != request.user_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"tweet {request.tweet_id} belongs to user {tweet.user_id}",
            )
        del self.tweets[request.tweet_id]
        return pb.DeleteTweetResponse()

    def GetUserTimeline(self, request: pb.GetUserTimelineRequest, context: Any) -> Any:
        self._enter("GetUserTimeline", request, context)
        self._user(request.user_id, context)
        return self._timeline({request.user_id}, TokenKind.USER_TIMELINE, request, context)

    def GetHomeTimeline(self, request: pb.GetHomeTimelineRequest, context: Any) -> Any:
        self._enter("GetHomeTimeline", request, context)
        self._user(request.user_id, context)
        authors = {request.user_id} | {b for a, b in self.follows if a == request.user_id}
        response = self._timeline(authors, TokenKind.HOME_TIMELINE, request, context)
        if self.partial_shards:
            response.partial = True
            response.unavailable_shards.extend(self.partial_shards)
        return response

    def Ping(self, request: pb.PingRequest, context: Any) -> pb.PingResponse:
        self._enter("Ping", request, context)
        return pb.PingResponse(shard_id=3 if request.user_id == 0 else 5)


@contextlib.contextmanager
def serve_fake() -> Iterator[FakeMurmur]:
    """A FakeMurmur served on an ephemeral port; ``fake.target`` is its address."""
    servicer = FakeMurmur()
    with serving(servicer, pb_grpc.add_MurmurServicer_to_server) as servicer.target:
        yield servicer


@pytest.fixture
def fake() -> Iterator[FakeMurmur]:
    with serve_fake() as servicer:
        yield servicer


@pytest.fixture
def client(fake: FakeMurmur) -> Iterator[MurmurClient]:
    with MurmurClient(fake.target, timeout=5.0) as c:
        yield c


@pytest.fixture
def strict_client(fake: FakeMurmur) -> Iterator[MurmurClient]:
    """No retry policy: one attempt per call, so error tests do not wait on backoff."""
    with MurmurClient(fake.target, timeout=5.0, retries=False) as c:
        yield c


def make_users(client: MurmurClient, count: int, prefix: str = "u") -> list[pb.User]:
    return [client.create_user(f"{prefix}{i}") for i in range(count)]


# -- users ---------------------------------------------------------------------


def test_create_user_returns_the_user(client: MurmurClient, fake: FakeMurmur) -> None:
    user = client.create_user("Alice", display_name="Alice A.", bio="hi")
    assert isinstance(user, pb.User)
    assert (user.user_id, user.handle, user.display_name, user.bio) == (
        FIRST_USER_ID,
        "Alice",
        "Alice A.",
        "hi",
    )
    sent = fake.requests["CreateUser"][0]
    assert (sent.handle, sent.display_name, sent.bio) == ("Alice", "Alice A.", "hi")
    assert len(sent.request_id) == 32  # a fresh uuid4, so retries are safe


def test_create_user_keeps_a_given_request_id(client: MurmurClient, fake: FakeMurmur) -> None:
    client.create_user("alice", request_id="signup-1")
    assert fake.requests["CreateUser"][0].request_id == "signup-1"


def test_get_user_by_id_and_by_handle(client: MurmurClient, fake: FakeMurmur) -> None:
    alice = client.create_user("Alice")
    assert client.get_user(user_id=alice.user_id) == alice
    assert client.get_user(handle="alice") == alice
    sent = fake.requests["GetUser"]
    assert [r.WhichOneof("key") for r in sent] == ["user_id", "handle"]


@pytest.mark.parametrize("kwargs", [{}, {"user_id": 1, "handle": "a"}])
def test_get_user_needs_exactly_one_key(
    client: MurmurClient, fake: FakeMurmur, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        client.get_user(**kwargs)
    assert fake.calls["GetUser"] == 0


def test_duplicate_handle_is_already_exists(client: MurmurClient) -> None:
    client.create_user("alice")
    with pytest.raises(errors.AlreadyExists) as info:
        client.create_user("ALICE")
    assert info.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert info.value.details == "handle ALICE is taken"


def test_follow_and_unfollow(client: MurmurClient, fake: FakeMurmur) -> None:
    a, b = make_users(client, 2)
    assert isinstance(client.follow(a.user_id, b.user_id), pb.FollowResponse)
    assert fake.follows == {(a.user_id, b.user_id)}
    assert client.get_user(user_id=b.user_id).follower_count == 1
    assert client.get_user(user_id=a.user_id).following_count == 1
    assert isinstance(client.unfollow(a.user_id, b.user_id), pb.UnfollowResponse)
    assert fake.follows == set()
    with pytest.raises(errors.InvalidArgument, match="follow themself"):
        client.follow(a.user_id, a.user_id)


# -- paging ----------------------------------------------------------------------


def _followed_by(client: MurmurClient, fake: FakeMurmur, count: int) -> tuple[int, list[int]]:
    """A celebrity with ``count`` followers; returns (celebrity id, follower ids)."""
    star = client.create_user("star")
    fans = make_users(client, count, prefix="fan")
    for fan in fans:
        fake.follows.add((fan.user_id, star.user_id))
    return star.user_id, [f.user_id for f in fans]


def test_list_followers_returns_one_raw_page(client: MurmurClient, fake: FakeMurmur) -> None:
    star, fans = _followed_by(client, fake, 5)
    first = client.list_followers(star, page_size=2)
    assert isinstance(first, pb.ListUsersResponse)
    assert [u.user_id for u in first.users] == fans[:2]
    assert first.next_page_token
    second = client.list_followers(star, page_size=2, page_token=first.next_page_token)
    assert [u.user_id for u in second.users] == fans[2:4]


def test_iter_followers_walks_every_page(client: MurmurClient, fake: FakeMurmur) -> None:
    star, fans = _followed_by(client, fake, 7)
    got = [u.user_id for u in client.iter_followers(star, page_size=3)]
    assert got == fans
    sent = fake.requests["ListFollowers"]
    assert [r.page_size for r in sent] == [3, 3, 3]
    assert sent[0].page_token == ""
    assert page_tokens.decode(TokenKind.FOLLOWERS, star, sent[1].page_token) == fans[2]
    assert page_tokens.decode(TokenKind.FOLLOWERS, star, sent[2].page_token) == fans[5]


def test_iter_following_walks_every_page(client: MurmurClient, fake: FakeMurmur) -> None:
    fan = client.create_user("fan")
    stars = make_users(client, 5, prefix="star")
    for star in stars:
        client.follow(fan.user_id, star.user_id)
    got = [u.user_id for u in client.iter_following(fan.user_id, page_size=2)]
    assert got == [s.user_id for s in stars]
    assert fake.calls["ListFollowing"] == 3


def test_iter_limit_stops_early_and_asks_only_for_what_it_needs(
    client: MurmurClient, fake: FakeMurmur
) -> None:
    star, fans = _followed_by(client, fake, 10)
    got = [u.user_id for u in client.iter_followers(star, page_size=3, limit=4)]
    assert got == fans[:4]
    assert [r.page_size for r in fake.requests["ListFollowers"]] == [3, 1]


def test_iter_limit_holds_even_if_server_sends_more(client: MurmurClient, fake: FakeMurmur) -> None:
    star, fans = _followed_by(client, fake, 10)
    # A server ignoring page_size must still not make the iterator overshoot.
    original = fake._page_size
    fake._page_size = lambda requested, context: 10  # type: ignore[method-assign]
    try:
        got = list(client.iter_followers(star, page_size=3, limit=4))
    finally:
        fake._page_size = original  # type: ignore[method-assign]
    assert [u.user_id for u in got] == fans[:4]
    assert fake.calls["ListFollowers"] == 1


def test_iterators_are_lazy(client: MurmurClient, fake: FakeMurmur) -> None:
    star, _ = _followed_by(client, fake, 6)
    it = client.iter_followers(star, page_size=2)
    assert fake.calls["ListFollowers"] == 0
    next(it)
    next(it)
    assert fake.calls["ListFollowers"] == 1
    next(it)
    assert fake.calls["ListFollowers"] == 2


@pytest.mark.timeout(5)  # the bug this guards against is an endless loop
def test_iter_raises_if_server_repeats_a_token(client: MurmurClient, fake: FakeMurmur) -> None:
    star, _ = _followed_by(client, fake, 5)
    fake.stuck_token = True
    with pytest.raises(errors.Internal, match="again"):
        list(client.iter_followers(star, page_size=2))
    assert fake.calls["ListFollowers"] == 2


def test_iter_errors_are_typed(client: MurmurClient) -> None:
    with pytest.raises(errors.NotFound, match="user 42"):
        list(client.iter_followers(42))


# -- tweets ----------------------------------------------------------------------


def test_post_tweet_fills_in_a_fresh_request_id(client: MurmurClient, fake: FakeMurmur) -> None:
    alice = client.create_user("alice")
    first = client.post_tweet(alice.user_id, "one")
    second = client.post_tweet(alice.user_id, "two")
    assert isinstance(first, pb.Tweet)
    assert (first.user_id, first.text) == (alice.user_id, "one")
    assert first.tweet_id != second.tweet_id
    ids = [r.request_id for r in fake.requests["PostTweet"]]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0] != ids[1]


def test_post_tweet_keeps_a_given_request_id(client: MurmurClient, fake: FakeMurmur) -> None:
    alice = client.create_user("alice")
    first = client.post_tweet(alice.user_id, "hello", request_id="r-1")
    again = client.post_tweet(alice.user_id, "hello", request_id="r-1")
    assert first == again
    assert len(fake.tweets) == 1
    assert fake.requests["PostTweet"][0].request_id == "r-1"


def test_get_edit_delete_tweet(client: MurmurClient) -> None:
    alice, bob = make_users(client, 2)
    posted = client.post_tweet(alice.user_id, "draft")
    assert client.get_tweet(posted.tweet_id) == posted
    assert not posted.HasField("edited_at")

    edited = client.edit_tweet(posted.tweet_id, alice.user_id, "final")
    assert edited.text == "final"
    assert edited.HasField("edited_at")
    assert client.get_tweet(posted.tweet_id).text == "final"

    with pytest.raises(errors.PermissionDenied):
        client.edit_tweet(posted.tweet_id, bob.user_id, "mine now")
    with pytest.raises(errors.PermissionDenied):
        client.delete_tweet(posted.tweet_id, bob.user_id)

    assert isinstance(client.delete_tweet(posted.tweet_id, alice.user_id), pb.DeleteTweetResponse)
    with pytest.raises(errors.NotFound, match=f"tweet {posted.tweet_id}"):
        client.get_tweet(posted.tweet_id)


def test_invalid_tweet_text(client: MurmurClient) -> None:
    alice = client.create_user("alice")
    with pytest.raises(errors.InvalidArgument, match="1-280"):
        client.post_tweet(alice.user_id, "   ")


# -- timelines -------------------------------------------------------------------


def test_user_timeline_pages_newest_first(client: MurmurClient, fake: FakeMurmur) -> None:
    alice, bob = make_users(client, 2)
    mine = [client.post_tweet(alice.user_id, f"a{i}").tweet_id for i in range(5)]
    client.post_tweet(bob.user_id, "not in alice's timeline")

    page = client.user_timeline(alice.user_id, page_size=2)
    assert isinstance(page, pb.TimelineResponse)
    assert [t.tweet_id for t in page.tweets] == mine[::-1][:2]
    assert (
        page_tokens.decode(TokenKind.USER_TIMELINE, alice.user_id, page.next_page_token) == mine[3]
    )

    assert [t.tweet_id for t in client.iter_user_timeline(alice.user_id, page_size=2)] == mine[::-1]
    assert fake.calls["GetUserTimeline"] == 1 + 3
    limited = client.iter_user_timeline(alice.user_id, page_size=2, limit=3)
    assert [t.tweet_id for t in limited] == mine[::-1][:3]


def test_iter_timeline_from_a_page_token(client: MurmurClient) -> None:
    alice = client.create_user("alice")
    mine = [client.post_tweet(alice.user_id, f"a{i}").tweet_id for i in range(5)]
    token = page_tokens.encode(TokenKind.USER_TIMELINE, alice.user_id, mine[3])
    got = client.iter_user_timeline(alice.user_id, page_size=2, page_token=token)
    assert [t.tweet_id for t in got] == [mine[2], mine[1], mine[0]]


def test_home_timeline_merges_followees(client: MurmurClient, fake: FakeMurmur) -> None:
    alice, bob, carol = make_users(client, 3)
    client.follow(alice.user_id, bob.user_id)
    a1 = client.post_tweet(alice.user_id, "a1").tweet_id
    b1 = client.post_tweet(bob.user_id, "b1").tweet_id
    client.post_tweet(carol.user_id, "c1")
    b2 = client.post_tweet(bob.user_id, "b2").tweet_id

    page = client.home_timeline(alice.user_id)
    assert [t.tweet_id for t in page.tweets] == [b2, b1, a1]
    assert page.next_page_token == ""
    assert fake.requests["GetHomeTimeline"][0].page_size == 0

    got = client.iter_home_timeline(alice.user_id, page_size=1)
    assert [t.tweet_id for t in got] == [b2, b1, a1]
    sent = fake.requests["GetHomeTimeline"][1:]
    assert page_tokens.decode(TokenKind.HOME_TIMELINE, alice.user_id, sent[-1].page_token) == b1


def test_iter_home_timeline_reports_partial_pages(client: MurmurClient, fake: FakeMurmur) -> None:
    alice = client.create_user("alice")
    for i in range(3):
        client.post_tweet(alice.user_id, f"a{i}")
    fake.partial_shards = [4, 9]
    seen: list[list[int]] = []
    got = list(
        client.iter_home_timeline(
            alice.user_id, page_size=2, on_partial=lambda p: seen.append(list(p.unavailable_shards))
        )
    )
    assert len(got) == 3
    assert seen == [[4, 9], [4, 9]]


def test_a_partial_page_without_on_partial_is_logged(
    client: MurmurClient, fake: FakeMurmur, caplog: pytest.LogCaptureFixture
) -> None:
    """A flat stream of tweets hid the shards that did not answer."""
    alice = client.create_user("alice")
    client.post_tweet(alice.user_id, "a0")
    fake.partial_shards = [4, 9]
    with caplog.at_level(logging.WARNING, logger="murmur.client"):
        assert len(list(client.iter_home_timeline(alice.user_id))) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"the home timeline of user {alice.user_id} is partial: shards 4, 9 did not answer, "
        "and their tweets are missing (pass on_partial to handle this)"
    ]
    caplog.clear()
    fake.partial_shards = []
    with caplog.at_level(logging.WARNING, logger="murmur.client"):
        list(client.iter_home_timeline(alice.user_id))
    assert caplog.records == []


def test_page_size_0_with_a_big_limit_asks_for_pages_the_server_gives(
    client: MurmurClient, fake: FakeMurmur
) -> None:
    """The limit itself went out as the page size: past 2^31 protobuf refused it."""
    alice = client.create_user("alice")
    client.post_tweet(alice.user_id, "a0")
    assert len(list(client.iter_user_timeline(alice.user_id, page_size=0, limit=1 << 31))) == 1
    assert fake.requests["GetUserTimeline"][-1].page_size == 200


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.post_tweet(1, "hi \ud83d"), "text"),
        (lambda c: c.get_tweet(-1), "tweet_id"),
        (lambda c: c.user_timeline(1, page_size=1 << 31), "page_size"),
        (lambda c: c.follow(1, 1 << 64), "followee_id"),
        (lambda c: c.get_user("alice"), "user_id"),
    ],
)
def test_a_value_protobuf_cannot_carry_is_invalid_argument_naming_the_field(
    client: MurmurClient, fake: FakeMurmur, call: Callable[[MurmurClient], Any], field: str
) -> None:
    """``except MurmurError`` missed these: protobuf raised ValueError,
    TypeError or UnicodeEncodeError while the request was built."""
    with pytest.raises(errors.InvalidArgument) as caught:
        call(client)
    assert caught.value.details.startswith(field), caught.value.details
    assert sum(fake.calls.values()) == 0  # refused before any call


def test_get_user_with_a_handle_in_user_id_says_to_pass_handle(client: MurmurClient) -> None:
    with pytest.raises(errors.InvalidArgument, match="pass handle='alice'"):
        client.get_user("alice")  # type: ignore[arg-type]


def test_with_options_sets_one_call_s_deadline_and_metadata(
    client: MurmurClient, fake: FakeMurmur
) -> None:
    traced = client.with_options(timeout=0.5, metadata=[("x-trace-id", "abc")])
    traced.ping()
    client.ping()
    (first_left, second_left) = fake.time_left[-2:]
    # the server sees the deadline a hair later than it was set: not 0.5 exactly
    assert first_left is not None and first_left <= 0.51
    assert second_left is not None and second_left > 1  # the client's own 5 s stands
    assert fake.metadata[-2]["x-trace-id"] == "abc" and "x-trace-id" not in fake.metadata[-1]
    both = traced.with_options(metadata=[("x-tenant", "t1")])
    both.ping()
    assert fake.metadata[-1]["x-trace-id"] == "abc" and fake.metadata[-1]["x-tenant"] == "t1"
    assert both.timeout == 0.5
    with pytest.raises(ValueError, match="timeout must be"):
        client.with_options(timeout=0)


def test_a_view_shares_the_channel_and_closes_with_its_client(fake: FakeMurmur) -> None:
    client = MurmurClient(fake.target, timeout=5.0)
    view = client.with_options(timeout=1.0)
    view.close()  # closes the view only
    with pytest.raises(errors.ClientClosed):
        view.ping()
    client.ping()
    other = client.with_options(timeout=1.0)
    client.close()
    with pytest.raises(errors.ClientClosed):
        other.ping()


def test_channels_reconnect_soon_after_a_router_comes_back() -> None:
    """gRPC's default reconnect backoff grows to 120 s: a client that saw the
    router down kept failing fast for ~25 s after it was back."""
    from client.admin_client import admin_channel_options
    from client.client import channel_options

    for options in (
        channel_options(),
        channel_options(retries=False),
        admin_channel_options(),
        admin_channel_options(retries=False),
    ):
        assert dict(options)["grpc.max_reconnect_backoff_ms"] <= 5_000, options


def test_ping(client: MurmurClient, fake: FakeMurmur) -> None:
    assert client.ping() == pb.PingResponse(shard_id=3)
    assert client.ping(user_id=7).shard_id == 5
    assert fake.requests["Ping"][1].user_id == 7


# -- errors ----------------------------------------------------------------------

MAPPED = [
    (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, errors.NotFound),
    (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
    (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
    (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
    (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
    (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
    (grpc.StatusCode.INTERNAL, errors.Internal),
    (grpc.StatusCode.CANCELLED, errors.Cancelled),
    (grpc.StatusCode.UNKNOWN, errors.Unknown),
    (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
    (grpc.StatusCode.ABORTED, errors.Aborted),
    (grpc.StatusCode.OUT_OF_RANGE, errors.OutOfRange),
    (grpc.StatusCode.DATA_LOSS, errors.DataLoss),
]


@pytest.mark.parametrize(("code", "cls"), MAPPED, ids=[c.name for c, _ in MAPPED])
def test_status_codes_map_to_typed_errors(
    strict_client: MurmurClient, fake: FakeMurmur, code: grpc.StatusCode, cls: type[MurmurError]
) -> None:
    fake.forced = (code, f"details for {code.name}")
    with pytest.raises(cls) as info:
        strict_client.ping()
    err = info.value
    assert type(err) is cls
    assert isinstance(err, MurmurError)
    assert err.code is code
    assert err.details == f"details for {code.name}"
    assert str(err) == f"{code.name}: details for {code.name}"
    assert isinstance(err.__cause__, grpc.RpcError)


def test_every_failure_code_has_its_own_class() -> None:
    """No failure status falls through to a bare MurmurError any more."""
    failures = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]
    assert {c for c, _ in MAPPED} == set(failures)
    classes = [errors.exception_class_for(c) for c in failures]
    assert MurmurError not in classes
    assert len(set(classes)) == len(failures)
    assert all(cls.__doc__ and cls.__name__ in errors.__all__ for cls in classes)


def test_unmapped_code_is_a_plain_murmur_error() -> None:
    class OkError(grpc.RpcError):  # a broken interceptor could raise this
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.OK

        def details(self) -> str:
            return "odd"

    err = error_from_rpc(OkError())
    assert type(err) is MurmurError
    assert err.code is grpc.StatusCode.OK
    assert err.details == "odd"


def test_client_deadline_is_deadline_exceeded(fake: FakeMurmur) -> None:
    fake.delay = 0.5
    with MurmurClient(fake.target, timeout=0.1) as c, pytest.raises(errors.DeadlineExceeded):
        c.ping()


def test_unreachable_server_is_unavailable() -> None:
    with MurmurClient("127.0.0.1:1", timeout=2.0) as c, pytest.raises(errors.Unavailable):
        c.ping()


def test_error_from_rpc_without_a_call() -> None:
    class Bare(grpc.RpcError):
        def __str__(self) -> str:
            return "no call attached"

    err = error_from_rpc(Bare())
    assert type(err) is errors.Unknown
    assert err.code is grpc.StatusCode.UNKNOWN
    assert err.details == "no call attached"


def test_errors_survive_pickling() -> None:
    err = pickle.loads(pickle.dumps(errors.NotFound("user 1")))
    assert (type(err), err.code, err.details) == (
        errors.NotFound,
        grpc.StatusCode.NOT_FOUND,
        "user 1",
    )
    odd = pickle.loads(pickle.dumps(MurmurError("x", grpc.StatusCode.ABORTED)))
    assert odd.code is grpc.StatusCode.ABORTED


# -- retries ---------------------------------------------------------------------


def test_retry_policy_names_real_idempotent_methods() -> None:
    service = pb.DESCRIPTOR.services_by_name["Murmur"]
    assert SERVICE_NAME == "murmur.v1.Murmur"
    assert set(IDEMPOTENT_METHODS) == {m.name for m in service.methods}
    options = dict(channel_options(retries=True))
    assert options["grpc.enable_retries"] == 1
    config = json.loads(options["grpc.service_config"])
    (method_config,) = config["methodConfig"]
    assert {n["method"] for n in method_config["name"]} == set(IDEMPOTENT_METHODS)
    assert {n["service"] for n in method_config["name"]} == {SERVICE_NAME}
    assert method_config["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "grpc.enable_retries" not in dict(channel_options(retries=False))


def test_unavailable_is_retried_until_it_succeeds(client: MurmurClient, fake: FakeMurmur) -> None:
    alice = client.create_user("alice")
    fake.fail_next["GetUser"] = 3
    assert client.get_user(user_id=alice.user_id).handle == "alice"
    assert fake.calls["GetUser"] == 4


def test_retries_give_up_after_four_attempts(client: MurmurClient, fake: FakeMurmur) -> None:
    fake.fail_next["Ping"] = 4
    with pytest.raises(errors.Unavailable, match="shard 7"):
        client.ping()
    assert fake.calls["Ping"] == 4


def test_post_tweet_retries_with_the_same_request_id(
    client: MurmurClient, fake: FakeMurmur
) -> None:
    alice = client.create_user("alice")
    fake.fail_next["PostTweet"] = 2
    tweet = client.post_tweet(alice.user_id, "once")
    assert fake.calls["PostTweet"] == 3
    assert len({r.request_id for r in fake.requests["PostTweet"]}) == 1
    assert list(fake.tweets) == [tweet.tweet_id]


def test_create_user_retries_with_the_same_request_id(
    client: MurmurClient, fake: FakeMurmur
) -> None:
    fake.fail_next["CreateUser"] = 2
    alice = client.create_user("alice")
    assert fake.calls["CreateUser"] == 3
    assert len({r.request_id for r in fake.requests["CreateUser"]}) == 1
    assert fake.requests["CreateUser"][0].request_id  # filled in by the client
    assert fake.users[alice.user_id].handle == "alice"


def test_non_retryable_codes_are_not_retried(client: MurmurClient, fake: FakeMurmur) -> None:
    with pytest.raises(errors.NotFound):
        client.get_user(user_id=99)
    assert fake.calls["GetUser"] == 1


def test_retries_off_means_one_attempt(strict_client: MurmurClient, fake: FakeMurmur) -> None:
    fake.fail_next["Ping"] = 1
    with pytest.raises(errors.Unavailable):
        strict_client.ping()
    assert fake.calls["Ping"] == 1


# -- lifecycle -------------------------------------------------------------------


def test_context_manager_closes_its_own_channel(fake: FakeMurmur) -> None:
    with MurmurClient(fake.target) as c:
        c.ping()
    # a MurmurError (so `except MurmurError` sees it), not grpc's bare ValueError
    with pytest.raises(errors.ClientClosed, match=f"client for {fake.target} is closed") as info:
        c.ping()
    assert isinstance(info.value, errors.Cancelled)
    assert info.value.code is grpc.StatusCode.CANCELLED
    with pytest.raises(errors.ClientClosed):
        list(c.iter_followers(1))
    assert fake.calls["Ping"] == 1


def test_a_closed_client_over_a_given_channel_refuses_calls(fake: FakeMurmur) -> None:
    channel = grpc.insecure_channel(fake.target)
    try:
        c = MurmurClient(channel=channel)
        c.close()
        with pytest.raises(errors.ClientClosed):
            c.ping()
        assert MurmurClient(channel=channel).ping().shard_id == 3  # the channel stays open
    finally:
        channel.close()


def test_a_closed_admin_client_raises_client_closed() -> None:
    admin = AdminClient("127.0.0.1:1", "token")
    admin.close()
    with pytest.raises(errors.ClientClosed):
        admin.get_cluster_status()
    with pytest.raises(errors.ClientClosed):
        admin.rebalance()


# -- timeouts --------------------------------------------------------------------

BAD_TIMEOUTS = [float("inf"), float("-inf"), float("nan"), 1e10, 0, -1.0, True, "10"]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_an_unusable_timeout_is_refused_up_front(timeout: Any) -> None:
    """Not a client whose every call fails at once with DEADLINE_EXCEEDED."""
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        MurmurClient("127.0.0.1:1", timeout=timeout)
    with pytest.raises(ValueError, match="^timeout must"):
        AdminClient("127.0.0.1:1", "t", timeout=timeout)
    with pytest.raises(ValueError, match="^long_timeout must"):
        AdminClient("127.0.0.1:1", "t", long_timeout=timeout)


def test_the_largest_timeout_still_works(fake: FakeMurmur) -> None:
    with MurmurClient(fake.target, timeout=MAX_TIMEOUT_S) as c:
        assert c.ping().shard_id == 3
    with AdminClient("127.0.0.1:1", "t", timeout=MAX_TIMEOUT_S, long_timeout=None) as admin:
        assert admin.long_timeout is None  # None: no deadline for the long calls


def test_a_given_channel_is_left_open(fake: FakeMurmur) -> None:
    channel = grpc.insecure_channel(fake.target, options=channel_options())
    try:
        with MurmurClient(channel=channel) as c:
            c.ping()
        fake.fail_next["Ping"] = 1
        with MurmurClient(channel=channel) as again:  # retry policy came with the channel
            assert again.ping().shard_id == 3
        assert fake.calls["Ping"] == 3
    finally:
        channel.close()

"""An in-process cluster with a few users, follows and tweets, and a model of
what it holds, so a fuzz test can predict the exact answer to any request."""

from __future__ import annotations

import asyncio
from typing import Any

from murmur.errors import ServiceError
from murmur.page_tokens import TokenKind
from murmur.v1 import murmur_pb2 as pb
from tests.timeline.memory_cluster import MemoryCluster

SEED_HANDLES = ("alice", "bob", "carol", "dave", "erin")
SEED_FOLLOWS = (
    ("alice", "bob"),
    ("carol", "bob"),
    ("dave", "bob"),
    ("erin", "bob"),
    ("alice", "carol"),
    ("alice", "dave"),
    ("bob", "alice"),
)


class World:
    """The cluster plus what a correct cluster must hold after the calls made."""

    def __init__(self, cluster: MemoryCluster, loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self.loop = loop
        self.users: dict[int, str] = {}  # user id -> handle as created
        self.profiles: dict[int, tuple[str, str]] = {}  # user id -> (display_name, bio)
        self.by_handle: dict[str, int] = {}  # lower-cased handle -> user id
        self.tweets: dict[int, int] = {}  # live tweet id -> author
        self.deleted: set[int] = set()
        # (author, request_id) -> the tweet it posted, as first posted
        self.requests: dict[tuple[int, str], pb.Tweet] = {}
        self.following: set[tuple[int, int]] = set()
        self.tokens: dict[int, list[str]] = {int(kind): [] for kind in TokenKind}

    # calling ------------------------------------------------------------------
    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, request: Any) -> Any:
        """The response, or the ServiceError the router answered with.

        Anything else escaping the router servicer is a crash and propagates.
        """
        try:
            return self.run(self.cluster.call(method, request))
        except ServiceError as exc:
            return exc

    def ok(self, method: str, request: Any) -> Any:
        result = self.call(method, request)
        if isinstance(result, ServiceError):
            raise AssertionError(f"{method} failed: {result.code.name}: {result.message}")
        return result

    def settle(self) -> None:
        self.run(self.cluster.settle())

    # bookkeeping after successful writes ---------------------------------------
    def created(self, user: pb.User) -> None:
        self.users[user.user_id] = user.handle
        self.by_handle[user.handle.lower()] = user.user_id
        self.profiles[user.user_id] = (user.display_name, user.bio)

    def updated(self, user: pb.User) -> None:
        self.profiles[user.user_id] = (user.display_name, user.bio)

    def posted(self, tweet: pb.Tweet, request_id: str) -> None:
        self.tweets[tweet.tweet_id] = tweet.user_id
        if request_id:
            self.requests[(tweet.user_id, request_id)] = tweet

    def removed(self, tweet_id: int) -> None:
        self.tweets.pop(tweet_id, None)
        self.deleted.add(tweet_id)

    def id_of(self, handle: str) -> int:
        return self.by_handle[handle.lower()]

    def fresh_handle(self, length: int = 8) -> str:
        """A valid handle nobody has yet, exactly ``length`` characters long."""
        n = len(self.by_handle)
        while True:
            handle = f"fz{n}".ljust(length, "_")[:length]
            if handle.lower() not in self.by_handle:
                return handle
            n += 1

    def missing_user(self) -> int:
        """A positive id below 2**63 that no user has."""
        candidate = 7_777_777_777
        while candidate in self.users:
            candidate += 1
        return candidate

    # a small, known starting state ----------------------------------------------
    def add_users(self, handles: tuple[str, ...]) -> World:
        for handle in handles:
            self.created(self.ok("CreateUser", pb.CreateUserRequest(handle=handle)))
        return self

    def seed(self) -> World:
        self.add_users(SEED_HANDLES)
        for follower, followee in SEED_FOLLOWS:
            a, b = self.id_of(follower), self.id_of(followee)
            self.ok("Follow", pb.FollowRequest(follower_id=a, followee_id=b))
            self.following.add((a, b))
        for author, count in (("bob", 3), ("alice", 2), ("carol", 1), ("dave", 1)):
            for n in range(count):
                request_id = f"seed-{author}-{n}"
                request = pb.PostTweetRequest(
                    user_id=self.id_of(author), text=f"{author} {n}", request_id=request_id
                )
                self.posted(self.ok("PostTweet", request), request_id)
        dave = self.id_of("dave")
        doomed = next(t for t, a in self.tweets.items() if a == dave)
        self.ok("DeleteTweet", pb.DeleteTweetRequest(tweet_id=doomed, user_id=dave))
        self.removed(doomed)
        self.settle()
        alice, bob = self.id_of("alice"), self.id_of("bob")
        pages = {
            TokenKind.FOLLOWERS: ("ListFollowers", pb.ListFollowersRequest(user_id=bob)),
            TokenKind.FOLLOWING: ("ListFollowing", pb.ListFollowingRequest(user_id=alice)),
            TokenKind.USER_TIMELINE: ("GetUserTimeline", pb.GetUserTimelineRequest(user_id=bob)),
            TokenKind.HOME_TIMELINE: ("GetHomeTimeline", pb.GetHomeTimelineRequest(user_id=alice)),
        }
        for kind, (method, request) in pages.items():
            request.page_size = 1
            token = self.ok(method, request).next_page_token
            assert token, f"{method} with page_size 1 must give a next_page_token"
            self.tokens[int(kind)].append(token)
            request.page_token = token
            second = self.ok(method, request).next_page_token
            if second:
                self.tokens[int(kind)].append(second)
        return self

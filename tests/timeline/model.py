"""Drives a cluster and the join oracle with the same operations, and
compares home timelines page by page."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from murmur.v1 import murmur_pb2 as pb
from tests.timeline.oracle import JoinOracle

_handles = itertools.count()


class Model:
    def __init__(self, cluster: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self.loop = loop
        self.oracle = JoinOracle()
        self.users: dict[Any, int] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, request: Any) -> Any:
        return self.run(self.cluster.call(method, request))

    def user(self, key: Any) -> int:
        if key not in self.users:
            handle = f"u{next(_handles)}"
            self.users[key] = self.call("CreateUser", pb.CreateUserRequest(handle=handle)).user_id
        return self.users[key]

    def follow(self, follower: Any, followee: Any) -> None:
        a, b = self.user(follower), self.user(followee)
        self.call("Follow", pb.FollowRequest(follower_id=a, followee_id=b))
        self.oracle.follow(a, b)

    def follow_all(self, fans: list[Any], stars: list[Any]) -> None:
        """Every fan follows every star (celebrities, with a low threshold)."""
        for star in stars:
            for fan in fans:
                self.follow(fan, star)

    def unfollow(self, follower: Any, followee: Any) -> None:
        a, b = self.user(follower), self.user(followee)
        self.call("Unfollow", pb.UnfollowRequest(follower_id=a, followee_id=b))
        self.oracle.unfollow(a, b)

    def post(self, author: Any, text: str) -> int:
        user_id = self.user(author)
        tweet = self.call("PostTweet", pb.PostTweetRequest(user_id=user_id, text=text))
        self.oracle.post(tweet.tweet_id, user_id, tweet.text)
        return tweet.tweet_id

    def edit(self, tweet_id: int, text: str) -> None:
        author, _ = self.oracle.tweets[tweet_id]
        tweet = self.call(
            "EditTweet", pb.EditTweetRequest(tweet_id=tweet_id, user_id=author, text=text)
        )
        self.oracle.edit(tweet_id, tweet.text)

    def delete(self, tweet_id: int) -> None:
        author, _ = self.oracle.tweets[tweet_id]
        self.call("DeleteTweet", pb.DeleteTweetRequest(tweet_id=tweet_id, user_id=author))
        self.oracle.delete(tweet_id)

    def settle(self) -> None:
        self.run(self.cluster.settle())

    def home_page(self, reader: int, token: str = "", size: int = 20) -> pb.TimelineResponse:
        return self.call(
            "GetHomeTimeline",
            pb.GetHomeTimelineRequest(user_id=reader, page_size=size, page_token=token),
        )

    def check_home(self, reader: int, pages: int = 2, size: int = 20) -> None:
        """The first ``pages`` pages equal the join, edits shown, deletes gone."""
        token, before = "", 0
        for page in range(pages):
            response = self.home_page(reader, token, size)
            got = [(t.tweet_id, t.user_id, t.text) for t in response.tweets]
            deeper = self.oracle.home(reader, before, size + 1)  # one scan tells both
            want, more = deeper[:size], len(deeper) > size
            assert got == want, f"reader {reader} page {page}: got {got[:5]}... want {want[:5]}..."
            # a token exactly when older tweets remain, even after a full page
            assert bool(response.next_page_token) == more, f"reader {reader} page {page}"
            if not more:
                return
            token, before = response.next_page_token, got[-1][0]

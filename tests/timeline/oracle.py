"""The join from the original design notes, in memory: the answer every home
timeline must equal once fan-out settles."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class JoinOracle:
    follows: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    tweets: dict[int, tuple[int, str]] = field(default_factory=dict)

    def follow(self, follower: int, followee: int) -> None:
        self.follows[follower].add(followee)

    def unfollow(self, follower: int, followee: int) -> None:
        self.follows[follower].discard(followee)

    def post(self, tweet_id: int, author: int, text: str) -> None:
        self.tweets[tweet_id] = (author, text)

    def edit(self, tweet_id: int, text: str) -> None:
        author, _ = self.tweets[tweet_id]
        self.tweets[tweet_id] = (author, text)

    def delete(self, tweet_id: int) -> None:
        del self.tweets[tweet_id]

    def followers_of(self, user: int) -> int:
        return sum(1 for followees in self.follows.values() if user in followees)

    def home(self, reader: int, before: int = 0, limit: int = 20) -> list[tuple[int, int, str]]:
        """(tweet_id, author, text) newest first: SELECT ... JOIN follows ..."""
        authors = self.follows[reader] | {reader}
        rows = [
            (tweet_id, author, text)
            for tweet_id, (author, text) in self.tweets.items()
            if author in authors and (not before or tweet_id < before)
        ]
        rows.sort(reverse=True)
        return rows[:limit]

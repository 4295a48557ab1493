"""Tweets: each author's timeline (newest first) and the id -> author index."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from operator import itemgetter

from murmur.errors import invalid, not_found, permission_denied
from murmur.ids import IdClock, millis_of_id, slot_of_tweet
from murmur.raw_tweets import RawTweet
from murmur.slots import slot_for_user
from murmur.v1 import murmur_pb2
from shard import keys
from shard.store import Store, Txn
from shard.users import load_clock, timestamp_ms


class TweetStore:
    def __init__(self, store: Store, clock: IdClock) -> None:
        self.store = store
        self.clock = clock

    def by_request(self, txn: Txn, author: int, request_id: str, text: str) -> int | None:
        """The tweet an earlier attempt of this post made, if any. The same
        request_id with another text is a client's bug, not a retry: posting
        nothing and answering OK would lose the new tweet without a word."""
        raw = txn.get(keys.request(slot_for_user(author), author, request_id))
        if raw is None:
            return None
        tweet_id, digest = keys.read_request(raw)
        if digest is not None and digest != keys.text_digest(text):
            raise invalid(
                f"request_id {request_id!r} was used for tweet {tweet_id} with another text; "
                "a retry repeats its request unchanged, a new tweet needs a new request_id"
            )
        return tweet_id

    def create(self, txn: Txn, author: int, text: str, request_id: str) -> murmur_pb2.Tweet:
        slot = slot_for_user(author)
        load_clock(txn, self.clock, slot)
        tweet_id = self.clock.next_tweet_id(slot)
        tweet = murmur_pb2.Tweet(
            tweet_id=tweet_id,
            user_id=author,
            text=text,
            created_at=timestamp_ms(millis_of_id(tweet_id)),
        )
        self.put(txn, tweet)
        txn.put(keys.tweet_author(slot, tweet_id), keys.u64(author))
        txn.put(keys.clock(slot), keys.u64(self.clock.floor(slot)))
        if request_id:
            txn.put(keys.request(slot, author, request_id), keys.request_value(tweet_id, text))
        return tweet

    def put(self, txn: Txn, tweet: murmur_pb2.Tweet) -> None:
        key = keys.timeline(slot_for_user(tweet.user_id), tweet.user_id, tweet.tweet_id)
        txn.put(key, tweet.SerializeToString())

    def get(self, txn: Txn, tweet_id: int) -> murmur_pb2.Tweet | None:
        raw_author = txn.get(keys.tweet_author(slot_of_tweet(tweet_id), tweet_id))
        if raw_author is None:
            return None
        author = keys.read_u64(raw_author)
        raw = txn.get(keys.timeline(slot_for_user(author), author, tweet_id))
        return murmur_pb2.Tweet.FromString(raw) if raw is not None else None

    def require_own(self, txn: Txn, tweet_id: int, user_id: int) -> murmur_pb2.Tweet:
        """The tweet, if ``user_id`` wrote it: only authors edit or delete."""
        tweet = self.get(txn, tweet_id)
        if tweet is None:
            raise not_found(f"tweet {tweet_id} does not exist")
        if tweet.user_id != user_id:
            raise permission_denied(
                f"user {user_id} is not the author of tweet {tweet_id}; "
                "only its author may change it"
            )
        return tweet

    def delete(self, txn: Txn, tweet: murmur_pb2.Tweet) -> None:
        slot = slot_for_user(tweet.user_id)
        txn.delete(keys.timeline(slot, tweet.user_id, tweet.tweet_id))
        txn.delete(keys.tweet_author(slot_of_tweet(tweet.tweet_id), tweet.tweet_id))

    def recent(self, author: int, before_id: int, limit: int) -> Iterator[murmur_pb2.Tweet]:
        """The author's tweets older than ``before_id`` (0: all), newest first."""
        for _tweet_id, raw in self.recent_raw(author, before_id, limit):
            yield murmur_pb2.Tweet.FromString(raw)

    def recent_raw(self, author: int, before_id: int, limit: int) -> Iterator[RawTweet]:
        """``recent`` as (tweet_id, stored bytes) pairs, for answers that
        pass the bytes on (see ``raw_tweets``)."""
        slot = slot_for_user(author)
        prefix = keys.timeline_prefix(slot, author)
        start = keys.timeline(slot, author, before_id - 1) if before_id else prefix
        last_inverted = keys.last_inverted
        for key, raw in self.store.scan(prefix, start=start, limit=limit):
            yield last_inverted(key), raw

    def merged(self, authors: Iterable[int], before_id: int, limit: int) -> list[RawTweet]:
        """The newest ``limit`` tweets of several authors, as raw pairs: a
        lazy k-way merge, so each author's range is read only as far as the
        merge needs."""
        streams = [self.recent_raw(author, before_id, limit) for author in set(authors)]
        merged = heapq.merge(*streams, key=itemgetter(0), reverse=True)
        return list(itertools.islice(merged, limit))

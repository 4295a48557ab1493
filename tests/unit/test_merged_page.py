"""The router's home merge: by ids over serialized tweets, it must give what
merging the messages themselves gives."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmur.errors import ServiceError
from murmur.v1 import murmur_pb2, shard_pb2
from server.home_timeline import as_raw, merged_page

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
ids = st.integers(min_value=1, max_value=60)


def tweet(tweet_id: int, source: str) -> murmur_pb2.Tweet:
    return murmur_pb2.Tweet(tweet_id=tweet_id, user_id=tweet_id % 7 + 1, text=source)


def inbox_of(tweets: list[murmur_pb2.Tweet], raw: bool = False) -> shard_pb2.ReadInboxResponse:
    """The shard's answer, its page as messages or (``raw``) serialized."""
    ids = [t.tweet_id for t in tweets]
    if raw:
        return shard_pb2.ReadInboxResponse(
            page_raw=[t.SerializeToString() for t in tweets], page_ids=ids
        )
    return shard_pb2.ReadInboxResponse(
        page=murmur_pb2.TimelineResponse(tweets=tweets), page_ids=ids
    )


def expected(tweets: list[murmur_pb2.Tweet], limit: int) -> list[murmur_pb2.Tweet]:
    """The plain definition: later copies win, newest first, at most limit."""
    by_id = {t.tweet_id: t for t in tweets}
    return sorted(by_id.values(), key=lambda t: t.tweet_id, reverse=True)[:limit]


@PROPERTY
@given(
    st.sets(ids, max_size=20),
    st.lists(st.sets(ids, max_size=20), max_size=4),
    st.integers(min_value=1, max_value=30),
    st.booleans(),
)
def test_merge_by_id_equals_merging_messages(
    inbox_ids: set[int], other_ids: list[set[int]], limit: int, raw: bool
) -> None:
    inbox = [tweet(i, "inbox") for i in sorted(inbox_ids, reverse=True)]
    others = [tweet(i, f"other {n}") for n, group in enumerate(other_ids) for i in sorted(group)]
    page = merged_page(inbox_of(inbox, raw), as_raw(others), limit)
    assert list(page.tweets) == expected([*inbox, *others], limit)
    assert not page.next_page_token and not page.partial


@pytest.mark.parametrize("raw", [False, True])
def test_pulled_original_wins_over_the_inbox_copy(raw: bool) -> None:
    stale = tweet(5, "before the edit")
    fresh = tweet(5, "after the edit")
    page = merged_page(inbox_of([tweet(9, "inbox"), stale], raw), as_raw([fresh]), 20)
    assert [t.text for t in page.tweets] == ["inbox", "after the edit"]


@pytest.mark.parametrize(
    ("raw", "named"), [(False, "2 tweets and 0 serialized"), (True, "0 tweets and 2 serialized")]
)
def test_page_ids_that_do_not_match_the_page_are_an_internal_error(raw: bool, named: str) -> None:
    inbox = inbox_of([tweet(9, "a"), tweet(5, "b")], raw)
    del inbox.page_ids[-1]
    with pytest.raises(ServiceError) as caught:
        merged_page(inbox, [], 20)
    assert caught.value.code == grpc.StatusCode.INTERNAL
    assert f"{named} with 1 page_ids" in caught.value.message


def test_a_page_sent_both_ways_is_an_internal_error() -> None:
    inbox = inbox_of([tweet(9, "a")])
    inbox.page_raw.append(tweet(9, "a").SerializeToString())
    with pytest.raises(ServiceError) as caught:
        merged_page(inbox, [], 20)
    assert caught.value.code == grpc.StatusCode.INTERNAL

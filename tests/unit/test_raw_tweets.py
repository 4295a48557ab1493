"""Pages answered from stored bytes read back as the same tweets, and the
field numbers that let the router pass a shard's page on stay aligned."""

from __future__ import annotations

from google.protobuf.internal.encoder import _VarintBytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmur import raw_tweets
from murmur.v1 import murmur_pb2, shard_pb2

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

tweets = st.builds(
    murmur_pb2.Tweet,
    tweet_id=st.integers(min_value=1, max_value=(1 << 63) - 1),
    user_id=st.integers(min_value=1, max_value=(1 << 63) - 1),
    # up to 5,000 characters of up to 4 bytes: past the 4,096-byte prefix table
    text=st.text(max_size=5000),
)


@PROPERTY
@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_varint_matches_protobuf(value: int) -> None:
    assert raw_tweets.varint(value) == _VarintBytes(value)


@PROPERTY
@given(st.lists(tweets, max_size=30))
def test_repeated_field_reads_back_as_the_same_tweets(page: list[murmur_pb2.Tweet]) -> None:
    encoded = raw_tweets.repeated_field(t.SerializeToString() for t in page)
    as_timeline = murmur_pb2.TimelineResponse.FromString(encoded)
    as_pull = shard_pb2.PullTimelinesResponse.FromString(encoded)
    assert list(as_timeline.tweets) == page
    assert list(as_pull.tweets) == page
    assert encoded == murmur_pb2.TimelineResponse(tweets=page).SerializeToString()


def test_merging_into_a_response_keeps_its_other_fields() -> None:
    page = [murmur_pb2.Tweet(tweet_id=9, user_id=2, text="a"), murmur_pb2.Tweet(tweet_id=5)]
    response = shard_pb2.ReadInboxResponse(celebrity_ids=[7], exact_from=3)
    response.page.MergeFromString(raw_tweets.repeated_field(t.SerializeToString() for t in page))
    assert list(response.page.tweets) == page
    assert list(response.celebrity_ids) == [7] and response.exact_from == 3


def test_newest_merges_pages_by_id() -> None:
    older = [(8, b"h"), (3, b"c")]
    newer = [(9, b"i"), (5, b"e"), (1, b"a")]
    assert raw_tweets.newest([older, newer], 4) == [(9, b"i"), (8, b"h"), (5, b"e"), (3, b"c")]
    assert raw_tweets.newest([[], []], 4) == []


def test_pull_response_stays_wire_compatible_with_timeline_response() -> None:
    """The router re-reads a PullTimelinesResponse's bytes as its answer."""
    pull_fields = {f.name: f.number for f in shard_pb2.PullTimelinesResponse.DESCRIPTOR.fields}
    timeline = murmur_pb2.TimelineResponse.DESCRIPTOR.fields_by_name["tweets"]
    assert pull_fields == {"tweets": timeline.number}
    assert timeline.number == raw_tweets.TWEETS_FIELD
    page = shard_pb2.ReadInboxResponse.DESCRIPTOR.fields_by_name["page"]
    assert page.message_type is murmur_pb2.TimelineResponse.DESCRIPTOR

"""Pages of tweets answered from their stored bytes.

The shard stores every tweet (timeline entries and inbox copies alike) as a
serialized ``murmur.v1.Tweet``. Parsing each one into a message and copying
it into a response costs ~2 µs a tweet in Python, most of a 20-tweet read.
A response can take the bytes whole instead: ``repeated_field`` writes a
page in the wire form of a ``repeated Tweet tweets = 1`` field, and the
response's ``MergeFromString`` reads it in C. Pages travel as
``(tweet_id, raw)`` pairs so that merges order them without parsing: the id
comes from the key, which ends in the inverted id. The router builds its
merged home pages the same way (``server.home_timeline.merged_page``).
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter

TWEETS_FIELD = 1  # PullTimelinesResponse.tweets and TimelineResponse.tweets
_LENGTH_DELIMITED = 2
_TAG = bytes([TWEETS_FIELD << 3 | _LENGTH_DELIMITED])
RawTweet = tuple[int, bytes]  # (tweet_id, serialized Tweet)


def varint(value: int) -> bytes:
    """Protobuf base-128 varint, least significant group first."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# A serialized tweet is at most ~1.2 kB (280 code points of up to 4 bytes
# plus ids and times); longer ones still work, through varint().
_PREFIXES = tuple(_TAG + varint(size) for size in range(4096))


def repeated_field(raws: Iterable[bytes]) -> bytes:
    """The wire form of ``repeated Tweet tweets = 1`` holding ``raws`` in order."""
    parts: list[bytes] = []
    prefixes = _PREFIXES
    for raw in raws:
        size = len(raw)
        parts.append(prefixes[size] if size < len(prefixes) else _TAG + varint(size))
        parts.append(raw)
    return b"".join(parts)


def newest(pages: Iterable[list[RawTweet]], limit: int) -> list[RawTweet]:
    """The newest ``limit`` of several newest-first pages (ids are unique)."""
    merged = [pair for page in pages for pair in page]
    merged.sort(key=itemgetter(0), reverse=True)
    return merged[:limit]

"""Property tests for the shard's key layout (LevelDB order is byte order)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from murmur.slots import SLOT_COUNT
from shard import keys

# no per-example deadline: the suite must not flake on a loaded machine
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAX_U64 = (1 << 64) - 1
u64s = st.integers(min_value=0, max_value=MAX_U64)
ids = st.integers(min_value=1, max_value=(1 << 63) - 1)
slots = st.integers(min_value=0, max_value=SLOT_COUNT - 1)
handle_text = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
    min_size=1,
    max_size=15,
)
request_ids = st.text(max_size=64)


def slot_keys(slot: int, a: int, b: int, handle: str, request_id: str) -> dict[str, bytes]:
    """One key of every slot-scoped kind."""
    return {
        "user": keys.user(slot, a),
        "handle": keys.handle(slot, handle),
        "following": keys.following(slot, a, b),
        "following_prefix": keys.following_prefix(slot, a),
        "followers": keys.followers(slot, a, b),
        "followers_prefix": keys.followers_prefix(slot, a),
        "celebrity_followed": keys.celebrity_followed(slot, a, b),
        "celebrity_followed_prefix": keys.celebrity_followed_prefix(slot, a),
        "timeline": keys.timeline(slot, a, b),
        "timeline_prefix": keys.timeline_prefix(slot, a),
        "tweet_author": keys.tweet_author(slot, b),
        "request": keys.request(slot, a, request_id),
        "inbox": keys.inbox(slot, a, b),
        "inbox_prefix": keys.inbox_prefix(slot, a),
        "inbox_meta": keys.inbox_meta(slot, a),
        "clock": keys.clock(slot),
    }


@given(u64s, u64s)
@PROPERTY
def test_u64_sorts_like_integers(a: int, b: int) -> None:
    assert len(keys.u64(a)) == 8
    assert (keys.u64(a) < keys.u64(b)) == (a < b)
    assert (keys.u64(a) == keys.u64(b)) == (a == b)
    assert keys.read_u64(keys.u64(a)) == a


@given(u64s, u64s)
@PROPERTY
def test_inverted_sorts_newest_first(a: int, b: int) -> None:
    assert len(keys.inverted(a)) == 8
    assert (keys.inverted(a) < keys.inverted(b)) == (a > b)
    assert keys.read_inverted(b"xx" + keys.inverted(a), 2) == a


@given(st.lists(u64s, min_size=1, max_size=50, unique=True))
@PROPERTY
def test_sorted_inverted_keys_list_ids_newest_first(values: list[int]) -> None:
    ordered = sorted(keys.inverted(v) for v in values)
    assert [keys.MAX_U64 - keys.read_u64(k) for k in ordered] == sorted(values, reverse=True)


@given(slots, ids, ids, handle_text, request_ids)
@PROPERTY
def test_every_slot_key_starts_with_its_slot(
    slot: int, a: int, b: int, handle: str, request_id: str
) -> None:
    prefix = keys.slot_prefix(slot)
    assert prefix == slot.to_bytes(2, "big")
    end = keys.prefix_end(prefix)
    for name, key in slot_keys(slot, a, b, handle, request_id).items():
        assert key.startswith(prefix), name
        assert prefix <= key < end, name  # inside the slot's one range
        assert not key.startswith(keys.LOCAL), name


@given(slots, slots, ids, ids, handle_text, request_ids)
@PROPERTY
def test_one_slot_is_one_contiguous_range(
    s1: int, s2: int, a: int, b: int, handle: str, request_id: str
) -> None:
    """Every key of a lower slot sorts before every key of a higher slot, so
    no other slot's key can sit inside a slot's range."""
    assume(s1 < s2)
    low = slot_keys(s1, a, b, handle, request_id).values()
    high = slot_keys(s2, b, a, handle, request_id).values()
    assert max(low) < min(high)
    assert max(high) < keys.LOCAL  # shard-local keys sort after every slot


@given(slots, ids, ids, ids)
@PROPERTY
def test_edge_prefixes_are_exact(slot: int, a: int, other: int, b: int) -> None:
    assume(a != other)
    for full, prefix in (
        (keys.following, keys.following_prefix),
        (keys.followers, keys.followers_prefix),
        (keys.celebrity_followed, keys.celebrity_followed_prefix),
        (keys.timeline, keys.timeline_prefix),
        (keys.inbox, keys.inbox_prefix),
    ):
        key = full(slot, a, b)
        assert key.startswith(prefix(slot, a))
        assert not key.startswith(prefix(slot, other))  # fixed width: no id is a prefix


@given(slots, ids, ids)
@PROPERTY
def test_edge_keys_recover_second_id(slot: int, a: int, b: int) -> None:
    assert keys.last_u64(keys.following(slot, a, b)) == b
    assert keys.last_u64(keys.followers(slot, a, b)) == b
    assert keys.last_u64(keys.celebrity_followed(slot, a, b)) == b
    assert keys.last_u64(keys.outbox(b)) == b


@given(slots, ids, u64s)
@PROPERTY
def test_last_inverted_recovers_id(slot: int, owner: int, tweet_id: int) -> None:
    assert keys.last_inverted(keys.timeline(slot, owner, tweet_id)) == tweet_id
    assert keys.last_inverted(keys.inbox(slot, owner, tweet_id)) == tweet_id


@given(slots, ids, st.lists(ids, min_size=2, max_size=30, unique=True))
@PROPERTY
def test_timeline_and_inbox_keys_sort_newest_first(slot: int, owner: int, tweets: list[int]):
    for key_of in (keys.timeline, keys.inbox):
        ordered = sorted(key_of(slot, owner, t) for t in tweets)
        assert [keys.last_inverted(k) for k in ordered] == sorted(tweets, reverse=True)


@given(slots, ids, ids)
@PROPERTY
def test_before_id_start_key_skips_newer(slot: int, owner: int, before: int) -> None:
    """``timeline(slot, a, before - 1)`` is where a scan of ids < before starts."""
    start = keys.timeline(slot, owner, before - 1)
    assert keys.timeline(slot, owner, before) < start
    assert keys.timeline(slot, owner, before - 1) >= start
    if before >= 2:
        assert keys.timeline(slot, owner, before - 2) > start


@given(slots, handle_text)
@PROPERTY
def test_handle_key_ignores_case(slot: int, handle: str) -> None:
    assert keys.handle(slot, handle) == keys.handle(slot, handle.upper())
    assert keys.handle(slot, handle) == keys.handle(slot, handle.lower())


@given(u64s, u64s)
@PROPERTY
def test_outbox_keys_in_sequence_order(a: int, b: int) -> None:
    assert keys.outbox(a).startswith(keys.outbox_prefix())
    assert keys.outbox(a).startswith(keys.LOCAL)
    assert (keys.outbox(a) < keys.outbox(b)) == (a < b)


def test_shard_meta_is_local() -> None:
    assert keys.shard_meta("slot_map").startswith(keys.LOCAL)
    assert not keys.shard_meta("slot_map").startswith(keys.outbox_prefix())


non_ff_prefix = st.binary(min_size=1, max_size=12).filter(lambda p: p.rstrip(b"\xff") != b"")


@given(non_ff_prefix, st.binary(max_size=12))
@PROPERTY
def test_prefix_end_bounds_every_extension(prefix: bytes, suffix: bytes) -> None:
    end = keys.prefix_end(prefix)
    assert prefix < end
    assert prefix + suffix < end
    assert not end.startswith(prefix)


@given(non_ff_prefix, st.binary(max_size=14))
@PROPERTY
def test_prefix_end_is_tight(prefix: bytes, key: bytes) -> None:
    """Every key in [prefix, prefix_end(prefix)) starts with prefix."""
    end = keys.prefix_end(prefix)
    if prefix <= key < end:
        assert key.startswith(prefix)
    else:
        assert not key.startswith(prefix)


@given(non_ff_prefix, st.binary(max_size=6))
@PROPERTY
def test_prefix_end_tight_near_the_prefix(prefix: bytes, suffix: bytes) -> None:
    # keys that share most of the prefix: where tightness bugs hide
    key = prefix[:-1] + suffix
    end = keys.prefix_end(prefix)
    assert (prefix <= key < end) == key.startswith(prefix)


def test_prefix_end_examples() -> None:
    assert keys.prefix_end(b"\x00\x01") == b"\x00\x02"
    assert keys.prefix_end(b"a\xff") == b"b"
    assert keys.prefix_end(b"\x00\xff\xff") == b"\x01"
    assert keys.prefix_end(keys.slot_prefix(0x0FFF)) == b"\x10"


@pytest.mark.parametrize("prefix", [b"", b"\xff", b"\xff\xff\xff"])
def test_prefix_end_of_only_ff_raises(prefix: bytes) -> None:
    with pytest.raises(ValueError):
        keys.prefix_end(prefix)


@PROPERTY
@given(slot=slots, owner=ids, author=ids, tweet_id=ids)
def test_delivery_keys_are_the_keys_fan_out_touches(
    slot: int, owner: int, author: int, tweet_id: int
) -> None:
    parts = [keys.u64(owner), keys.u64(owner + 1)]
    slots_ = [slot, (slot + 1) % SLOT_COUNT]
    assert keys.following_keys(slots_, parts, author) == [
        keys.following(slot, owner, author),
        keys.following(slots_[1], owner + 1, author),
    ]
    assert keys.inbox_keys(slots_, parts, tweet_id) == [
        keys.inbox(slot, owner, tweet_id),
        keys.inbox(slots_[1], owner + 1, tweet_id),
    ]

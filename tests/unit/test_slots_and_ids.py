"""Property tests for hash slots and the Snowflake-style id clock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmur import ids
from murmur.ids import (
    MAX_ID,
    MAX_SEQUENCE,
    MURMUR_EPOCH_MS,
    IdClock,
    compose_tweet_id,
    lowest_id_at,
    millis_of_id,
    now_ms,
    slot_of_tweet,
)
from murmur.slots import (
    SLOT_COUNT,
    even_assignment,
    slot_for_handle,
    slot_for_user,
    slot_ranges,
    slots_for_users,
)

# no per-example deadline: the suite must not flake on a loaded machine
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

u64s = st.integers(min_value=0, max_value=(1 << 64) - 1)
slots = st.integers(min_value=0, max_value=SLOT_COUNT - 1)
handles = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
    min_size=1,
    max_size=15,
)


@contextmanager
def frozen_time(ms: int) -> Iterator[list[int]]:
    """Pin ``murmur.ids.now_ms``; the yielded one-item list moves the clock."""
    current = [ms]
    with mock.patch.object(ids, "now_ms", lambda: current[0]):
        yield current


# slots ---------------------------------------------------------------------


@given(u64s)
@PROPERTY
def test_slot_for_user_in_range_and_deterministic(user_id: int) -> None:
    slot = slot_for_user(user_id)
    assert 0 <= slot < SLOT_COUNT
    assert slot_for_user(user_id) == slot


@given(st.lists(u64s, max_size=50))
@PROPERTY
def test_slots_for_users_is_slot_for_user_of_each(user_ids: list[int]) -> None:
    assert slots_for_users(user_ids) == [slot_for_user(u) for u in user_ids]
    assert slots_for_users(iter(user_ids)) == slots_for_users(user_ids)


def test_slots_are_pinned() -> None:
    # "fixed forever": a changed hash, seed or byte order would silently move
    # every stored user to another slot. Values of mmh3_32(u64 big-endian).
    pinned = {1: 3454, 42: 2871, 123_456_789: 547, (1 << 63) - 1: 1798}
    assert {user_id: slot_for_user(user_id) for user_id in pinned} == pinned
    assert [slot_for_handle(h) for h in ("alice", "Bob", "x_1")] == [3805, 3058, 2012]


def test_slot_for_user_spreads_over_slots() -> None:
    used = {slot_for_user(i) for i in range(20_000)}
    assert len(used) > SLOT_COUNT * 0.95


@given(handles)
@PROPERTY
def test_slot_for_handle_ignores_case(handle: str) -> None:
    slot = slot_for_handle(handle)
    assert 0 <= slot < SLOT_COUNT
    assert slot_for_handle(handle.upper()) == slot == slot_for_handle(handle.lower())


@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=64, unique=True))
@PROPERTY
def test_even_assignment_contiguous_and_balanced(shard_ids: list[int]) -> None:
    owners = even_assignment(shard_ids)
    assert len(owners) == SLOT_COUNT
    # every slot owned by one of the given shards, every shard gets slots
    assert set(owners) == set(shard_ids)
    # contiguous: each shard's slots form exactly one run
    runs: list[tuple[int, int]] = []
    for owner in owners:
        if runs and runs[-1][0] == owner:
            runs[-1] = (owner, runs[-1][1] + 1)
        else:
            runs.append((owner, 1))
    assert [owner for owner, _ in runs] == shard_ids  # one run per shard, in order
    sizes = [size for _, size in runs]
    assert sum(sizes) == SLOT_COUNT
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("count", range(1, 65))
def test_even_assignment_every_count_1_to_64(count: int) -> None:
    owners = even_assignment(list(range(count)))
    sizes = [owners.count(shard) for shard in range(count)]
    assert sum(sizes) == SLOT_COUNT
    assert max(sizes) - min(sizes) <= 1
    assert owners == sorted(owners)  # runs in shard order, hence contiguous


def test_even_assignment_needs_a_shard() -> None:
    with pytest.raises(ValueError):
        even_assignment([])


@given(st.lists(slots, max_size=300))
@PROPERTY
def test_slot_ranges_round_trip(slot_list: list[int]) -> None:
    runs = slot_ranges(slot_list)
    expanded = [s for start, end in runs for s in range(start, end + 1)]
    assert expanded == sorted(set(slot_list))
    for (_, end), (next_start, _) in zip(runs, runs[1:], strict=False):
        assert next_start > end + 1  # maximal: adjacent runs would have merged
    assert all(start <= end for start, end in runs)


def test_slot_ranges_example() -> None:
    assert slot_ranges([7, 1, 3, 2, 3]) == [(1, 3), (7, 7)]
    assert slot_ranges([]) == []


# tweet ids -----------------------------------------------------------------


@given(slots, st.integers(min_value=1, max_value=3000))
@settings(PROPERTY, max_examples=25)
def test_tweet_ids_strictly_increasing_and_carry_slot(slot: int, count: int) -> None:
    clock = IdClock()
    before = now_ms()
    minted = [clock.next_tweet_id(slot) for _ in range(count)]
    after = now_ms()
    assert all(a < b for a, b in zip(minted, minted[1:], strict=False))
    for tweet_id in minted:
        assert slot_of_tweet(tweet_id) == slot
        assert 0 < tweet_id <= MAX_ID
        # at most ~3 ms borrowed from the future when a millisecond fills up
        assert before <= millis_of_id(tweet_id) <= after + 5


@given(st.lists(slots, min_size=2, max_size=6, unique=True))
@settings(PROPERTY, max_examples=20)
def test_tweet_ids_per_slot_independent_and_unique(slot_list: list[int]) -> None:
    clock = IdClock()
    minted: dict[int, list[int]] = {slot: [] for slot in slot_list}
    for _ in range(50):
        for slot in slot_list:
            minted[slot].append(clock.next_tweet_id(slot))
    everything = [i for seq in minted.values() for i in seq]
    assert len(set(everything)) == len(everything)
    for slot, seq in minted.items():
        assert seq == sorted(seq) and len(set(seq)) == len(seq)
        assert {slot_of_tweet(i) for i in seq} == {slot}


def test_tweet_sequence_overflow_moves_to_next_millisecond() -> None:
    start = MURMUR_EPOCH_MS + 10_000_000
    with frozen_time(start):
        clock = IdClock()
        minted = [clock.next_tweet_id(5) for _ in range(3 * (MAX_SEQUENCE + 1) + 7)]
    assert all(a < b for a, b in zip(minted, minted[1:], strict=False))
    assert minted[0] == compose_tweet_id(start, 5, 0)
    assert minted[MAX_SEQUENCE] == compose_tweet_id(start, 5, MAX_SEQUENCE)
    assert minted[MAX_SEQUENCE + 1] == compose_tweet_id(start + 1, 5, 0)
    assert millis_of_id(minted[-1]) == start + 3


def test_tweet_ids_survive_clock_going_backwards() -> None:
    start = MURMUR_EPOCH_MS + 50_000_000
    with frozen_time(start) as now:
        clock = IdClock()
        first = clock.next_tweet_id(9)
        now[0] = start - 5_000  # NTP step backwards
        later = [clock.next_tweet_id(9) for _ in range(10)]
    assert first < later[0]
    assert later == sorted(set(later))
    assert all(millis_of_id(i) == start for i in later)


@given(
    st.integers(min_value=MURMUR_EPOCH_MS, max_value=MURMUR_EPOCH_MS + (1 << 41) - 1),
    slots,
    st.integers(min_value=0, max_value=MAX_SEQUENCE),
)
@PROPERTY
def test_compose_tweet_id_fields_round_trip(ms: int, slot: int, sequence: int) -> None:
    tweet_id = compose_tweet_id(ms, slot, sequence)
    assert 0 <= tweet_id <= MAX_ID  # fits 63 bits: positive as a signed int64
    assert millis_of_id(tweet_id) == ms
    assert slot_of_tweet(tweet_id) == slot
    assert tweet_id & MAX_SEQUENCE == sequence
    assert lowest_id_at(ms) <= tweet_id < lowest_id_at(ms + 1)


def test_current_ids_fit_63_bits_for_decades() -> None:
    clock = IdClock()
    tweet_id = clock.next_tweet_id(SLOT_COUNT - 1)
    assert tweet_id < (1 << 63)
    assert tweet_id.bit_length() <= 63
    year_2090 = 3_786_912_000_000
    assert compose_tweet_id(year_2090, SLOT_COUNT - 1, MAX_SEQUENCE) <= MAX_ID


# user ids ------------------------------------------------------------------


@given(slots, st.integers(min_value=1, max_value=12))
@settings(PROPERTY, max_examples=25)
def test_user_ids_land_in_slot_and_increase(slot: int, count: int) -> None:
    clock = IdClock()
    before = now_ms()
    minted = [clock.next_user_id(slot) for _ in range(count)]
    after = now_ms()
    assert all(a < b for a, b in zip(minted, minted[1:], strict=False))
    for user_id in minted:
        assert slot_for_user(user_id) == slot
        assert 0 < user_id <= MAX_ID
        assert before <= millis_of_id(user_id) <= after + 5


def test_many_user_ids_in_one_frozen_millisecond() -> None:
    start = MURMUR_EPOCH_MS + 99_000_000
    with frozen_time(start):
        clock = IdClock()
        minted = [clock.next_user_id(77) for _ in range(30)]
    assert minted == sorted(set(minted))
    assert all(slot_for_user(u) == 77 for u in minted)
    assert all(millis_of_id(u) >= start for u in minted)


# restore / floor -------------------------------------------------------------


@given(slots, st.integers(min_value=1, max_value=10_000_000))
@settings(PROPERTY, max_examples=40)
def test_restore_future_floor_beats_every_id_at_that_ms(slot: int, ahead: int) -> None:
    future = now_ms() + ahead
    clock = IdClock()
    clock.restore(slot, future)
    assert clock.known(slot)
    tweet_id = clock.next_tweet_id(slot)
    user_id = clock.next_user_id(slot)
    # greater than any id minted at ``future`` (any slot, any sequence)
    assert tweet_id >= lowest_id_at(future + 1)
    assert user_id >= lowest_id_at(future + 1)
    assert tweet_id > compose_tweet_id(future, SLOT_COUNT - 1, MAX_SEQUENCE)
    assert slot_of_tweet(tweet_id) == slot
    assert slot_for_user(user_id) == slot


@given(slots, st.integers(min_value=1, max_value=2000))
@settings(PROPERTY, max_examples=25)
def test_clock_never_goes_back_across_restart(slot: int, count: int) -> None:
    """Mint (possibly borrowing future ms), persist floor(), restart with an
    earlier wall clock: the new clock still mints larger ids."""
    start = MURMUR_EPOCH_MS + 123_000_000
    with frozen_time(start) as now:
        first = IdClock()
        old_tweets = [first.next_tweet_id(slot) for _ in range(count)]
        old_user = first.next_user_id(slot)
        floor = first.floor(slot)
        assert floor >= max(millis_of_id(i) for i in [*old_tweets, old_user])

        now[0] = start - 60_000  # the restarted host's clock is behind
        second = IdClock()
        second.restore(slot, floor)
        assert second.next_tweet_id(slot) > max(old_tweets)
        assert second.next_user_id(slot) > old_user


def test_restore_in_the_past_does_not_rewind() -> None:
    clock = IdClock()
    issued = clock.next_tweet_id(3)
    clock.restore(3, MURMUR_EPOCH_MS)
    assert clock.next_tweet_id(3) > issued


def test_floor_of_unknown_slot_is_zero() -> None:
    clock = IdClock()
    assert clock.floor(12) == 0
    assert not clock.known(12)

"""64-bit time-ordered ids, unique without coordination (Snowflake layout).

    | 41 bits: ms since MURMUR_EPOCH | 12 bits: slot | 10 bits: sequence |

A tweet id carries its author's slot, so ``GetTweet(id)`` reads one shard, and
sorting by id is sorting by time. A user id uses the same clock bits but its
low 22 bits are searched until ``slot_for_user(id)`` lands in the slot of the
user's handle; users are rare, so the ~4096 hashes this takes are cheap.

Only the shard that owns a slot mints ids for it; ``IdClock`` never goes
backwards, even across restarts, because each slot's last issued
millisecond is persisted with the write that used it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from murmur.slots import slot_for_user

MURMUR_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
SEQUENCE_BITS = 10
SLOT_BITS = 12
LOW_BITS = SEQUENCE_BITS + SLOT_BITS
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_LOW = (1 << LOW_BITS) - 1
MAX_ID = (1 << 63) - 1


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def millis_of_id(any_id: int) -> int:
    """Unix milliseconds at which an id was minted."""
    return (any_id >> LOW_BITS) + MURMUR_EPOCH_MS


def slot_of_tweet(tweet_id: int) -> int:
    """The author's slot, read from the tweet id itself."""
    return (tweet_id >> SEQUENCE_BITS) & ((1 << SLOT_BITS) - 1)


def compose_tweet_id(ms: int, slot: int, sequence: int) -> int:
    return ((ms - MURMUR_EPOCH_MS) << LOW_BITS) | (slot << SEQUENCE_BITS) | sequence


def lowest_id_at(ms: int) -> int:
    """The smallest id minted at or after Unix millisecond ``ms``."""
    return max(0, ms - MURMUR_EPOCH_MS) << LOW_BITS


@dataclass
class SlotClock:
    """Last (millisecond, counter) issued in one slot for one kind of id."""

    ms: int = 0
    counter: int = -1


class IdClock:
    """Mints tweet and user ids for the slots of one shard.

    ``floor(slot)`` is what the shard must persist alongside the write that
    uses a new id; ``restore(slot, ms)`` seeds a slot from that floor after a
    restart or a migration, so ids stay increasing.
    """

    def __init__(self) -> None:
        self._tweets: dict[int, SlotClock] = {}
        self._users: dict[int, SlotClock] = {}

    def restore(self, slot: int, ms: int) -> None:
        for table in (self._tweets, self._users):
            clock = table.setdefault(slot, SlotClock())
            if ms > clock.ms:
                clock.ms, clock.counter = ms, MAX_LOW

    def forget(self, slot: int) -> None:
        """Drop a slot's clock so it is re-read from its stored floor (after a
        slot moves here, the floor came with its data)."""
        self._tweets.pop(slot, None)
        self._users.pop(slot, None)

    def floor(self, slot: int) -> int:
        return max(self._tweets.get(slot, SlotClock()).ms, self._users.get(slot, SlotClock()).ms)

    def known(self, slot: int) -> bool:
        return slot in self._tweets

    def next_tweet_id(self, slot: int) -> int:
        clock = self._tweets.setdefault(slot, SlotClock())
        self._advance(clock, MAX_SEQUENCE)
        return compose_tweet_id(clock.ms, slot, clock.counter)

    def next_user_id(self, slot: int) -> int:
        clock = self._users.setdefault(slot, SlotClock())
        while True:
            self._advance(clock, MAX_LOW)
            base = (clock.ms - MURMUR_EPOCH_MS) << LOW_BITS
            for low in range(clock.counter, MAX_LOW + 1):
                candidate = base | low
                if slot_for_user(candidate) == slot:
                    clock.counter = low
                    return candidate
            clock.counter = MAX_LOW

    @staticmethod
    def _advance(clock: SlotClock, limit: int) -> None:
        """Step to the next counter value, moving to a later millisecond when
        the clock ticked or this millisecond is used up. Never goes back."""
        current = now_ms()
        if current > clock.ms:
            clock.ms, clock.counter = current, 0
        elif clock.counter < limit:
            clock.counter += 1
        else:
            clock.ms, clock.counter = clock.ms + 1, 0

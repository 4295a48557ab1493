"""Each home inbox's entry count and newest id, kept in memory.

Fan-out puts one entry into each follower's inbox. Writing the inbox's count
back to its metadata with every entry doubled fan-out's LevelDB writes: in a
receiving shard that applies a 2,000-follower delivery, the metadata cost
~46% of the instructions per entry (39.6k with it, 21.4k without).

Neither number decides what a reader sees (``exact_from`` does, and it stays
on disk, written in the same batch as every change to it). They decide when
an inbox is trimmed and whether a delivery needs a lookup, so they must stay
exact across crashes, evictions and slot moves. The stored metadata says
which of two states an inbox is in:

- ``counting`` cleared: its stored ``size`` is exact. A tally loads it.
- ``counting`` set: a process was counting it in memory and may have
  stopped without storing the count. A tally loads by counting the keys.

The first change to a loaded tally sets ``counting``, in the same batch as
the change: one metadata write per inbox per stay in memory, not one per
entry. A clean stop and a backup store each size and clear ``counting``.
So a tally may be dropped between transactions (evicted, its slot moved
away, a failed or abandoned transaction) at the price of one count of its
keys when it is next loaded; never while a transaction that changed it is
being built, since a load counts only what is on disk. The newest id is
learned from the inbox's first key at load.

A tally also knows, without a lookup, whether a tweet a little older than
its newest is in the inbox already: it keeps the ids put since it was
loaded above a ``floor`` (``recent``). Fan-out from two shards reaches an
inbox as two streams, each in id order, merged: a copy older than the
newest was looked up in LevelDB each time (~7 µs; 7.7% of a receiving
shard's time in a 385,120-entry burst) only to learn it was new.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

# at most this many ids above a tally's floor (then the lower half goes): a
# list of 16 costs ~190 bytes per tally, ~38 MB for the most tallies kept
RECENT_IDS = 16


@dataclass(slots=True)
class Tally:
    newest_id: int  # no entry has a larger id (0: the inbox was empty when loaded)
    size: int  # entries held, counting the puts of the transaction being built
    slot: int  # the owner's slot, so a slot that moves away takes its tallies along
    marked: bool  # the stored metadata has ``counting`` set
    # every entry with an id above ``floor`` is in ``recent``; at load the
    # floor is the newest id, so nothing is above it
    floor: int = 0
    recent: list[int] = field(default_factory=list)

    def holds(self, tweet_id: int) -> bool | None:
        """Whether the inbox holds ``tweet_id`` (no newer than ``newest_id``),
        or None when only a lookup can tell (at or below the floor)."""
        return tweet_id in self.recent if tweet_id > self.floor else None

    def added(self, tweet_id: int) -> None:
        """An entry was put: count it, and remember its id if above the floor.
        When ``recent`` fills, its lower half goes and the floor rises to the
        highest id dropped, keeping the rule above."""
        self.size += 1
        if tweet_id <= self.floor:
            return
        recent = self.recent
        recent.append(tweet_id)
        if len(recent) >= RECENT_IDS:
            recent.sort()
            half = len(recent) // 2
            self.floor = recent[half - 1]
            del recent[:half]

    def removed(self, tweet_id: int) -> None:
        """An entry was deleted: uncount it, and forget its id."""
        self.size = max(0, self.size - 1)
        if tweet_id > self.floor and tweet_id in self.recent:
            self.recent.remove(tweet_id)


class InboxTallies:
    """Tallies by inbox owner. Bounded between transactions: ``shrink``
    drops the oldest first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._tallies: dict[int, Tally] = {}
        self.get = self._tallies.get  # no Python frame in fan-out's loop

    def add(self, owner: int, tally: Tally) -> Tally:
        self._tallies[owner] = tally
        return tally

    def shrink(self) -> None:
        """Past capacity, drop the oldest tallies, down to seven eighths of
        it. Only between transactions: a tally that the transaction being
        built has changed must stay until it commits, since loaded again it
        would count the keys on disk, not that transaction's puts."""
        held = self._tallies
        if len(held) <= self.capacity:
            return
        excess = len(held) - self.capacity + max(1, self.capacity // 8)
        for old in list(itertools.islice(held, excess)):
            del held[old]

    def marked(self) -> Iterator[tuple[int, Tally]]:
        """The tallies whose stored metadata says they are being counted."""
        return ((owner, t) for owner, t in self._tallies.items() if t.marked)

    def forget_slots(self, slots: set[int]) -> None:
        """Drop the tallies of inboxes in ``slots`` (slots that moved)."""
        held = self._tallies
        for owner in [owner for owner, t in held.items() if t.slot in slots]:
            del held[owner]

    def clear(self) -> None:
        self._tallies.clear()

    def __len__(self) -> int:
        return len(self._tallies)

"""Per-user rate limits on the writes that cost others: posts (each fans out
to every follower) and follow changes (each follow copies tweets into an
inbox, each unfollow scans one).

A shard enforces them for the users it owns. Every write of a user goes to
that user's shard whichever router it came through, so one shard sees all of
a user's writes and the limit holds cluster-wide without any coordination.
State is in memory only: a restart, or a slot moving to another shard,
forgives what was spent (at most one more burst), which costs nothing on
the write path.

The rule is GCRA, the generic cell rate algorithm: a token bucket held as one
number per user, the "theoretical arrival time" at which the user's bucket
would be full again. ``limit`` writes per minute means one every
``60 / limit`` seconds sustained, and a user idle for a minute may burst
``limit`` at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from murmur.errors import ServiceError

WINDOW_S = 60.0
# forgotten users are pruned once the table doubles past this (a user whose
# bucket is full again needs no entry)
MIN_PRUNE_SIZE = 10_000


class UserRateLimiter:
    """One kind of write's per-user budget on one shard."""

    def __init__(
        self, setting: str, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.setting = setting  # the Settings field, named in refusals
        self.what = what  # "posts", "follows and unfollows"
        self.clock = clock
        self._full_at: dict[int, float] = {}
        self._prune_at = MIN_PRUNE_SIZE

    def charge(self, user_id: int, limit: int) -> None:
        """Count one write by ``user_id``, or refuse it (RESOURCE_EXHAUSTED:
        nothing was done, with the seconds until it would pass) if the user
        is over ``limit`` per minute (0: no limit). Call only when the write
        will happen: a refused or no-op write must not spend the budget."""
        if limit <= 0:
            return
        now = self.clock()
        interval = WINDOW_S / limit
        full_at = max(self._full_at.get(user_id, now), now)
        wait = full_at + interval - now - WINDOW_S
        if wait > 1e-6:  # not 0: sixty 1 s intervals may sum to a hair over 60
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"user {user_id} is over {self.setting}: at most {limit:,} {self.what} "
                f"per user per minute; retry in {max(0.1, round(wait, 1)):.1f} s",
                retry_after=wait,
            )
        self._full_at[user_id] = full_at + interval
        if len(self._full_at) >= self._prune_at:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop users whose bucket is full again: they behave as new ones."""
        self._full_at = {user: at for user, at in self._full_at.items() if at > now}
        self._prune_at = max(MIN_PRUNE_SIZE, 2 * len(self._full_at))

    def __len__(self) -> int:
        return len(self._full_at)

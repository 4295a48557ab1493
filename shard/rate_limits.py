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
``limit`` at once. Times are whole nanoseconds: float seconds summed
interval by interval drift at large limits and long uptimes (a burst of
999 for a limit of 1,000 once the clock reads 10^8 s).

A write is admitted before it is made and spent once it is committed, so a
write the disk refuses costs nothing (no handler awaits in between, so two
writes of one user cannot both be admitted on the same budget).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from murmur.errors import ServiceError
from murmur.loop_metrics import LoopCounter
from murmur.setting_limits import RATE_LIMITS

REFUSED = LoopCounter(
    "murmur_rate_limited_total",
    "Writes a per-user rate limit refused, by setting (post_rate_limit, follow_rate_limit)",
    ["setting"],
)
WINDOW_NS = 60 * 10**9
# forgotten users are pruned once the table doubles past this (a user whose
# bucket is full again needs no entry)
MIN_PRUNE_SIZE = 10_000


@dataclass(frozen=True)
class Admission:
    """A write let through, to be spent once it is committed."""

    user_id: int
    full_at_ns: int | None  # the user's bucket full again; None: no limit


UNLIMITED = Admission(0, None)  # what every write gets while its limit is 0


class UserRateLimiter:
    """One kind of write's per-user budget on one shard."""

    def __init__(self, setting: str, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.setting = setting  # the Settings field, named in refusals
        self.what = RATE_LIMITS[setting]  # "posts and edits", what it counts
        self.clock = clock
        self._refused = REFUSED.labels(setting)
        self._full_at: dict[int, int] = {}
        self._prune_at = MIN_PRUNE_SIZE

    def admit(self, user_id: int, limit: int) -> Admission:
        """Let one write by ``user_id`` through, or refuse it (RESOURCE_EXHAUSTED:
        nothing was done, with the seconds until it would pass) if the user
        is over ``limit`` per minute (0: no limit). Call only when the write
        is otherwise going to happen: a no-op write must not spend the budget."""
        if limit <= 0:
            return UNLIMITED
        now = self.clock()
        full_at = max(self._full_at.get(user_id, now), now) + WINDOW_NS // limit
        wait_s = (full_at - now - WINDOW_NS) / 1e9
        if wait_s > 0:
            self._refused.inc()
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"user {user_id} is over {self.setting}: at most {limit:,} {self.what} "
                f"per user per minute; retry in {max(0.1, round(wait_s, 1)):.1f} s",
                retry_after=wait_s,
            )
        return Admission(user_id, full_at)

    def spend(self, admission: Admission) -> None:
        """Count a write ``admit`` let through, now that it is committed."""
        if admission.full_at_ns is None:
            return
        self._full_at[admission.user_id] = admission.full_at_ns
        if len(self._full_at) >= self._prune_at:
            self._prune(self.clock())

    def _prune(self, now: int) -> None:
        """Drop users whose bucket is full again: they behave as new ones."""
        self._full_at = {user: at for user, at in self._full_at.items() if at > now}
        self._prune_at = max(MIN_PRUNE_SIZE, 2 * len(self._full_at))

    def __len__(self) -> int:
        return len(self._full_at)

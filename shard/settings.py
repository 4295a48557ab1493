"""Runtime settings of a shard and the celebrity rule they imply."""

from __future__ import annotations

from dataclasses import dataclass

NEVER = (1 << 63) - 1  # a celebrity threshold no account reaches


@dataclass
class ShardSettings:
    """What operators may tune; defaults follow the architecture brief."""

    celebrity_threshold: int = 10_000
    inbox_cap: int = 800
    backfill_limit: int = 200
    fanout_batch_entries: int = 4_000


def demotion_line(threshold: int) -> int:
    """Followers below which a celebrity stops being one.

    10% under the promotion threshold (at least 1), so an account hovering at
    the line does not flap between fan-out on write and on read.
    """
    if threshold <= 0:
        return 0
    return threshold - max(1, threshold // 10)


def is_celebrity(currently: bool, followers: int, threshold: int) -> bool:
    """The celebrity flag after a follower count change, with hysteresis."""
    if currently:
        return followers >= demotion_line(threshold)
    return followers >= threshold

"""Runtime settings of a shard and the celebrity rule they imply (the values
they may take: ``murmur/setting_limits.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from murmur.setting_limits import DEFAULT_RATE_LIMIT, check_value
from murmur.v1 import shard_pb2


@dataclass
class ShardSettings:
    """What operators may tune; defaults follow the architecture brief."""

    celebrity_threshold: int = 10_000
    inbox_cap: int = 800
    backfill_limit: int = 200
    post_rate_limit: int = DEFAULT_RATE_LIMIT  # per user per minute; 0 = no limit
    follow_rate_limit: int = DEFAULT_RATE_LIMIT
    fanout_batch_entries: int = 4_000


def demotion_line(threshold: int) -> int:
    """Followers below which a celebrity stops being one.

    10% under the promotion threshold (at least 1), so an account hovering at
    the line does not flap between fan-out on write and on read.
    """
    if threshold <= 0:
        return 0
    return max(1, threshold - max(1, threshold // 10))  # at 1, an account with none demotes


def is_celebrity(currently: bool, followers: int, threshold: int) -> bool:
    """The celebrity flag after a follower count change, with hysteresis."""
    if currently:
        return followers >= demotion_line(threshold)
    return followers >= threshold


RUNTIME_FIELDS = (
    "celebrity_threshold",
    "inbox_cap",
    "backfill_limit",
    "post_rate_limit",
    "follow_rate_limit",
)


def to_message(settings: ShardSettings) -> shard_pb2.Settings:
    return shard_pb2.Settings(**{name: getattr(settings, name) for name in RUNTIME_FIELDS})


def apply_update(settings: ShardSettings, update: shard_pb2.UpdateSettingsRequest) -> list[str]:
    """Copy the fields set in ``update``; returns the names that changed."""
    changed = []
    for name in RUNTIME_FIELDS:
        if update.HasField(name) and getattr(update, name) != getattr(settings, name):
            setattr(settings, name, getattr(update, name))
            changed.append(name)
    return changed


def check_update(update: shard_pb2.UpdateSettingsRequest) -> None:
    for name in RUNTIME_FIELDS:
        if update.HasField(name):
            check_value(name, getattr(update, name))

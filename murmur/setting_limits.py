"""The values each runtime setting may take: one table for the shards'
UpdateSettings, every program's start-up flags and murmur-admin, so a bad
value is refused by the first thing that reads it, with the same message."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

NEVER = (1 << 63) - 1  # a celebrity threshold no account reaches

LIMITS = {
    "celebrity_threshold": (0, NEVER),
    "inbox_cap": (1, 100_000),  # 0 would trim every inbox away: fan-out on read by stealth
    "backfill_limit": (0, 10_000),
    "post_rate_limit": (0, 1_000_000),  # per user per minute; 0 = no limit
    "follow_rate_limit": (0, 1_000_000),
}


# the per-user rate limits and what each counts (in refusals, flags' help);
# per user per minute: 5 a second sustained stops a runaway loop (which
# would post thousands a second, each fanned out to every follower) while
# no person, and few bots, ever meet it
DEFAULT_RATE_LIMIT = 300
RATE_LIMITS = {
    "post_rate_limit": "posts and edits",
    "follow_rate_limit": "follows and unfollows",
}


def flag_for(name: str) -> str:
    """The command-line flag of a setting (``post_rate_limit`` ->
    ``--post-rate-limit``), for parsers and for launchers passing it on."""
    return "--" + name.replace("_", "-")


def add_rate_limit_flags(parser: argparse.ArgumentParser, stored: str = "") -> None:
    """--post-rate-limit and --follow-rate-limit, held to the settings' limits."""
    for name, what in RATE_LIMITS.items():
        parser.add_argument(
            flag_for(name),
            type=setting_flag(name),
            default=None,
            help=f"{what} one user may make per minute "
            f"({DEFAULT_RATE_LIMIT}; 0 = no limit){stored}",
        )


def holds_setting(settings: Any, name: str) -> bool:
    """Whether a Settings message carries ``name``: one written, or sent, by
    a Murmur from before a setting existed lacks it (proto3 would read 0,
    which for a rate limit means none)."""
    field = settings.DESCRIPTOR.fields_by_name[name]
    return not field.has_presence or settings.HasField(name)


def check_value(name: str, value: int) -> None:
    """Reject a value that would break the service, naming the setting."""
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise ValueError(f"{name} is {value}; it must be {low}-{high}")


def setting_flag(name: str) -> Callable[[str], int]:
    """An argparse type for a setting's start-up flag: held to the limits
    UpdateSettings keeps (a bad value would otherwise outlive the flag, or
    fail after the store opened or the cluster started)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        try:
            check_value(name, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse

"""The shard's runtime settings: the limits UpdateSettings and the start-up
flags share, and the celebrity rule's hysteresis at its edges."""

from __future__ import annotations

import pytest

from murmur.setting_limits import NEVER
from murmur.v1 import shard_pb2
from shard.main import MAX_SHARD_ID, parse_args
from shard.settings import check_update, is_celebrity


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--inbox-cap", "0", "inbox_cap is 0; it must be 1-100000"),
        ("--inbox-cap", "100001", "inbox_cap is 100001; it must be 1-100000"),
        ("--inbox-cap", "-1", "inbox_cap is -1; it must be 1-100000"),
        ("--celebrity-threshold", "-1", f"celebrity_threshold is -1; it must be 0-{NEVER}"),
        ("--celebrity-threshold", str(NEVER + 1), "it must be 0-"),
        ("--celebrity-threshold", "many", "'many' is not a whole number"),
        ("--shard-id", str(MAX_SHARD_ID + 1), f"is not a shard id (0 to {MAX_SHARD_ID})"),
        ("--shard-id", "-1", "-1 is not a shard id"),
    ],
)
def test_a_setting_flag_out_of_range_is_a_usage_error(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flag's value is stored in the data folder: one the service would
    refuse through UpdateSettings must not get in by the command line."""
    with pytest.raises(SystemExit) as exited:
        parse_args(["--data-dir", "x", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and message in err


def test_setting_flags_in_range_are_taken() -> None:
    args = parse_args(
        ["--data-dir", "x", "--inbox-cap", "1", "--celebrity-threshold", "0", "--shard-id", "7"]
    )
    assert (args.inbox_cap, args.celebrity_threshold, args.shard_id) == (1, 0, 7)


def test_update_settings_and_flags_share_the_limits() -> None:
    with pytest.raises(ValueError, match="inbox_cap is 0; it must be 1-100000"):
        check_update(shard_pb2.UpdateSettingsRequest(inbox_cap=0))
    with pytest.raises(ValueError, match="backfill_limit is 10001; it must be 0-10000"):
        check_update(shard_pb2.UpdateSettingsRequest(backfill_limit=10_001))
    check_update(shard_pb2.UpdateSettingsRequest(celebrity_threshold=NEVER, inbox_cap=100_000))


@pytest.mark.parametrize(
    ("threshold", "followers", "stays"),
    [(1, 0, False), (1, 1, True), (2, 0, False), (2, 1, True), (30, 26, False), (30, 27, True)],
)
def test_a_celebrity_is_demoted_below_the_line(threshold: int, followers: int, stays: bool) -> None:
    """10% under the threshold, and at a threshold of 1 an account left
    with no follower at all is no longer a celebrity."""
    assert is_celebrity(True, followers, threshold) is stays


def test_a_threshold_of_zero_makes_everyone_a_celebrity() -> None:
    assert is_celebrity(False, 0, 0) and is_celebrity(True, 0, 0)

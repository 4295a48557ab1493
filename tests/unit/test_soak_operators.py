"""The soak's operators (tests/faults/operators.py): a failed action is
excused only by a kill that overlapped it; the threshold flipper cycles; the
celebrity flags are checked against the threshold rule."""

from __future__ import annotations

import grpc
import pytest

from client.errors import exception_class_for
from tests.faults import operators
from tests.faults.operators import (
    AFTERMATH_S,
    KillWindows,
    ThresholdFlipper,
    interrupted,
    wrong_statuses,
)


def test_a_move_is_excused_only_by_a_kill_during_it_or_just_before(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(operators.time, "monotonic", lambda: clock[0])
    kills = KillWindows()
    with kills.down():
        assert kills.overlap(90.0, 100.0)  # a process is down right now
        clock[0] = 102.0  # restarted at 102

    assert kills.overlap(99.0, 101.0)  # the move ran while it was down
    assert kills.overlap(102.0 + AFTERMATH_S - 1, 200.0)  # began just after the restart
    assert not kills.overlap(102.0 + AFTERMATH_S + 1, 200.0)  # long after
    assert not kills.overlap(50.0, 99.0)  # ended before the kill


@pytest.mark.parametrize(
    ("code", "message", "excused"),
    [
        ("UNAVAILABLE", "shard 2 is unavailable", True),
        ("FAILED_PRECONDITION", "shard 0 has not settled the hand-over of slots 3", True),
        ("FAILED_PRECONDITION", "shard 0 does not own slot 7", False),
        ("INVALID_ARGUMENT", "slots must be 1 or more", False),
    ],
)
def test_only_failures_a_kill_can_cause_are_excused(code: str, message: str, excused: bool):
    status = grpc.StatusCode[code]
    assert interrupted(exception_class_for(status)(message, status)) is excused


def test_the_flipper_cycles_through_its_thresholds_and_settles_on_the_last() -> None:
    class Admin:
        def __init__(self) -> None:
            self.asked: list[int] = []

        def update_settings(self, *, celebrity_threshold: int) -> None:
            self.asked.append(celebrity_threshold)

    admin = Admin()
    flipper = ThresholdFlipper(lambda: "", "token", 1.0, KillWindows(), thresholds=(200, 120))
    for _ in range(3):
        flipper.act(admin)  # type: ignore[arg-type]

    assert admin.asked == [120, 200, 120]
    assert flipper.settle(admin) == 120 and admin.asked[-1] == 120  # type: ignore[arg-type]


def test_a_flag_is_wrong_only_outside_the_hysteresis_band() -> None:
    users = {
        1: (True, 130),  # a celebrity at 130 under 120: right
        2: (False, 130),  # ordinary at 130 under 120: should have been promoted
        3: (True, 110),  # a celebrity at 110: above the demotion line (108), right
        4: (True, 100),  # a celebrity under the demotion line: wrong
        5: (False, 110),  # ordinary under the threshold: right
    }
    assert wrong_statuses(users, 120) == [2, 4]

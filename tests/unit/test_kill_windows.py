"""The soak excuses a failed slot move only by a kill that overlapped it
(tests/faults/slot_shuffle.py)."""

from __future__ import annotations

import grpc
import pytest

from client.errors import exception_class_for
from tests.faults import slot_shuffle
from tests.faults.slot_shuffle import AFTERMATH_S, KillWindows, interrupted


def test_a_move_is_excused_only_by_a_kill_during_it_or_just_before(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(slot_shuffle.time, "monotonic", lambda: clock[0])
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

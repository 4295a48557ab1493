"""The ``rpc`` wrapper's account of a call gRPC cancels under its handler:
the call log and metrics must say how it ended, not OK."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from murmur import rpc_errors


class Context:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


class Servicer:
    component = "router"
    service_name = "Murmur"

    @rpc_errors.rpc
    async def GetUser(self, request: Any, context: Any) -> None:
        raise asyncio.CancelledError


@pytest.mark.parametrize(
    ("remaining", "code"),
    [(-0.01, grpc.StatusCode.DEADLINE_EXCEEDED), (3.0, grpc.StatusCode.CANCELLED)],
)
def test_a_cancelled_call_is_counted_with_how_it_ended(monkeypatch, remaining, code) -> None:
    seen: list[grpc.StatusCode] = []
    monkeypatch.setattr(rpc_errors, "observe_call", lambda _c, _s, _m, got, *rest: seen.append(got))
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(Servicer().GetUser(object(), Context(remaining)))
    assert seen == [code]

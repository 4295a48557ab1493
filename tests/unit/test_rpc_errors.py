"""The ``rpc`` wrapper's account of a call gRPC cancels under its handler:
the call log and metrics must say how it ended, not OK."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import grpc
import plyvel
import pytest

from murmur import rpc_errors
from murmur.errors import ServiceError
from murmur.observability import observe_call
from murmur.slots import even_assignment
from murmur.v1 import murmur_pb2, shard_pb2
from server.servicer import MurmurServicer
from server.shard_pool import ShardPool
from server.slot_map import RoutingTable


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


class Aborted(Exception):
    """What a real context's ``abort`` does: end the handler."""


class StreamContext(Context):
    def __init__(self) -> None:
        super().__init__(3.0)
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise Aborted


async def relay(context: StreamContext, failure: BaseException) -> list[int]:
    async def items():
        yield 1
        raise failure

    got: list[int] = []
    with pytest.raises(Aborted):
        async for item in rpc_errors.streamed(context, items(), "router admin", "Rebalance"):
            got.append(item)
    return got


def test_a_surprise_in_a_stream_is_internal_pointing_at_the_log(caplog) -> None:
    """gRPC aio lets an exception escape a stream handler to the event loop;
    a SystemExit there ended the router. The caller gets INTERNAL, the log
    the stack."""
    context = StreamContext()
    assert asyncio.run(relay(context, RuntimeError("bug"))) == [1]
    assert context.aborted == (
        grpc.StatusCode.INTERNAL,
        "internal error in router admin while serving Rebalance; see its log",
    )
    [record] = [r for r in caplog.records if r.name == "murmur.rpc"]
    assert record.exc_info is not None and "RuntimeError: bug" in caplog.text


def test_a_service_error_in_a_stream_keeps_its_code() -> None:
    context = StreamContext()
    failure = ServiceError(grpc.StatusCode.UNAVAILABLE, "shard 2 is down")
    asyncio.run(relay(context, failure))
    assert context.aborted == (grpc.StatusCode.UNAVAILABLE, "shard 2 is down")


@pytest.mark.parametrize(
    ("failure", "code", "reason"),
    [
        (
            plyvel.IOError(b"IO error: /d/000003.log: File too large"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "IO error: /d/000003.log: File too large",
        ),
        (
            plyvel.IOError(b"IO error: /d/000003.log: No space left on device"),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "IO error: /d/000003.log: No space left on device",
        ),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        (
            plyvel.IOError(b"IO error: /d/000003.log: Input/output error"),
            grpc.StatusCode.UNAVAILABLE,
            "IO error: /d/000003.log: Input/output error",
        ),
    ],
)
def test_a_storage_failure_says_whether_room_must_be_made(failure, code, reason) -> None:
    """A full disk, a quota or a file-size limit: RESOURCE_EXHAUSTED (room
    must be made); another disk error: UNAVAILABLE. LevelDB's message is
    shown as text, not as Python bytes."""
    context = StreamContext()
    asyncio.run(relay(context, failure))
    assert context.aborted is not None
    got_code, message = context.aborted
    assert got_code == code
    assert message.startswith("router admin cannot write to its storage: ")
    assert reason in message and "b'" not in message


def test_a_failed_lookup_by_handle_is_logged_with_its_handle_and_shard(caplog) -> None:
    """Calls by id named their shard; CreateUser and GetUser by handle did not."""
    table = RoutingTable(
        shard_pb2.SlotMap(version=1, addresses={0: "a", 1: "b"}, owners=even_assignment([0, 1]))
    )
    router = MurmurServicer(table, ShardPool(table))
    request = murmur_pb2.GetUserRequest(handle="Alice" + "x" * 100)
    with caplog.at_level(logging.WARNING, logger="murmur.calls"):
        observe_call(
            "router",
            "Murmur",
            "GetUser",
            grpc.StatusCode.UNAVAILABLE,
            0.01,
            request,
            router.shard_of,
        )
    [record] = [r for r in caplog.records if r.name == "murmur.calls"]
    assert record.fields["handle"] == ("Alice" + "x" * 100)[:20]
    assert record.fields["shard"] == table.shard_for_handle(request.handle)
    assert router.shard_of(murmur_pb2.GetUserRequest()) is None

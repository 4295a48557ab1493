"""Runs a batch of Shard calls that the router coalesced into one Execute.

Each call goes through the same handler as a direct call, with a context that
captures its status instead of ending the RPC, so a bad call fails alone and
the others in the batch still succeed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from google.protobuf import message_factory

from murmur.errors import WRONG_SLOT_METADATA
from murmur.v1 import shard_pb2

log = logging.getLogger("murmur.shard.execute")
_SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"]
_NOT_BATCHABLE = {"Execute", "AssignSlots", "UpdateSettings"}
REQUEST_TYPES = {
    method.name: message_factory.GetMessageClass(method.input_type)
    for method in _SERVICE.methods
    if method.name not in _NOT_BATCHABLE and not method.server_streaming
}

# Handlers that never await: awaiting one runs it to its end at once, so a
# batch runs them in place instead of paying a task each (~10% of a batched
# read). tests/unit/test_batch_execute.py checks that they hold no await.
RUN_INLINE = frozenset(
    {"Ping", "GetUsers", "GetUserByHandle", "GetTweets", "PullTimelines", "ReadInbox"}
)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CapturingContext:
    """The part of ServicerContext the handlers use, recording the outcome."""

    def __init__(self, remaining: float | None) -> None:
        self.trailing: tuple = ()
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining

    def set_trailing_metadata(self, trailing: tuple) -> None:
        self.trailing = tuple(trailing)

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise _Aborted(code, message)


async def run_call(
    servicer: Any, call: shard_pb2.ShardCall, remaining: float | None
) -> shard_pb2.ShardCallResult:
    request_type = REQUEST_TYPES.get(call.method)
    if request_type is None:
        return shard_pb2.ShardCallResult(
            code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
            message=f"method {call.method!r} cannot run inside Execute",
        )
    try:
        request = request_type.FromString(call.request)
    except Exception:
        return shard_pb2.ShardCallResult(
            code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
            message=f"request for {call.method} does not parse",
        )
    context = CapturingContext(remaining)
    try:
        response = await getattr(servicer, call.method)(request, context)
    except _Aborted as aborted:
        return shard_pb2.ShardCallResult(
            code=aborted.code.value[0],
            message=aborted.message,
            wrong_slot=any(key == WRONG_SLOT_METADATA for key, _ in context.trailing),
        )
    except Exception:  # one broken call must not fail its neighbours
        log.exception("call %s inside Execute failed", call.method)
        return shard_pb2.ShardCallResult(
            code=grpc.StatusCode.INTERNAL.value[0],
            message=f"internal error while serving {call.method}; see the shard's log",
        )
    return shard_pb2.ShardCallResult(response=response.SerializeToString())


async def run_batch(
    servicer: Any, request: shard_pb2.ExecuteRequest, remaining: float | None
) -> shard_pb2.ExecuteResponse:
    """Reads run one after another, each to its end; writes run as tasks
    together, so that they share one group commit. All the calls of a batch
    were in flight at once, so any order between them is a valid one."""
    calls = request.calls
    results: list[shard_pb2.ShardCallResult | None] = [None] * len(calls)
    writes = []
    for index, call in enumerate(calls):
        if call.method in RUN_INLINE:
            results[index] = await run_call(servicer, call, remaining)
        else:
            writes.append(index)
    if writes:
        done = await asyncio.gather(*(run_call(servicer, calls[i], remaining) for i in writes))
        for index, result in zip(writes, done, strict=True):
            results[index] = result
    return shard_pb2.ExecuteResponse(results=results)

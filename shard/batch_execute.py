"""Runs a batch of Shard calls that the router coalesced into one Execute,
or into one message of an ExecuteStream.

Each call goes through the same handler as a direct call, with a context that
captures its status instead of ending the RPC, so a bad call fails alone and
the others in the batch still succeed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import message_factory

from murmur.errors import WRONG_SLOT_METADATA
from murmur.registration import Unparseable
from murmur.retry_info import retry_after
from murmur.serving import GRACE_S
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


def _retry_after_ms(trailing: tuple) -> int:
    """A rate limit's wait, rounded up so a caller that waits it is let through."""
    seconds = retry_after(trailing)
    return 0 if seconds is None else max(1, math.ceil(seconds * 1000))


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
            retry_after_ms=_retry_after_ms(context.trailing),
        )
    except Exception:  # one broken call must not fail its neighbours
        log.exception("call %s inside Execute failed", call.method)
        return shard_pb2.ShardCallResult(
            code=grpc.StatusCode.INTERNAL.value[0],
            message=f"internal error while serving {call.method}; see the shard's log",
        )
    return shard_pb2.ShardCallResult(response=response.SerializeToString())


async def run_calls(
    servicer: Any, calls: Sequence[shard_pb2.ShardCall], remaining: float | None
) -> list[shard_pb2.ShardCallResult]:
    """Reads run one after another, each to its end; writes run as tasks
    together, so that they share one group commit. All the calls of a batch
    were in flight at once, so any order between them is a valid one."""
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
    return results  # type: ignore[return-value]


class BatchStream:
    """One router's ExecuteStream: each message is a batch, answered by id.

    A batch of reads only runs in the reading loop itself (its handlers never
    await, so nothing waits behind it); a batch with writes runs as a task,
    so that the next batches are read while it waits for its group commit.
    Answers go out one at a time: a gRPC call takes one write at once.
    """

    def __init__(self, servicer: Any, context: grpc.aio.ServicerContext) -> None:
        self.servicer = servicer
        self.context = context
        self.running: set[asyncio.Task] = set()
        self.writing = asyncio.Lock()
        self.closing = False

    async def serve(self, requests: AsyncIterator[Any]) -> None:
        async for message in requests:
            if isinstance(message, Unparseable):  # its id is unknown: end the stream
                await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.message)
            if self.closing:
                await self._answer(message.id, [self._stopping()] * len(message.calls))
            elif all(call.method in RUN_INLINE for call in message.calls):
                await self._answer(message.id, await self._run(message))
            else:
                task = asyncio.get_running_loop().create_task(self._run_and_answer(message))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
        await self.finish_running()  # the router closed its side

    async def close(self) -> None:
        """Answer the batches already running, then end the stream with
        UNAVAILABLE: the router fails what it sent meanwhile, and its next
        batch opens a new stream (to this shard's replacement)."""
        self.closing = True
        await self.finish_running()
        async with self.writing:  # not in the middle of an answer
            try:
                await self.context.abort(
                    grpc.StatusCode.UNAVAILABLE, f"{_component(self.servicer)} is stopping"
                )
            except grpc.aio.AbortError:
                pass  # raised in whoever aborts; the status is on its way
            except Exception as exc:  # the caller hung up first: nobody to tell
                log.info("stream already ended while stopping (%s)", type(exc).__name__)

    async def finish_running(self) -> None:
        while self.running:
            await asyncio.gather(*list(self.running), return_exceptions=True)

    async def _run(self, message: shard_pb2.ExecuteStreamRequest) -> list:
        return await run_calls(self.servicer, message.calls, message.timeout_s or None)

    async def _run_and_answer(self, message: shard_pb2.ExecuteStreamRequest) -> None:
        results = await self._run(message)
        try:
            await self._answer(message.id, results)
        except Exception as exc:  # the stream is gone; the router fails the batch itself
            log.info("could not answer batch %d: the stream ended (%s)", message.id, exc)

    async def _answer(self, batch_id: int, results: list) -> None:
        response = shard_pb2.ExecuteStreamResponse(id=batch_id, results=results)
        async with self.writing:
            await self.context.write(response)

    def _stopping(self) -> shard_pb2.ShardCallResult:
        return shard_pb2.ShardCallResult(
            code=grpc.StatusCode.UNAVAILABLE.value[0],
            message=f"{_component(self.servicer)} is stopping; retry once it is back",
        )


class BatchStreams:
    """The ExecuteStreams open on this shard. Callers never close theirs, so
    a stopping shard ends them itself instead of waiting out its grace period,
    and refuses the streams that callers open meanwhile."""

    def __init__(self, servicer: Any) -> None:
        self.servicer = servicer
        self.open: set[BatchStream] = set()
        self.closing = False

    async def serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        if self.closing:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"{_component(self.servicer)} is stopping"
            )
        stream = BatchStream(self.servicer, context)
        self.open.add(stream)
        try:
            await stream.serve(requests)
        finally:
            self.open.discard(stream)

    async def close(self) -> None:
        """End every stream, giving the batches already running up to the
        server's grace period to answer; the server's own stop does the rest."""
        self.closing = True
        closing = asyncio.gather(*(stream.close() for stream in list(self.open)))
        try:
            await asyncio.wait_for(closing, GRACE_S)
        except TimeoutError:
            log.warning("batches still running after %.0f s; stopping without them", GRACE_S)


def _component(servicer: Any) -> str:
    """How the shard names itself in messages ("shard 2")."""
    return getattr(servicer, "component", "the shard")

"""Run an *aio* servicer under ``grpc_testing``'s synchronous test server.

``grpc_testing`` calls plain (sync) behaviours on a fresh thread per RPC and
hands them a sync ``ServicerContext``. Murmur's servicers are ``async def``
methods that ``await context.abort(...)``. This adapter bridges the two:

* every unary-unary method of the service becomes a sync method that runs the
  coroutine on one persistent event loop (``loop.run_until_complete``), so
  loop-bound objects the servicer holds (the outbox's ``asyncio.Event``) live
  on a single loop for the whole test, and calls are serialised by a lock;
* the context is wrapped so ``await context.abort(code, details)`` behaves as
  in ``grpc.aio``: it records the status and raises ``grpc.aio.AbortError``,
  and any trailing metadata set before the abort is kept. (``grpc_testing``'s
  own ``abort`` drops pending trailing metadata, which would hide
  ``murmur-wrong-slot``.)
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor


class AioContext:
    """An aio-style view of a ``grpc_testing`` servicer context."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self.aborted = False

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if code is grpc.StatusCode.OK:
            raise ValueError("abort() needs a non-OK status code")
        if trailing_metadata:
            self._context.set_trailing_metadata(trailing_metadata)
        self._context.set_code(code)
        self._context.set_details(details)
        self.aborted = True
        raise grpc.aio.AbortError(f"{code.name}: {details}")

    def set_trailing_metadata(self, trailing_metadata: tuple[tuple[str, str], ...]) -> None:
        self._context.set_trailing_metadata(trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._context.set_code(code)

    def set_details(self, details: str) -> None:
        self._context.set_details(details)

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class SyncServicerAdapter:
    """A sync servicer for ``grpc_testing`` whose methods drive an aio servicer.

    Unary-unary handlers may be coroutines (or plain functions, such as the
    generated base class's UNIMPLEMENTED stubs); unary-stream handlers may be
    async generators. Client-streaming methods are not adapted.
    """

    def __init__(self, aio_servicer: Any, service: ServiceDescriptor) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        for method in service.methods:
            handler = getattr(aio_servicer, method.name)
            if method.client_streaming:
                wrapped = self._unsupported(method.full_name)
            elif method.server_streaming:
                wrapped = self._wrap_stream(handler)
            else:
                wrapped = self._wrap_unary(handler)
            setattr(self, method.name, wrapped)

    def _run(self, awaitable: Any) -> Any:
        with self._lock:
            return self.loop.run_until_complete(awaitable)

    def _wrap_unary(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            aio_context = AioContext(context)
            try:
                result = handler(request, aio_context)
                if inspect.isawaitable(result):
                    result = self._run(result)
                return result
            except grpc.aio.AbortError:
                if not aio_context.aborted:
                    raise
                # Status, details and trailing metadata are already set on
                # the context; completing with no response reports them.
                return None

        behaviour.__name__ = getattr(handler, "__name__", "behaviour")
        return behaviour

    def _wrap_stream(self, handler: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            aio_context = AioContext(context)
            try:
                result = handler(request, aio_context)
                if inspect.isawaitable(result):
                    raise NotImplementedError("context.write() streaming is not adapted")
                if not inspect.isasyncgen(result):
                    yield from result
                    return
                while True:
                    try:
                        item = self._run(result.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
            except grpc.aio.AbortError:
                if not aio_context.aborted:
                    raise

        behaviour.__name__ = getattr(handler, "__name__", "behaviour")
        return behaviour

    @staticmethod
    def _unsupported(name: str) -> Callable[..., Any]:
        def behaviour(*_args: Any) -> Any:
            raise NotImplementedError(f"{name}: client streaming is not adapted")

        return behaviour

    def close(self) -> None:
        """Let background tasks (group-commit flushers) finish, then close."""
        with self._lock:
            loop = self.loop
            if loop.is_closed():
                return
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

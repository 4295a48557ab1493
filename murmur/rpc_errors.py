"""Turns ``ServiceError`` and surprises into gRPC statuses for aio servicers."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import plyvel

from murmur.errors import ServiceError, StorageFailed
from murmur.observability import observe_call
from murmur.registration import Unparseable
from murmur.retry_info import retry_trailer
from murmur.validation import InvalidInput

log = logging.getLogger("murmur.rpc")
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def rpc(method: Handler) -> Handler:
    """Decorate an aio servicer method so every failure is a clear status.

    Known failures keep their code and message; anything unexpected is logged
    with its stack here and reaches the caller as INTERNAL without the stack.
    The servicer's ``component`` attribute names it in messages ("shard 2").
    """

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        component = getattr(self, "component", type(self).__name__)
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Unparseable):
                raise InvalidInput(request.message)
            return await method(self, request, context)
        except ServiceError as exc:
            code = exc.code
            trailing = _trailing(exc)
            if trailing:
                context.set_trailing_metadata(trailing)
            await _abort(context, exc.code, exc.message)
        except InvalidInput as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT
            await _abort(context, code, str(exc))
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except asyncio.CancelledError:  # the caller went away, or its deadline passed
            code = _cancelled_code(context)
            raise
        except Exception as exc:
            code, message = _unexpected(exc, component, method.__name__)
            await _abort(context, code, message)
        finally:
            observe_call(
                component,
                getattr(self, "service_name", type(self).__name__),
                method.__name__,
                code,
                time.perf_counter() - started,
                request,
                getattr(self, "shard_of", None),
            )

    return wrapper  # type: ignore[return-value]


def _trailing(exc: ServiceError) -> tuple:
    """The error's own trailers, and when a rate limit refused the call, the
    RetryInfo saying when to come back."""
    if exc.retry_after is None:
        return exc.trailing
    return (*exc.trailing, retry_trailer(exc.code, exc.message, exc.retry_after))


# a disk that is full, or a quota or file-size limit reached: room must be
# made, so callers hear RESOURCE_EXHAUSTED rather than a transient failure
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
STORAGE_FULL_WORDS = ("no space", "quota", "file too large")


def storage_reason(exc: BaseException) -> str:
    """A storage error as text: plyvel's carry LevelDB's message as bytes,
    an OSError its errno first (a bare "2" told an operator nothing)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def storage_full(exc: BaseException) -> bool:
    """Whether a storage error says there is no room (LevelDB reports only
    its message, so that is read too)."""
    if getattr(exc, "errno", None) in STORAGE_FULL_ERRNOS:
        return True
    reason = storage_reason(exc).lower()
    return any(word in reason for word in STORAGE_FULL_WORDS)


def _unexpected(exc: Exception, component: str, method: str) -> tuple[grpc.StatusCode, str]:
    """Status and message for a failure no handler reported itself, logged
    here (with the stack when it is a bug) since the caller sees no stack.

    Storage failures are UNAVAILABLE (RESOURCE_EXHAUSTED when the disk is
    full) so that callers retry elsewhere or later; anything else is a bug,
    INTERNAL, and the message sends the operator to the log."""
    if isinstance(exc, StorageFailed):  # the shard's storage fence (shard/storage_fence.py)
        log.error("%s: %s: %s", component, method, exc)
        return grpc.StatusCode.UNAVAILABLE, f"{component} {exc}"
    if isinstance(exc, plyvel.Error | OSError):
        reason = storage_reason(exc)
        log.error("%s: storage failure in %s: %s", component, method, reason)
        full = storage_full(exc)
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
        return code, f"{component} cannot write to its storage: {reason}"
    log.error("%s: %s failed", component, method, exc_info=exc)
    return (
        grpc.StatusCode.INTERNAL,
        f"internal error in {component} while serving {method}; see its log",
    )


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> None:
    """Abort the call; if it already ended (its deadline passed while we
    worked), there is nobody to tell: end the handler quietly."""
    try:
        await context.abort(code, message)
    except grpc.aio.InternalError:
        raise asyncio.CancelledError from None


def _cancelled_code(context: Any) -> grpc.StatusCode:
    """How a call that gRPC cancelled under its handler ended, for the call
    log and metrics (which would otherwise count it OK)."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _aborted_code(context: Any) -> grpc.StatusCode:
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


async def refuse_unparseable(request: Any, context: Any) -> None:
    """For streaming handlers, which the ``rpc`` wrapper does not cover."""
    if isinstance(request, Unparseable):
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def streamed(
    context: Any, items: AsyncIterator, component: str = "server", method: str | None = None
) -> AsyncIterator:
    """Relay a server stream, turning failures into a status as unary calls get
    (the ``rpc`` wrapper covers unary handlers only).

    Anything unexpected must end as a status too: gRPC aio lets an exception
    escape a stream handler to the event loop, and a BaseException (such as
    SystemExit) ends the whole process. ``component`` and ``method`` name
    the failure in the message and the log (``method`` defaults to the
    generator's name)."""
    name = method or getattr(items, "__name__", "a stream")
    try:
        async for item in items:
            yield item
    except ServiceError as exc:
        await _abort(context, exc.code, exc.message)
    except InvalidInput as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except grpc.aio.AioRpcError as exc:
        await _abort(context, exc.code(), exc.details() or exc.code().name)
    except grpc.aio.AbortError:  # the handler already chose its status
        raise
    except Exception as exc:
        code, message = _unexpected(exc, component, name)
        await _abort(context, code, message)

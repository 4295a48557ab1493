"""Turns ``ServiceError`` and surprises into gRPC statuses for aio servicers."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import plyvel

from murmur.errors import ServiceError
from murmur.observability import observe_call
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
            return await method(self, request, context)
        except ServiceError as exc:
            code = exc.code
            if exc.trailing:
                context.set_trailing_metadata(exc.trailing)
            await context.abort(exc.code, exc.message)
        except InvalidInput as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT
            await context.abort(code, str(exc))
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except (plyvel.Error, OSError) as exc:
            log.error("%s: storage failure in %s: %s", component, method.__name__, exc)
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if "space" in str(exc).lower()
                else grpc.StatusCode.UNAVAILABLE
            )
            await context.abort(code, f"{component} cannot write to its storage: {exc}")
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s: %s failed", component, method.__name__)
            await context.abort(
                code,
                f"internal error in {component} while serving {method.__name__}; see its log",
            )
        finally:
            observe_call(
                component,
                getattr(self, "service_name", type(self).__name__),
                method.__name__,
                code,
                time.perf_counter() - started,
                request,
            )

    return wrapper  # type: ignore[return-value]


def _aborted_code(context: Any) -> grpc.StatusCode:
    code = context.code() if hasattr(context, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN

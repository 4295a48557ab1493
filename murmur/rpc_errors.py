"""Turns ``ServiceError`` and surprises into gRPC statuses for aio servicers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import plyvel

from murmur.errors import ServiceError
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
        try:
            return await method(self, request, context)
        except ServiceError as exc:
            if exc.trailing:
                context.set_trailing_metadata(exc.trailing)
            await context.abort(exc.code, exc.message)
        except InvalidInput as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except grpc.aio.AbortError:
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
            log.exception("%s: %s failed", component, method.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error in {component} while serving {method.__name__}; see its log",
            )

    return wrapper  # type: ignore[return-value]

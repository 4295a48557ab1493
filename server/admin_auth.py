"""The operator token check for ``murmur.v1.Admin``.

Admin calls carry ``authorization: Bearer <token>``. The token comes from the
router's --admin-token or MURMUR_ADMIN_TOKEN; it is compared in constant time
and never written to logs or error messages.
"""

from __future__ import annotations

import argparse
import functools
import hmac
import inspect
from collections.abc import Callable
from typing import Any

import grpc

from murmur.header_values import header_problem
from murmur.rpc_errors import refuse_unparseable


def operator_token(text: str) -> str:
    """--admin-token / MURMUR_ADMIN_TOKEN as argparse checks it: a token no
    caller can present (gRPC sends only printable ASCII in a header, and the
    check strips the ends) would lock every operator out, silently."""
    problem = header_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the operator token {problem}")
    if text != text.strip():
        raise argparse.ArgumentTypeError("the operator token may not begin or end with a space")
    return text


class TwoTokens(ValueError):
    """More than one authorization header: which one a proxy or a server
    reads differs, so neither is taken."""


class NotBearer(ValueError):
    """An authorization header that is not ``Bearer <token>`` (a bare token,
    another scheme, the scheme alone): told apart from a wrong token, which
    is a different mistake to mend."""


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    headers = [
        value for key, value in context.invocation_metadata() or () if key == "authorization"
    ]
    if len(headers) > 1:
        raise TwoTokens
    if not headers:
        return None
    parts = headers[0].split(maxsplit=1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise NotBearer
    return parts[1].strip()


async def refuse_unless_operator(expected: str | None, context: grpc.aio.ServicerContext) -> None:
    if not expected:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "the Admin API is disabled: start the router with --admin-token or MURMUR_ADMIN_TOKEN",
        )
    try:
        presented = bearer_token(context)
    except TwoTokens:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "Admin calls carry one 'authorization' header; this one carried several",
        )
    except NotBearer:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "the 'authorization' header must read 'Bearer <operator token>'; "
            "this one is not the word Bearer followed by a token",
        )
    if presented is None:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "Admin calls need metadata 'authorization: Bearer <operator token>'",
        )
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the operator token is not valid")


def operator_only(method: Callable[..., Any]) -> Callable[..., Any]:
    """Guard a unary or server-streaming Admin method with the token check."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> Any:
            await refuse_unless_operator(self.admin_token, context)
            await refuse_unparseable(request, context)
            async for item in method(self, request, context):
                yield item

        return stream

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        await refuse_unless_operator(self.admin_token, context)
        return await method(self, request, context)

    return unary

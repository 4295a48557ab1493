"""Typed exceptions for Murmur's gRPC status codes.

Callers should be able to write ``except NotFound:`` instead of inspecting
``grpc.RpcError.code()`` everywhere, so every client call turns a
``grpc.RpcError`` into one of these. The mapping is a plain table from status
code to class, in the style of python-etcd3's ``client.py``: adding a code is
one line. Every failure status gRPC defines is in the table; anything else
(``OK`` from a broken interceptor, a code a future gRPC adds) still becomes a
``MurmurError`` carrying the original code, so nothing is lost and ``except
MurmurError`` catches every RPC failure, including a call on a closed client
(``ClientClosed``).
"""

from __future__ import annotations

import grpc

from murmur.retry_info import retry_after

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ClientClosed",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "MurmurError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_from_rpc",
    "exception_class_for",
]


class MurmurError(Exception):
    """Any failed Murmur RPC: ``.code`` is the gRPC status, ``.details`` its message.

    Subclasses fix ``code`` per class; the base class is also raised directly,
    with the real code, for statuses the table below does not name.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(details={self.details!r}, code={self.code.name})"

    def __reduce__(self) -> tuple[type[MurmurError], tuple[str, grpc.StatusCode]]:
        # Keep ``code`` across pickling (e.g. multiprocessing), not just ``details``.
        return (type(self), (self.details, self.code))


class InvalidArgument(MurmurError):
    """A request field broke a documented rule; the details name the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MurmurError):
    """The user or tweet does not exist (or was deleted)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MurmurError):
    """The handle is already taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(MurmurError):
    """Editing or deleting somebody else's tweet."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(MurmurError):
    """The request conflicts with the cluster's current state."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(MurmurError):
    """A router or shard did not answer; worth retrying later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(MurmurError):
    """The call's deadline ran out; the server may or may not have done the work."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(MurmurError):
    """The caller has no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(MurmurError):
    """A quota, rate limit or message-size limit was hit; nothing was done.

    ``retry_after`` is the seconds the server says to wait before the same
    call would pass (a per-user rate limit: post_rate_limit,
    follow_rate_limit), or None when waiting will not help (too big a
    request, 5,000 followees already, a full disk)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        details: str = "",
        code: grpc.StatusCode | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(details, code)
        self.retry_after = retry_after


class Internal(MurmurError):
    """A bug or broken invariant on the server side."""

    code = grpc.StatusCode.INTERNAL


class Cancelled(MurmurError):
    """The call was cancelled before it finished, on this side: the client was
    closed (or a stream abandoned) while the call was in flight. Whether the
    server did the work is unknown, as after DEADLINE_EXCEEDED."""

    code = grpc.StatusCode.CANCELLED


class ClientClosed(Cancelled):
    """A call on a client after its ``close()`` (or after its ``with`` block).

    gRPC itself raises a bare ``ValueError`` here; this keeps ``except
    MurmurError`` (and ``except Cancelled``) catching every way a call can fail.
    Nothing was sent.
    """

    def __init__(
        self, details: str = "the client is closed", code: grpc.StatusCode | None = None
    ) -> None:
        super().__init__(details, code)


class Unknown(MurmurError):
    """A server handler raised an exception it did not turn into a status
    (gRPC reports those as UNKNOWN), or a failure with no status attached."""

    code = grpc.StatusCode.UNKNOWN


class Unimplemented(MurmurError):
    """The server does not serve this RPC: the target is not a router (a shard
    serves no ``Admin`` calls), or it runs an older Murmur."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Aborted(MurmurError):
    """The operation was aborted by a conflict. Murmur's servers do not send it
    today; a proxy between client and router, or a newer server, might."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(MurmurError):
    """A value past the end of a valid range. Murmur's servers report bad
    values as INVALID_ARGUMENT, so this comes only from a proxy or a newer server."""

    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(MurmurError):
    """Unrecoverable data loss or corruption. Murmur's servers do not send it
    today; treat it as serious and check the shards (``murmur-admin check``)."""

    code = grpc.StatusCode.DATA_LOSS


_EXCEPTIONS_BY_CODE: dict[grpc.StatusCode, type[MurmurError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}


def exception_class_for(code: grpc.StatusCode) -> type[MurmurError]:
    """The class raised for ``code``; ``MurmurError`` itself for unmapped codes."""
    return _EXCEPTIONS_BY_CODE.get(code, MurmurError)


def error_from_rpc(exc: grpc.RpcError) -> MurmurError:
    """Translate a failed call into a typed ``MurmurError`` (not raised: the caller
    writes ``raise error_from_rpc(e) from e`` so the traceback keeps the gRPC error).

    A ``grpc.RpcError`` is only guaranteed to be a ``grpc.Call`` when it came
    from a real channel; anything else (interceptors, test doubles) becomes
    UNKNOWN with its ``str()`` as details rather than crashing here.
    """
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = details_fn() if callable(details_fn) else None
    if details is None:
        details = str(exc)
    error_type = exception_class_for(code)
    if error_type is ResourceExhausted:
        trailing_fn = getattr(exc, "trailing_metadata", None)
        wait = retry_after(trailing_fn() if callable(trailing_fn) else None)
        return ResourceExhausted(details, code, retry_after=wait)
    return error_type(details, code)

"""When to retry a call a rate limit refused, in the form every gRPC client
library reads: a ``google.rpc.Status`` whose details hold a
``google.rpc.RetryInfo``, sent as the ``grpc-status-details-bin`` trailer
(grpcio-status's ``rpc_status.from_call`` in Python, ``status.FromError``
in Go, ``StatusProto.fromThrowable`` in Java)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DETAILS_KEY = rpc_status.GRPC_DETAILS_METADATA_KEY


def retry_trailer(code: grpc.StatusCode, message: str, seconds: float) -> tuple[str, bytes]:
    """The trailer telling a caller to wait ``seconds`` before trying again
    (its code and message match the call's, as the readers above check)."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(max(0, round(seconds * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return DETAILS_KEY, status.SerializeToString()


def retry_after(trailing: Iterable[tuple[str, Any]] | None) -> float | None:
    """Seconds a call's trailers say to wait before retrying it; None when
    they say nothing (or say it in a form that does not parse)."""
    for key, value in trailing or ():
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a proxy's garbage must not hide the call's own error
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.ToNanoseconds() / 1e9
    return None

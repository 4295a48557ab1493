"""Metrics and call logs shared by routers and shards.

A server interceptor counts every RPC by method and status code, times it
into a histogram, and writes one structured log line for each call that
failed (a server-side code) or was slow, naming the RPC, the user id in the
request, the component and the duration. prometheus-client serves the
metrics over HTTP (``--metrics-port``), the format every scraper speaks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger("murmur.calls")

RPC_TOTAL = Counter(
    "murmur_rpc_total", "RPCs served, by method and status code", ["service", "method", "code"]
)
RPC_SECONDS = Histogram(
    "murmur_rpc_seconds",
    "RPC latency in seconds, by method",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SLOW_CALL_S = 0.25
CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
USER_FIELDS = ("user_id", "follower_id", "followee_id", "tweet_id")


def serve_metrics(host: str, port: int | None) -> None:
    if port is not None:
        start_http_server(port, addr=host)


def request_subject(request: Any) -> dict[str, int]:
    """The ids a log line should carry, read from whichever fields exist."""
    subject = {}
    for name in USER_FIELDS:
        value = getattr(request, name, 0)
        if isinstance(value, int) and value:
            subject[name] = value
    return subject


class CallObserver(grpc.aio.ServerInterceptor):
    def __init__(self, component: str) -> None:
        self.component = component

    async def intercept_service(
        self, continuation: Callable, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, service, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, behavior: Callable, service: str, method: str) -> Callable:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return await behavior(request, context)
            finally:
                self._record(service, method, request, context, started)

        return observed

    def _wrap_stream(self, behavior: Callable, service: str, method: str) -> Callable:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                self._record(service, method, request, context, started)

        return observed

    def _record(
        self, service: str, method: str, request: Any, context: Any, started: float
    ) -> None:
        elapsed = time.perf_counter() - started
        code = context.code() or grpc.StatusCode.OK
        if isinstance(code, int):
            code = grpc.StatusCode.OK if code == 0 else grpc.StatusCode.UNKNOWN
        short = service.rsplit(".", 1)[-1]
        RPC_TOTAL.labels(short, method, code.name).inc()
        RPC_SECONDS.labels(short, method).observe(elapsed)
        failed = code != grpc.StatusCode.OK and code not in CLIENT_CODES
        if failed or elapsed >= SLOW_CALL_S:
            fields = {
                "rpc": f"{short}.{method}",
                "component": self.component,
                "code": code.name,
                "duration_ms": round(elapsed * 1000, 1),
                **request_subject(request),
            }
            log.log(
                logging.WARNING if failed else logging.INFO,
                "%s call %s %s in %.1f ms",
                "failed" if failed else "slow",
                fields["rpc"],
                code.name,
                elapsed * 1000,
                extra={"fields": fields},
            )

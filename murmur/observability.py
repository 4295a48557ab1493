"""Metrics and call logs shared by routers and shards.

Every unary RPC of our services is counted by method and status code, timed
into a histogram, and each call that failed (a server-side code) or was slow
gets one structured log line naming the RPC, the user id in the request, the
component and the duration. prometheus-client serves the
metrics over HTTP (``--metrics-port``), the format every scraper speaks;
``--metrics-port 0`` takes any free port and logs which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import start_http_server

from murmur.loop_metrics import LoopCounter, LoopHistogram

log = logging.getLogger("murmur.calls")
metrics_log = logging.getLogger("murmur.metrics")

RPC_TOTAL = LoopCounter(
    "murmur_rpc_total", "RPCs served, by method and status code", ["service", "method", "code"]
)
RPC_SECONDS = LoopHistogram(
    "murmur_rpc_seconds",
    "RPC latency in seconds, by method",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SLOW_CALL_S = 0.25
CLIENT_CODES = {
    grpc.StatusCode.CANCELLED,  # the caller went away
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
USER_FIELDS = ("user_id", "follower_id", "followee_id", "tweet_id")
# (service, method, code) -> its counter and histogram, so counting a call
# costs one dict lookup rather than building label tuples.
_SERIES: dict[tuple[str, str, grpc.StatusCode], tuple[Any, Any]] = {}


def serve_metrics(host: str, port: int | None, component: str) -> WSGIServer | None:
    """Serve the metrics on ``host:port`` (not at all if ``port`` is None).

    Port 0 takes any free port, which tests and several processes on one
    host need, and the log line naming the port bound is then the only way
    to learn it; it names ``component`` because the processes of
    murmur-cluster share one stderr. A port already taken ends the start in
    one line rather than a traceback."""
    if port is None:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise SystemExit(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    bound = server.server_port
    metrics_log.info(
        "serving metrics on http://%s:%d/metrics",
        host,
        bound,
        extra={"fields": {"component": component, "metrics_port": bound}},
    )
    return server


MAX_LOGGED_HANDLE = 20  # a handle is at most 15; a refused one may be a megabyte


def request_subject(request: Any) -> dict[str, int | str]:
    """The ids (and handle) a log line should carry, from whichever fields exist."""
    subject: dict[str, int | str] = {}
    for name in USER_FIELDS:
        value = getattr(request, name, 0)
        if isinstance(value, int) and value:
            subject[name] = value
    handle = getattr(request, "handle", "")
    if isinstance(handle, str) and handle:
        subject["handle"] = handle[:MAX_LOGGED_HANDLE]
    return subject


def observe_call(
    component: str,
    service: str,
    method: str,
    code: grpc.StatusCode,
    elapsed: float,
    request: Any,
    shard_of: Callable[[Any], int | None] | None = None,
) -> None:
    """Count and time one call; log it if it failed on our side or was slow,
    naming the shard that owns the request's key (``shard_of``) when known.

    Called from the servicers' error wrapper rather than a gRPC interceptor:
    an aio interceptor re-wraps the handler in Python on every call, which
    measured ~25% of a router's throughput on the Ping path.
    """
    series = _SERIES.get((service, method, code))
    if series is None:
        series = _SERIES[service, method, code] = (
            RPC_TOTAL.labels(service, method, code.name),
            RPC_SECONDS.labels(service, method),
        )
    series[0].inc()
    series[1].observe(elapsed)
    failed = code != grpc.StatusCode.OK and code not in CLIENT_CODES
    if failed or elapsed >= SLOW_CALL_S:
        fields = {
            "rpc": f"{service}.{method}",
            "component": component,
            "code": code.name,
            "duration_ms": round(elapsed * 1000, 1),
            **request_subject(request),
        }
        shard = shard_of(request) if shard_of is not None else None
        if shard is not None:
            fields["shard"] = shard
        log.log(
            logging.WARNING if failed else logging.INFO,
            "%s call %s %s in %.1f ms",
            "failed" if failed else "slow",
            fields["rpc"],
            code.name,
            elapsed * 1000,
            extra={"fields": fields},
        )

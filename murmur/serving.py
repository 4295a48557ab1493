"""What every Murmur server process shares: the event loop, logging, health
checking, reflection, and a graceful stop on SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from murmur.tls import TlsFiles

# gRPC core drops calls the application has not picked up yet, at random
# once 1,000 wait and all of them past 3,000, and the caller sees a bare
# CANCELLED (2,000 concurrent Pings on one channel lost ~10%). A burst should
# wait for its turn and end by its own deadline instead: the queue limits
# are raised far past any concurrency a caller can reach.
MAX_PENDING_CALLS = 50_000

KEEPALIVE_FLOOR_MS = 10_000
"""Servers accept a caller's keepalive pings this often. gRPC's own floor
is 5 minutes, counted between pings with no data sent: the shards' callers
ping every 30 s (``murmur.shard_stubs``), so an idle cluster's streams
collected strikes and the shards cut them with GOAWAY "too_many_pings" a few
minutes after start-up, failing a fan-out delivery to a healthy shard."""


SHARD_MAX_MESSAGE_BYTES = 64 << 20  # a router's batch, a slot move's chunk
ROUTER_MAX_REQUEST_BYTES = 1 << 20
"""What the router takes from a caller. The biggest request that follows the
rules is an admin call naming every slot (tens of KB); without this a 60 MB
text held the router's loop for seconds before the length check refused it:
gRPC now refuses it with RESOURCE_EXHAUSTED naming both sizes. At 4 MB, six
callers sending nothing but refused requests left the router holding
~720 MB."""


def server_options(
    keepalive_floor_ms: int = KEEPALIVE_FLOOR_MS,
    max_request_bytes: int = SHARD_MAX_MESSAGE_BYTES,
) -> list[tuple[str, int]]:
    """Every server's gRPC options (``keepalive_floor_ms`` is for tests)."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", SHARD_MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_floor_ms),
        # callers that keep idle channels warm (other services' clients) too
        ("grpc.keepalive_permit_without_calls", 1),
    ]


GRACE_S = 5.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (``--log-format json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """Lines for people: the message, then the record's structured fields
    (user id, component, shard...) that it does not already say, as
    key=value, so the text log carries what the JSON one does."""

    SAID_IN_MESSAGE = frozenset({"rpc", "code", "duration_ms"})

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return line
        extra = " ".join(
            f"{k}={_text_value(v)}" for k, v in fields.items() if k not in self.SAID_IN_MESSAGE
        )
        return f"{line} {extra}" if extra else line


def _text_value(value: object) -> str:
    """key=value stays one token: a value with spaces or '=' is quoted."""
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="')) else text


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_logging_flags(parser: argparse.ArgumentParser, of: str = "") -> None:
    """--log-level and --log-format, checked when parsed: a level logging
    does not know is a usage error, not a traceback at start-up."""
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help=f"{of}(INFO; any case)",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help=f"{of}(text)"
    )


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def install_event_loop() -> None:
    """uvloop where it installs: same throughput as the sync server, better p99."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_server(main: Coroutine[Any, Any, None], program: str) -> None:
    """``asyncio.run(main)``, where SIGINT or SIGTERM before the server's own
    handlers are in place (opening the store, waiting for shards) ends the
    start with one line and exit 1: SIGINT printed screens of traceback and
    SIGTERM ended the process without a word. What was stored is safe as
    after any crash: every write is durable before it is acknowledged.

    SIGINT gets the handler too, not Python's default: a process started in
    the background by a shell without job control inherits SIGINT ignored,
    and then honoured it once serving (``add_signal_handler``) but not while
    starting."""
    previous = {sig: signal.signal(sig, _interrupt_start) for sig in STOP_SIGNALS}
    try:
        asyncio.run(main)
    except KeyboardInterrupt:
        raise SystemExit(f"{program}: stopped by a signal while starting") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt_start(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class ServingProcess:
    """An aio gRPC server with health and reflection that stops gracefully.

    On SIGTERM/SIGINT it first marks health NOT_SERVING (load balancers stop
    sending), runs the stopping hooks (end long-lived streams), then lets
    in-flight calls finish within the grace period, then runs the shutdown
    hooks (flush, close the store).
    """

    def __init__(
        self,
        host: str,
        port: int,
        service_names: Iterable[str],
        tls_files: TlsFiles | None = None,
        require_client_cert: bool = False,
        max_request_bytes: int = SHARD_MAX_MESSAGE_BYTES,
    ) -> None:
        self.server = grpc.aio.server(options=server_options(max_request_bytes=max_request_bytes))
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        reflection.enable_server_reflection(
            [
                *self.service_names,
                reflection.SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ],
            self.server,
        )
        try:
            if tls_files is None:
                self.port = self.server.add_insecure_port(f"{host}:{port}")
            else:
                credentials = tls_files.server_credentials(require_client_cert)
                self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        except RuntimeError as exc:  # grpcio raises where older versions returned 0
            raise SystemExit(f"cannot listen on {host}:{port} (address in use?): {exc}") from None
        if self.port == 0:
            raise SystemExit(f"cannot listen on {host}:{port} (address in use?)")
        self.host = host
        self._stop = asyncio.Event()
        # run before the server stops: end calls that would never end by
        # themselves (long-lived streams) rather than wait out the grace
        self.stopping_hooks: list[Callable[[], Awaitable[None]]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    async def _set_health(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def serve(self, banner: str) -> None:
        await self.server.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._stop.set)
        print(banner.format(address=f"{self.host}:{self.port}"), flush=True)
        await self._stop.wait()
        started = time.monotonic()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for hook in self.stopping_hooks:
            await hook()
        await self.server.stop(GRACE_S)
        for hook in self.shutdown_hooks:
            await hook()
        logging.getLogger("murmur.serving").info(
            "stopped cleanly in %.2fs", time.monotonic() - started
        )

    def stop(self) -> None:
        self._stop.set()

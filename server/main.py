"""``murmur-router``: the public API in front of the shards."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Callable

import grpc

from murmur import tls
from murmur.addresses import listen_host, port_flag, shard_list
from murmur.errors import ServiceError
from murmur.observability import serve_metrics
from murmur.registration import add_service
from murmur.serving import (
    ROUTER_MAX_REQUEST_BYTES,
    ServingProcess,
    add_logging_flags,
    install_event_loop,
    run_server,
    setup_logging,
)
from murmur.setting_limits import setting_flag
from murmur.v1 import admin_pb2, murmur_pb2, shard_pb2
from server.admin import AdminServicer
from server.admin_auth import operator_token
from server.celebrity_cache import DEFAULT_TTL_S, CelebrityTimelines
from server.servicer import MurmurServicer
from server.shard_pool import ShardPool
from server.slot_map import bootstrap

log = logging.getLogger("murmur.router")
SETTINGS_TIMEOUT_S = 60.0  # a new threshold re-evaluates every user on each shard


MAX_CACHE_MS = 3_600_000.0
MAX_SHARD_WAIT_S = 86_400.0  # a day: a start that waits longer is a typo


def duration_flag(unit: str, short: str, high: float) -> Callable[[str], float]:
    """An argparse type for a span of time from 0 to ``high``, checked when
    parsed (before the router reaches any shard): a negative, infinite or
    NaN span is no setting anyone means (a NaN --shard-wait hung the start
    with no word, a negative one read as the shortest ask)."""

    def duration(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not 0 <= value <= high:  # NaN fails both comparisons
            raise argparse.ArgumentTypeError(f"{text} must be 0-{high:.0f} {short}")
        return value

    return duration


cache_ms = duration_flag("milliseconds", "ms", MAX_CACHE_MS)  # --celebrity-cache-ms
shard_wait = duration_flag("seconds", "seconds", MAX_SHARD_WAIT_S)  # --shard-wait


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="murmur-router", description=__doc__)
    parser.add_argument("--port", type=port_flag(0), default=50051, help="0 picks a free port")
    parser.add_argument(
        "--host", type=listen_host, default="127.0.0.1", help="address to listen on"
    )
    parser.add_argument(
        "--shards",
        type=shard_list,
        required=True,
        help="comma-separated shard addresses, host:port,...",
    )
    parser.add_argument(
        "--celebrity-threshold",
        type=setting_flag("celebrity_threshold"),
        default=None,
        help="if given, set on every shard at start (cluster-wide setting); a shard that "
        "is down misses it with a warning naming it, and the router serves on",
    )
    parser.add_argument(
        "--inbox-cap",
        type=setting_flag("inbox_cap"),
        default=None,
        help="if given (1 to 100000), set on every shard at start, like --celebrity-threshold",
    )
    parser.add_argument(
        "--admin-token",
        type=operator_token,
        default=os.environ.get("MURMUR_ADMIN_TOKEN"),
        help="operator token for the Admin API (or MURMUR_ADMIN_TOKEN); without one, "
        "Admin calls are refused",
    )
    parser.add_argument(
        "--shard-wait",
        type=shard_wait,
        default=30.0,
        help="seconds to wait for shards at start (default 30); silent ones are served "
        "without, and if none answers the router exits 1 naming them",
    )
    parser.add_argument(
        "--celebrity-cache-ms",
        type=cache_ms,
        default=DEFAULT_TTL_S * 1000,
        help="how long the router reuses a celebrity's pulled tweets for home reads "
        "(a new celebrity tweet may take this long to show; 0 turns the copies off)",
    )
    tls.add_flags(parser)
    parser.add_argument(
        "--metrics-port",
        type=port_flag(0),
        default=None,
        help="Prometheus HTTP port; 0 picks a free port, logged at start (off if not given)",
    )
    add_logging_flags(parser)
    return parser.parse_args(argv)


async def push_settings(pool: ShardPool, update: shard_pb2.UpdateSettingsRequest) -> None:
    """Cluster-wide settings live on the shards; a router flag sets them all.

    The start serves without shards that are down (see --shard-wait), so a
    shard that misses the update is only warned about, by name and reason;
    it keeps its own settings until they are set again. A value a shard
    refuses is the operator's mistake and ends the start with one line."""
    shard_ids = sorted(pool.table.addresses)
    results = await asyncio.gather(
        *(pool.call(s, "UpdateSettings", update, SETTINGS_TIMEOUT_S) for s in shard_ids),
        return_exceptions=True,
    )
    wanted = ", ".join(f"{field.name}={value}" for field, value in update.ListFields())
    for shard_id, result in zip(shard_ids, results, strict=True):
        if isinstance(result, ServiceError) and result.code == grpc.StatusCode.INVALID_ARGUMENT:
            raise SystemExit(f"shard {shard_id} refused the settings {wanted}: {result.message}")
    for shard_id, result in zip(shard_ids, results, strict=True):
        if isinstance(result, ServiceError):
            log.warning(
                "shard %d %s the settings %s (%s: %s); check with murmur-admin settings",
                shard_id,
                # a shard stores them before re-checking every user: a
                # timeout most likely came after they were taken
                "may not have taken"
                if result.code == grpc.StatusCode.DEADLINE_EXCEEDED
                else "did not take",
                wanted,
                result.code.name,
                result.message,
            )
        elif isinstance(result, BaseException):
            raise result  # a bug, not a shard's answer: show its traceback


async def serve(args: argparse.Namespace) -> None:
    tls_files = tls.configure_from(args)
    addresses = [a.strip() for a in args.shards.split(",") if a.strip()]
    if not addresses:
        raise SystemExit("--shards needs at least one address")
    services = [
        murmur_pb2.DESCRIPTOR.services_by_name["Murmur"].full_name,
        admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    ]
    # the port first: a start that cannot serve changes nothing on the shards
    process = ServingProcess(
        args.host,
        args.port,
        services,
        tls_files=tls_files,
        max_request_bytes=ROUTER_MAX_REQUEST_BYTES,
    )
    table = await bootstrap(addresses, args.shard_wait)
    pool = ShardPool(table)
    update = shard_pb2.UpdateSettingsRequest()
    if args.celebrity_threshold is not None:
        update.celebrity_threshold = args.celebrity_threshold
    if args.inbox_cap is not None:
        update.inbox_cap = args.inbox_cap
    if update.ListFields():
        await push_settings(pool, update)
    serve_metrics(args.host, args.metrics_port, "router")
    murmur_service = murmur_pb2.DESCRIPTOR.services_by_name["Murmur"]
    admin_service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    copies = CelebrityTimelines(ttl_s=args.celebrity_cache_ms / 1000)
    add_service(process.server, MurmurServicer(table, pool, copies), murmur_service)
    identity = f"router {socket.gethostname()} {args.host}:{process.port}"  # its lease holder
    add_service(process.server, AdminServicer(pool, args.admin_token, identity), admin_service)
    process.shutdown_hooks.append(pool.close)
    await process.serve("murmur-router serving on {address}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    install_event_loop()
    run_server(serve(args), "murmur-router")


if __name__ == "__main__":
    main()

"""``murmur-shard``: one LevelDB-backed shard server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

import plyvel

from murmur import tls
from murmur.addresses import listen_host, port_flag
from murmur.errors import StorageFailed
from murmur.observability import serve_metrics
from murmur.registration import add_service
from murmur.rpc_errors import storage_reason
from murmur.serving import (
    ServingProcess,
    add_logging_flags,
    install_event_loop,
    run_server,
    setup_logging,
)
from murmur.setting_limits import RATE_LIMITS, add_rate_limit_flags, setting_flag
from murmur.v1 import shard_pb2
from shard.celebrity import reevaluate_all
from shard.delivery import DeliveryApplier
from shard.fanout import FanoutWorker
from shard.map_catch_up import catch_up_map, keep_catching_up
from shard.metrics import register as register_metrics
from shard.migration import seal_pending_handover, settle_at_start, stop_background
from shard.peers import PeerShards
from shard.servicer import ShardServicer
from shard.settings import ShardSettings
from shard.state import ShardState
from shard.store import DEFAULT_WRITE_BUFFER_MB

MAX_SHARD_ID = (1 << 32) - 1
log = logging.getLogger("murmur.shard")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="murmur-shard", description=__doc__)
    parser.add_argument("--port", type=port_flag(0), default=50061, help="0 picks a free port")
    parser.add_argument(
        "--host", type=listen_host, default="127.0.0.1", help="address to listen on"
    )
    parser.add_argument("--data-dir", required=True, help="folder of this shard's LevelDB")
    parser.add_argument(
        "--shard-id", type=shard_id, default=0, help="0 to 4294967295, fixed at first start"
    )
    parser.add_argument(
        "--celebrity-threshold",
        type=setting_flag("celebrity_threshold"),
        default=None,
        help="followers at which an account is pulled at read time (default 10000, "
        "or the value stored by UpdateSettings); stored like UpdateSettings",
    )
    parser.add_argument(
        "--inbox-cap",
        type=setting_flag("inbox_cap"),
        default=None,
        help="entries per home inbox (800; 1 to 100000); stored like UpdateSettings",
    )
    add_rate_limit_flags(parser, stored="; stored like UpdateSettings")
    parser.add_argument(
        "--compress-tables",
        action="store_true",
        help="snappy-compress LevelDB tables: less disk, more CPU in compaction (off)",
    )
    parser.add_argument(
        "--write-buffer-mb",
        type=write_buffer_mb,
        default=DEFAULT_WRITE_BUFFER_MB,
        help="MB of writes LevelDB holds in memory before writing a table; larger absorbs "
        "fan-out bursts with less compaction, up to twice this in memory "
        f"({DEFAULT_WRITE_BUFFER_MB})",
    )
    parser.add_argument(
        "--unsafe-no-fsync",
        action="store_true",
        help="UNSAFE: acknowledge writes without the group commit's fsync, so a power "
        "cut can lose acknowledged writes and leave shards disagreeing until "
        "murmur-admin check --repair (a process kill loses nothing); for measuring "
        "what durability costs, never for users' data (off)",
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


def shard_id(text: str) -> int:
    """The id is written into the data folder at first start and travels as
    a uint32: one that does not fit would be stored for good and then fail
    every call that reports it."""
    value = int(text)
    if not 0 <= value <= MAX_SHARD_ID:
        raise argparse.ArgumentTypeError(f"{value} is not a shard id (0 to {MAX_SHARD_ID})")
    return value


def write_buffer_mb(text: str) -> int:
    """1 MB keeps LevelDB writing tables at all; past 1 GB a restart would
    replay a log that long before serving."""
    value = int(text)
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be 1 to 1024 MB, got {value}")
    return value


def check_data_dir(path: str) -> None:
    """Fail at start-up, clearly, rather than on the first write."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"data folder {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"cannot use data folder {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise SystemExit(f"data folder {path} is not writable")


def open_state(args: argparse.Namespace, overrides: dict[str, int]) -> ShardState:
    """Open the LevelDB, turning its errors (held lock, corruption) into one line."""
    try:
        return ShardState.open(
            args.data_dir,
            args.shard_id,
            ShardSettings(),
            overrides,
            compress_tables=args.compress_tables,
            write_buffer_mb=args.write_buffer_mb,
        )
    except (plyvel.Error, StorageFailed) as exc:
        raise SystemExit(
            f"cannot open the LevelDB in {args.data_dir}: {open_problem(exc)}"
        ) from None


def open_problem(exc: BaseException) -> str:
    """LevelDB's reason as text (plyvel's is bytes), and what a held lock
    means here: another process has the folder open."""
    reason = storage_reason(exc)
    if "/LOCK:" in reason and "unavailable" in reason.lower():
        return f"{reason} (another process holds its lock: is a shard already running on it?)"
    return reason


async def serve(args: argparse.Namespace) -> None:
    # the port first: a start that cannot serve leaves no folder made or stamped
    process = ServingProcess(
        args.host,
        args.port,
        [shard_pb2.DESCRIPTOR.services_by_name["Shard"].full_name],
        tls_files=tls.configure_from(args),
        require_client_cert=True,  # only routers and shards hold cluster certificates
    )
    check_data_dir(args.data_dir)
    overrides = {
        name: value
        for name, value in (
            ("celebrity_threshold", args.celebrity_threshold),
            ("inbox_cap", args.inbox_cap),
            *((name, getattr(args, name)) for name in RATE_LIMITS),
        )
        if value is not None
    }
    state = open_state(args, overrides)
    handover = seal_pending_handover(state)
    if state.threshold_unapplied:
        reevaluate_all(state)  # skips the sealed slots
    applier = DeliveryApplier(state)
    peers = PeerShards(state.ownership)
    worker = FanoutWorker(state, applier, peers)
    servicer = ShardServicer(state, applier, worker, peers, fsync=not args.unsafe_no_fsync)
    if args.unsafe_no_fsync:
        log.warning(
            "--unsafe-no-fsync: writes are acknowledged without an fsync; a power cut can lose them"
        )
    add_service(process.server, servicer, shard_pb2.DESCRIPTOR.services_by_name["Shard"])
    register_metrics(state, worker, servicer.commits)
    serve_metrics(args.host, args.metrics_port, f"shard {state.shard_id}")
    if not await catch_up_map(state, peers):  # before any fan-out acts on the map
        catching_up = asyncio.get_running_loop().create_task(keep_catching_up(state, peers))
        process.shutdown_hooks.append(lambda: _cancel(catching_up))
    worker.start()
    if handover is not None:
        settling = asyncio.get_running_loop().create_task(settle_at_start(state, peers))
        process.shutdown_hooks.append(lambda: _cancel(settling))

    async def close() -> None:
        await worker.stop()
        await stop_background()
        await peers.close()
        try:
            state.inbox.store_tallies()
        finally:
            state.store.close()

    process.stopping_hooks.append(servicer.batch_streams.close)
    process.shutdown_hooks.append(close)
    await process.serve(f"murmur-shard {state.shard_id} serving on {{address}}")


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    install_event_loop()
    run_server(serve(args), "murmur-shard")


if __name__ == "__main__":
    main()

"""``murmur-cluster``: a router and N shards on loopback, in the foreground.

Shard i listens on port+1+i and keeps its LevelDB in DATA_DIR/shard-i, so a
second start on the same folder serves the same data with the same slot map
(the map is stored on the shards). Ctrl-C or SIGTERM stops every child.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from murmur import tls
from murmur.addresses import MAX_PORT, bind_family, bind_host, listen_host, port_flag
from murmur.serving import add_logging_flags
from murmur.setting_limits import RATE_LIMITS, add_rate_limit_flags, flag_for, setting_flag
from server.admin_auth import operator_token
from server.main import cache_ms

MAX_SHARDS = 64  # processes on one machine; a real cluster runs shards on many


def shard_count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"{value} shards; it must be 1-{MAX_SHARDS}")
    return value


def data_folder(text: str) -> str:
    """--data-dir: a path that exists and is not a folder would only fail
    at mkdir, after the port checks, as a FileExistsError traceback."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return text


def check_port_room(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Shard i takes --port + 1 + i (and --metrics-port + 1 + i): the last
    shard's port must still be one, or that shard dies in bind() while the
    others run. --metrics-port 0 is passed on as 0, so it always fits."""
    last = args.shards  # the offset of shard shards-1
    for flag, first in (("--port", args.port), ("--metrics-port", args.metrics_port)):
        if first and first + last > MAX_PORT:
            lowest = 1 if flag == "--port" else 0
            parser.error(
                f"argument {flag}: shard {last - 1} would take port {first + last}; "
                f"with --shards {args.shards}, {flag} must be {lowest}-{MAX_PORT - last}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="murmur-cluster", description=__doc__)
    parser.add_argument(
        "--shards", type=shard_count, default=4, help="number of shard processes (4)"
    )
    parser.add_argument(
        "--port",
        type=port_flag(1),
        default=50051,
        help="the router's port; shard i takes port + 1 + i",
    )
    parser.add_argument(
        "--data-dir", type=data_folder, default="./data", help="one sub-folder per shard"
    )
    parser.add_argument(
        "--celebrity-threshold",
        type=setting_flag("celebrity_threshold"),
        default=None,
        help="followers at which an account is pulled at read time (default 10000)",
    )
    parser.add_argument(
        "--inbox-cap",
        type=setting_flag("inbox_cap"),
        default=None,
        help="entries per inbox (800; 1 to 100000)",
    )
    add_rate_limit_flags(parser)
    parser.add_argument(
        "--celebrity-cache-ms",
        type=cache_ms,
        default=None,
        help="how long the router reuses a celebrity's pulled tweets (50; 0 = off)",
    )
    parser.add_argument("--host", type=listen_host, default="127.0.0.1")
    tls.add_flags(parser)
    parser.add_argument(
        "--metrics-port",
        type=port_flag(0),
        default=None,
        help="Prometheus port of the router; shard i uses this + 1 + i; 0 gives every "
        "process a free port, which each logs (off if not given)",
    )
    parser.add_argument(
        "--admin-token",
        type=operator_token,
        default=os.environ.get("MURMUR_ADMIN_TOKEN"),
        help="operator token passed to the router (or MURMUR_ADMIN_TOKEN)",
    )
    add_logging_flags(parser, of="of every process ")
    args = parser.parse_args(argv)
    check_port_room(parser, args)
    return args


def log_flags(args: argparse.Namespace) -> list[str]:
    return ["--log-level", args.log_level, "--log-format", args.log_format]


def setting_flags(args: argparse.Namespace) -> list[str]:
    """Pass on only the settings given, so stored ones survive a restart."""
    flags = []
    if args.celebrity_threshold is not None:
        flags += ["--celebrity-threshold", str(args.celebrity_threshold)]
    if args.inbox_cap is not None:
        flags += ["--inbox-cap", str(args.inbox_cap)]
    for name in RATE_LIMITS:
        if getattr(args, name) is not None:
            flags += [flag_for(name), str(getattr(args, name))]
    return flags


def router_flags(args: argparse.Namespace) -> list[str]:
    if args.celebrity_cache_ms is None:
        return []
    return ["--celebrity-cache-ms", str(args.celebrity_cache_ms)]


def tls_flags(args: argparse.Namespace) -> list[str]:
    if not args.tls_cert:
        return []
    return ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key, "--tls-ca", args.tls_ca]


def metrics_flags(args: argparse.Namespace, offset: int) -> list[str]:
    """Port P gives the router P and shard i P+1+i. Port 0 is passed on as
    0 (each process takes a free port and logs it): 0+1+i would name fixed
    low ports, bound to fail."""
    if args.metrics_port is None:
        return []
    if args.metrics_port == 0:
        return ["--metrics-port", "0"]
    return ["--metrics-port", str(args.metrics_port + offset)]


def router_env(args: argparse.Namespace) -> dict[str, str]:
    """The admin token travels in the environment, never on a command line."""
    env = dict(os.environ)
    if args.admin_token:
        env["MURMUR_ADMIN_TOKEN"] = args.admin_token
    return env


def wait_serving(address: str, child: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until the server at ``address`` reports SERVING (or its process dies)."""
    deadline = time.monotonic() + timeout_s
    with tls.sync_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise SystemExit(f"process for {address} exited with code {child.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise SystemExit(f"{address} did not start serving within {timeout_s:.0f}s")


def check_ports_free(host: str, ports: list[int]) -> None:
    """Refuse to start on a port something else holds: the health checks
    would be answered by that server (another cluster, say) and report this
    cluster serving while its own processes fail to listen."""
    for port in ports:
        with socket.socket(bind_family(host)) as probe:
            # as gRPC binds: a port still in TIME_WAIT from a cluster just
            # stopped is free, one another process listens on is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((bind_host(host), port))
            except (OSError, OverflowError) as exc:
                raise SystemExit(bind_failure(host, port, exc)) from None


def bind_failure(host: str, port: int, exc: OSError | OverflowError) -> str:
    """Only EADDRINUSE means another server holds the port. A host that does
    not resolve or is not this machine's, a port below 1024 without the
    privilege, or one past 65535 (OverflowError) is said as what it is."""
    if isinstance(exc, OverflowError):
        return f"port {port} is out of range (0-{MAX_PORT}): pick another --port"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is taken ({exc.strerror}): is another cluster "
            "running? Stop it or pick another --port"
        )
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve --host {host} ({exc.strerror})"
    return f"cannot listen on {host}:{port} ({exc.strerror}): check --host and --port"


def make_data_folder(data_dir: Path) -> None:
    """One line naming the folder (not a traceback) when it cannot be made:
    a parent that is a file, no permission, a read-only disk."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"cannot use --data-dir {data_dir}: {exc.strerror or exc}") from None


def check_data_folder(data_dir: Path, shards: int) -> None:
    """A data folder from a bigger cluster holds slots on shards this start
    would leave out, whose users would get UNAVAILABLE: refuse, naming them."""
    extra = sorted(
        int(folder.name.removeprefix("shard-"))
        for folder in data_dir.glob("shard-*")
        if folder.name.removeprefix("shard-").isdigit()
        and int(folder.name.removeprefix("shard-")) >= shards
    )
    if extra:
        raise SystemExit(
            f"{data_dir} holds shard(s) {', '.join(map(str, extra))}, beyond --shards {shards}: "
            f"start with --shards {extra[-1] + 1} (to shrink a cluster, drain and remove "
            "shards with murmur-admin), or use another --data-dir"
        )


def start_cluster(args: argparse.Namespace, children: list[subprocess.Popen]) -> None:
    """Start shards, then the router, appending each child to ``children`` at
    once so that a failure part-way still stops everything already started."""
    shard_addresses = []
    data_dir = Path(args.data_dir)
    check_data_folder(data_dir, args.shards)
    check_ports_free(args.host, [args.port + i for i in range(args.shards + 1)])
    make_data_folder(data_dir)
    for index in range(args.shards):
        address = f"{args.host}:{args.port + 1 + index}"
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shard.main",
                "--host",
                args.host,
                "--port",
                str(args.port + 1 + index),
                "--data-dir",
                str(data_dir / f"shard-{index}"),
                "--shard-id",
                str(index),
                *setting_flags(args),
                *metrics_flags(args, 1 + index),
                *tls_flags(args),
                *log_flags(args),
            ],
            stdout=subprocess.DEVNULL,
        )
        children.append(child)
        shard_addresses.append(address)
    for address, child in zip(shard_addresses, children, strict=True):
        wait_serving(address, child)
    router_address = f"{args.host}:{args.port}"
    router = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.main",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--shards",
            ",".join(shard_addresses),
            *metrics_flags(args, 0),
            *tls_flags(args),
            *router_flags(args),
            *log_flags(args),
        ],
        stdout=subprocess.DEVNULL,
        env=router_env(args),
    )
    children.append(router)
    wait_serving(router_address, router)


def stop_all(children: list[subprocess.Popen]) -> None:
    """Router first (no new requests), then shards, each given time to flush."""
    for child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tls.configure_from(args)
    children: list[subprocess.Popen] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        start_cluster(args, children)
        print(
            f"murmur cluster serving on {args.host}:{args.port} "
            f"({args.shards} shard{'s' if args.shards > 1 else ''}, "
            f"data in {os.path.abspath(args.data_dir)})",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        dead = [c.args[2] for c in children if c.poll() is not None]
        print(f"a child process exited ({dead}); stopping the cluster", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopping murmur cluster", flush=True)
    finally:
        stop_all(children)


if __name__ == "__main__":
    main()

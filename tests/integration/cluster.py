"""``LocalCluster``: real ``murmur-shard`` and ``murmur-router`` processes on loopback.

Reusable by every suite that needs a running cluster::

    with LocalCluster(tmp_path, shards=3) as cluster:
        client = MurmurClient(cluster.target)
        cluster.kill_shard(1)      # SIGKILL, like a crash
        cluster.restart_shard(1)   # same port, same data folder

Each process gets ``--port 0`` on its first start and learns its port from the
banner it prints on stdout once serving; restarts reuse that port (shards
store the slot map with their addresses). Each process's stderr (its log)
goes to ``tmp_path/<name>.log``; a process that dies or prints no banner in
time fails the test with the tail of that log.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from murmur.slots import even_assignment, slot_for_handle, slot_for_user

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PORTS_FILE = "cluster-ports.json"

SHARD_BANNER = re.compile(r"murmur-shard (\d+) serving on (\S+):(\d+)")
ROUTER_BANNER = re.compile(r"murmur-router serving on (\S+):(\d+)")

_LIVE: weakref.WeakSet[LocalCluster] = weakref.WeakSet()


class ClusterError(RuntimeError):
    """A server process failed to start, or died."""


def log_tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    """The last ``lines`` lines of a log, from byte ``offset`` on."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


class ServerProcess:
    """One server process: started, its banner awaited, its log kept."""

    def __init__(self, name: str, argv: list[str], log_path: Path, banner: re.Pattern) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.banner = banner
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._stdout_lines: list[str] = []
        self._match: re.Match | None = None
        self._banner_seen = threading.Event()
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, port: int) -> None:
        """Start on ``port`` (0: any free port); returns once the banner is printed."""
        if self.alive():
            raise ClusterError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/_close_log()
        self._log.write(f"\n===== {time.strftime('%H:%M:%S')} start {self.name} =====\n".encode())
        self._log.flush()
        self._log_offset = self._log.tell()
        self._stdout_lines = []
        self._match = None
        self._banner_seen = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        reader = threading.Thread(
            target=self._read_stdout,
            args=(self.proc, self._banner_seen),
            name=f"{self.name}-stdout",
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._banner_seen.wait(0.05):
            if self.proc.poll() is not None:
                # the banner may have raced the exit; give the reader a moment
                if self._banner_seen.wait(0.2):
                    break
                raise ClusterError(
                    f"{self.name} exited with code {self.proc.returncode} before serving "
                    f"(argv: {self.proc.args}); log {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ClusterError(
                    f"{self.name} printed no banner within {START_TIMEOUT_S:.0f}s; "
                    f"stdout: {self._stdout_lines!r}; log {self.log_path}:\n"
                    f"{self.tail()}"
                )
        assert self._match is not None
        self.port = int(self._match.group(self._match.re.groups))
        if port and self.port != port:
            raise ClusterError(f"{self.name} asked for port {port} but serves on {self.port}")

    def tail(self, lines: int = 40) -> str:
        """The end of this run's log (earlier runs are further up the same file)."""
        return log_tail(self.log_path, lines, self._log_offset)

    def _read_stdout(self, proc: subprocess.Popen, seen: threading.Event) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._stdout_lines.append(line)
            if not seen.is_set():
                match = self.banner.search(line)
                if match:
                    self._match = match
                    seen.set()
        proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL and reap: a crash, with no chance to flush anything."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait for exit; SIGKILL when ``timeout`` runs out. Returns the exit code."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self._close_log()


# for tests that write far faster than one person could (filling a disk)
NO_RATE_LIMITS = ["--post-rate-limit", "0", "--follow-rate-limit", "0"]


class LocalCluster:
    """A router and ``shards`` shard processes with data under ``tmp_path``.

    Shard ``i`` keeps its LevelDB in ``tmp_path/shard-i`` and logs to
    ``tmp_path/shard-i.log``; the router logs to ``tmp_path/router.log``.
    The ports the shards got are recorded in ``tmp_path/cluster-ports.json``,
    so a new ``LocalCluster`` on the same folder restarts the shards on their
    old ports (pass ``shard_ports`` to choose them instead; 0 means any).
    """

    def __init__(
        self,
        tmp_path: Path | str,
        shards: int = 3,
        celebrity_threshold: int = 10_000,
        inbox_cap: int = 800,
        *,
        shard_ports: list[int] | None = None,
        extra_args: list[str] | None = None,
        router_args: list[str] | None = None,
        shard_args: list[str] | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError("a cluster needs at least one shard")
        self.tmp_path = Path(tmp_path)
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.shards = shards
        self.celebrity_threshold = celebrity_threshold
        self.inbox_cap = inbox_cap
        self._owners = even_assignment(list(range(shards)))
        if shard_ports is None:
            shard_ports = self._recorded_ports()
        if len(shard_ports) != shards:
            raise ValueError(f"shard_ports has {len(shard_ports)} ports for {shards} shards")
        self._requested_ports = list(shard_ports)
        self.extra_args = list(extra_args or [])  # given to every process (e.g. TLS flags)
        self.router_args = list(router_args or [])
        self._shards = [
            ServerProcess(
                f"shard {i}",
                [
                    "-m",
                    "shard.main",
                    "--host",
                    HOST,
                    "--data-dir",
                    str(self.data_dir(i)),
                    "--shard-id",
                    str(i),
                    "--celebrity-threshold",
                    str(celebrity_threshold),
                    "--inbox-cap",
                    str(inbox_cap),
                    *self.extra_args,
                    *(shard_args or []),
                ],
                self.tmp_path / f"shard-{i}.log",
                SHARD_BANNER,
            )
            for i in range(shards)
        ]
        self._router: ServerProcess | None = None
        self.target = ""

    # lifecycle -------------------------------------------------------------
    def start(self) -> LocalCluster:
        _LIVE.add(self)
        try:
            for i, server in enumerate(self._shards):
                # a second start() of the same object keeps the ports of the first
                server.start(server.port or self._requested_ports[i])
            self._record_ports()
            self._router = ServerProcess(
                "router",
                [
                    "-m",
                    "server.main",
                    "--host",
                    HOST,
                    "--shards",
                    ",".join(self.shard_addresses),
                    *self.extra_args,
                    *self.router_args,
                ],
                self.tmp_path / "router.log",
                ROUTER_BANNER,
            )
            self._router.start(0)
            self.target = self._router.address
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, int | None]:
        """SIGTERM the router, then the shards; SIGKILL whatever is left after 10 s.

        Returns each process's exit code by name (None if it never ran).
        """
        servers = ([self._router] if self._router is not None else []) + list(self._shards)
        for server in servers:
            server.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        codes = {}
        for server in servers:
            codes[server.name] = server.wait(deadline - time.monotonic())
            server.close()
        _LIVE.discard(self)
        return codes

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # shards ----------------------------------------------------------------
    def data_dir(self, index: int) -> Path:
        return self.tmp_path / f"shard-{index}"

    def shard_address(self, index: int) -> str:
        return self._shards[index].address

    @property
    def shard_addresses(self) -> list[str]:
        return [server.address for server in self._shards]

    def shard_port(self, index: int) -> int:
        return self._shards[index].port

    def shard_pid(self, index: int) -> int | None:
        return self._shards[index].pid

    def shard_alive(self, index: int) -> bool:
        return self._shards[index].alive()

    def kill_shard(self, index: int) -> None:
        """SIGKILL shard ``index`` and wait for it to be gone."""
        self._shards[index].kill()

    def restart_shard(self, index: int) -> None:
        """Start shard ``index`` again on its old port and data folder; waits for the banner."""
        server = self._shards[index]
        if server.alive():
            server.kill()
        self._start_on_old_port(server)

    def shard_info(self, index: int, timeout: float = 5.0):
        """Shard ``index``'s ``GetShardInfo`` answer (its id, slots and stored slot map)."""
        import grpc

        from murmur.v1 import shard_pb2, shard_pb2_grpc

        with grpc.insecure_channel(self.shard_address(index)) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            return stub.GetShardInfo(shard_pb2.GetShardInfoRequest(), timeout=timeout)

    def shard_log(self, index: int) -> str:
        return log_tail(self._shards[index].log_path, 200)

    # router ----------------------------------------------------------------
    @property
    def router_address(self) -> str:
        return self.target

    @property
    def router_pid(self) -> int | None:
        return self._router.pid if self._router is not None else None

    def kill_router(self) -> None:
        if self._router is not None:
            self._router.kill()

    def restart_router(self, same_port: bool = False) -> str:
        """Start the router again (on a new port unless ``same_port``); updates
        and returns ``target``."""
        if self._router is None:
            raise ClusterError("the router was never started")
        if self._router.alive():
            self._router.kill()
        self._router.start(self._router.port if same_port else 0)
        self.target = self._router.address
        return self.target

    def router_log(self) -> str:
        return log_tail(self.tmp_path / "router.log", 200)

    # placement -------------------------------------------------------------
    def shard_for_slot(self, slot: int) -> int:
        return self._owners[slot]

    def shard_for_user(self, user_id: int) -> int:
        """The index of the shard owning ``user_id`` under the initial even assignment."""
        return self._owners[slot_for_user(user_id)]

    def shard_for_handle(self, handle: str) -> int:
        """Where a user created with ``handle`` will live (ids are minted in its slot)."""
        return self._owners[slot_for_handle(handle)]

    def handle_on_shard(self, index: int, prefix: str = "u") -> str:
        """A fresh, unused-looking handle whose user will live on shard ``index``."""
        for _ in range(100_000):
            handle = unique_handle(prefix)
            if self.shard_for_handle(handle) == index:
                return handle
        raise ClusterError(f"no handle found for shard {index}")

    # internals -------------------------------------------------------------
    def _start_on_old_port(self, server: ServerProcess) -> None:
        """The old port may linger for a moment after a kill: retry binding briefly."""
        deadline = time.monotonic() + 10
        while True:
            try:
                server.start(server.port)
                return
            except ClusterError as exc:
                port_busy = "cannot listen" in str(exc) or "Failed to bind" in str(exc)
                if not port_busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _recorded_ports(self) -> list[int]:
        path = self.tmp_path / PORTS_FILE
        try:
            ports = json.loads(path.read_text())["shards"]
        except (OSError, ValueError, KeyError):
            return [0] * self.shards
        if len(ports) != self.shards:
            return [0] * self.shards
        return [int(p) for p in ports]

    def _record_ports(self) -> None:
        (self.tmp_path / PORTS_FILE).write_text(
            json.dumps({"shards": [s.port for s in self._shards]})
        )


_counter = itertools.count()
_RUN = uuid.uuid4().hex[:4]


def unique_handle(prefix: str = "u") -> str:
    """A handle (at most 15 characters) not used before in this test run."""
    suffix = f"{_RUN}{next(_counter):x}{uuid.uuid4().hex[:4]}"
    return (prefix[: max(1, 15 - len(suffix))] + suffix)[:15]


@atexit.register
def _stop_leftovers() -> None:
    """Never leave server processes behind, even if a test forgot to stop its cluster."""
    for cluster in list(_LIVE):
        cluster.stop()


def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Call ``check`` until it stops raising AssertionError (or a retryable
    ``client.errors.Unavailable``); return its result. After ``timeout``
    seconds the last failure is raised."""
    from client.errors import Unavailable

    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, Unavailable):
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


METRICS_LINE = re.compile(r"serving metrics on http://\S+:(\d+)/metrics")


def metrics_port(log: Path) -> int:
    """The port a process started with ``--metrics-port 0`` logged it bound."""
    found = METRICS_LINE.findall(log.read_text(errors="replace"))
    assert found, f"no metrics port logged in {log}:\n{log_tail(log)}"
    return int(found[-1])


def scrape(log: Path) -> str:
    """The metrics of the process logging to ``log``."""
    port = metrics_port(log)
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()

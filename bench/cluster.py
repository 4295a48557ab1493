"""Server processes the bench starts and always stops: Murmur shards and
router, and the SQLite join server.

Each process gets ``--port 0`` and is known by the banner it prints on stdout;
its stderr (the log, including the shards' ``fanout round delivered ...``
lines) goes to a file in the work folder. Shards also serve Prometheus
metrics on a loopback port the bench picks, for the time their event loops
wait on fsyncs. Children are stopped in ``finally`` blocks, by an
``atexit`` hook, and (on Linux) by the kernel if the bench itself dies.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SHARD_BANNER = re.compile(r"murmur-shard (\d+) serving on (\S+):(\d+)")
ROUTER_BANNER = re.compile(r"murmur-router serving on (\S+):(\d+)")
JOIN_BANNER = re.compile(r"join-server serving on (\S+):(\d+)")

_LIVE: set[ServerProcess] = set()
LOOP_FSYNC_METRIC = "murmur_inline_fsync_seconds_total"


def free_port() -> int:
    """A loopback port nobody holds now (the shard binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def scrape_counter(port: int, name: str, timeout_s: float = 2.0) -> float:
    """The sum of one metric's series on a server's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=timeout_s) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


def tree_bytes(path: Path) -> dict:
    """Apparent size and allocated size (du) of every file under ``path``."""
    apparent = allocated = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"apparent": apparent, "du": allocated}


class ServerProcess:
    """One server: started with its banner awaited, log kept, always stopped."""

    def __init__(self, name: str, argv: list[str], log_path: Path, banner: re.Pattern) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.banner = banner
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self._seen = threading.Event()
        self._lines: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, *self.argv],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.close()
        _LIVE.add(self)
        threading.Thread(target=self._read, daemon=True, name=f"{self.name}-out").start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._seen.wait(0.05):
            if self.proc.poll() is not None and not self._seen.wait(0.3):
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before serving; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} printed no banner in {START_TIMEOUT_S:.0f}s")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            self._lines.append(line)
            match = self.banner.search(line)
            if match and not self._seen.is_set():
                self.address = f"{HOST}:{match.group(match.re.groups)}"
                self._seen.set()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid) if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        _LIVE.discard(self)


def stop_all() -> None:
    for server in list(_LIVE):
        try:
            server.stop(grace_s=5.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(stop_all)


class MurmurCluster:
    """N shards and one router on loopback, data under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        shards: int,
        celebrity_threshold: int,
        inbox_cap: int = 800,
        label: str = "murmur",
    ) -> None:
        self.workdir = workdir
        self.label = label
        self.shard_count = shards
        self.celebrity_threshold = celebrity_threshold
        self.inbox_cap = inbox_cap
        self.shards: list[ServerProcess] = []
        self.router: ServerProcess | None = None
        self.fixed_ports: list[int] | None = None  # a restart keeps its ports
        self.router_port = 0
        self.metrics_ports: list[int] = []  # one per shard, kept across restarts
        self.shard_flags: list[str] = []  # more flags for every shard's next start

    @property
    def target(self) -> str:
        assert self.router is not None
        return self.router.address

    def data_dirs(self) -> list[Path]:
        return [self.workdir / f"shard-{i}" for i in range(self.shard_count)]

    def shard_logs(self) -> list[Path]:
        return [s.log_path for s in self.shards]

    def start(self) -> MurmurCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.metrics_ports:
            self.metrics_ports = [free_port() for _ in range(self.shard_count)]
        try:
            for index, data_dir in enumerate(self.data_dirs()):
                shard = ServerProcess(
                    f"{self.label}-shard-{index}",
                    [
                        "-m",
                        "shard.main",
                        "--host",
                        HOST,
                        "--port",
                        str(self.fixed_ports[index] if self.fixed_ports else 0),
                        "--data-dir",
                        str(data_dir),
                        "--shard-id",
                        str(index),
                        "--celebrity-threshold",
                        str(self.celebrity_threshold),
                        "--inbox-cap",
                        str(self.inbox_cap),
                        # the load generator posts and follows for thousands
                        # of accounts at once, far past any one user's pace
                        "--post-rate-limit",
                        "0",
                        "--follow-rate-limit",
                        "0",
                        "--metrics-port",
                        str(self.metrics_ports[index]),
                        *self.shard_flags,
                    ],
                    self.workdir / f"shard-{index}.log",
                    SHARD_BANNER,
                )
                self.shards.append(shard.start())
            self.router = ServerProcess(
                f"{self.label}-router",
                [
                    "-m",
                    "server.main",
                    "--host",
                    HOST,
                    "--port",
                    str(self.router_port),
                    "--shards",
                    ",".join(s.address for s in self.shards),
                ],
                self.workdir / "router.log",
                ROUTER_BANNER,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> dict[str, ServerProcess]:
        named = {"router": self.router} if self.router else {}
        named.update({f"shard-{i}": s for i, s in enumerate(self.shards)})
        return named

    def cpu(self) -> dict[str, float]:
        return {name: proc.cpu() or 0.0 for name, proc in self.processes().items()}

    def loop_fsync_s(self) -> float:
        """Seconds the shards' event loops have waited on fsyncs, all shards
        together (``murmur_inline_fsync_seconds_total``)."""
        return sum(scrape_counter(port, LOOP_FSYNC_METRIC) for port in self.metrics_ports)

    def shards_without_fsync(self) -> int:
        """How many shards report ``murmur_unsafe_no_fsync`` 1."""
        return round(
            sum(scrape_counter(port, "murmur_unsafe_no_fsync") for port in self.metrics_ports)
        )

    def rss(self) -> dict[str, int]:
        return {name: rss_bytes(proc.pid) or 0 for name, proc in self.processes().items()}

    def disk(self) -> dict:
        total = {"apparent": 0, "du": 0}
        for path in self.data_dirs():
            sizes = tree_bytes(path)
            total["apparent"] += sizes["apparent"]
            total["du"] += sizes["du"]
        return total

    def check_alive(self) -> None:
        dead = [name for name, p in self.processes().items() if not p.alive()]
        if dead:
            raise RuntimeError(f"{self.label}: {', '.join(dead)} died; see logs in {self.workdir}")

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop()
        for shard in self.shards:
            shard.stop()


class JoinServer:
    """``python -m bench.join_server`` on a prepared SQLite file."""

    def __init__(self, workdir: Path, db_path: Path) -> None:
        self.workdir = workdir
        self.db_path = db_path
        self.server: ServerProcess | None = None

    @property
    def target(self) -> str:
        assert self.server is not None
        return self.server.address

    def start(self) -> JoinServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = ServerProcess(
            "join-server",
            ["-m", "bench.join_server", "--port", "0", "--db", str(self.db_path)],
            self.workdir / "join-server.log",
            JOIN_BANNER,
        ).start()
        return self

    def cpu(self) -> dict[str, float]:
        return {"join-server": (self.server.cpu() if self.server else None) or 0.0}

    def disk(self) -> dict:
        return tree_bytes(self.db_path.parent)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

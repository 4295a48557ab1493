"""Real ``murmur-shard`` and ``murmur-router`` processes for the Admin tests.

Small on purpose: the Admin tests need things a fixed-size cluster does not
offer (a shard started later and joined with AddShard, a router given the
operator token through its environment, a shard restarted on a backup
folder), so every process is started one by one here. Each listens on port
0 and is found through the banner it prints once serving; its stderr (the
log) goes to ``<root>/<name>.log``. ``Processes.close()`` (and, as a safety
net, interpreter exit) kills every process still running.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
BANNER = re.compile(r"serving on (\S+):(\d+)")

_LIVE: weakref.WeakSet[Processes] = weakref.WeakSet()


class Server:
    """One server process, started and awaited until it prints its banner."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str], port: int = 0
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.port = 0
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *argv, "--host", HOST, "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                match = BANNER.search(raw.decode(errors="replace"))
                if match and not found.is_set():
                    self.port = int(match.group(2))
                    found.set()

        threading.Thread(target=read, name=f"{name}-stdout", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not found.wait(0.05):
            if self.proc.poll() is not None and not found.wait(0.2):
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{name} did not start in {START_TIMEOUT_S}s:\n{self.log()}")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (the process flushes and closes its LevelDB), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class Processes:
    """Every process one test starts, with their data and logs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.servers: list[Server] = []
        _LIVE.add(self)

    def data_dir(self, shard_id: int, suffix: str = "") -> Path:
        return self.root / f"shard-{shard_id}{suffix}"

    def shard(
        self,
        shard_id: int,
        data_dir: Path | None = None,
        *,
        celebrity_threshold: int | None = None,
        name: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> Server:
        argv = [
            "-m",
            "shard.main",
            "--data-dir",
            str(data_dir or self.data_dir(shard_id)),
            "--shard-id",
            str(shard_id),
            *extra_args,
        ]
        if celebrity_threshold is not None:
            argv += ["--celebrity-threshold", str(celebrity_threshold)]
        name = name or f"shard-{shard_id}"
        return self._start(name, argv, {})

    def router(
        self,
        shard_addresses: list[str],
        token: str | None,
        *,
        celebrity_threshold: int | None = None,
        name: str = "router",
        extra_args: tuple[str, ...] = (),
    ) -> Server:
        """A router; the token travels in MURMUR_ADMIN_TOKEN, never on the command line."""
        argv = ["-m", "server.main", "--shards", ",".join(shard_addresses), *extra_args]
        if celebrity_threshold is not None:
            argv += ["--celebrity-threshold", str(celebrity_threshold)]
        env = {"MURMUR_ADMIN_TOKEN": token} if token else {}
        return self._start(name, argv, env)

    def _start(self, name: str, argv: list[str], extra_env: dict[str, str]) -> Server:
        env = {k: v for k, v in os.environ.items() if k != "MURMUR_ADMIN_TOKEN"}
        env.update(extra_env, PYTHONUNBUFFERED="1")
        server = Server(name, argv, self.root / f"{name}.log", env)
        self.servers.append(server)
        return server

    def restart(self, server: Server) -> Server:
        """Start ``server`` again on its old port (shards keep their address in the
        slot map), retrying while the port is still held by the old process."""
        if server.alive():
            server.stop()
        deadline = time.monotonic() + 15
        while True:
            try:
                again = Server(server.name, server.argv, server.log_path, server.env, server.port)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.servers.append(again)
        return again

    def close(self) -> None:
        for server in self.servers:
            if server.alive():
                server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for server in self.servers:
            try:
                server.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.kill()
        _LIVE.discard(self)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _kill_leftovers() -> None:
    for group in list(_LIVE):
        for server in group.servers:
            server.kill()


def eventually(check, timeout: float = 20.0, interval: float = 0.1):
    """Call ``check`` until it stops raising AssertionError; then return its result."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)

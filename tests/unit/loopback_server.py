"""An in-process gRPC server on an ephemeral loopback port, for fake
services the client and CLI tests talk to over a real channel."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc


@contextlib.contextmanager
def serving(servicer: Any, add_to_server: Callable[[Any, grpc.Server], None]) -> Iterator[str]:
    """Serve ``servicer`` until the block ends; yields its address."""
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    add_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)

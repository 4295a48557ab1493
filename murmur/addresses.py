"""Ports and ``host:port`` addresses, checked before gRPC sees them.

A shard's address (as the slot map holds it) is checked by the router's
AddShard and, before any call, by ``murmur-admin add-shard``: gRPC takes
anything as a name to resolve, so a scheme ("http://", "unix:"), white
space or a port past 65535 came back only as "no shard answers". Port
flags are checked when parsed, for the same reason.
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Callable

MAX_PORT = 65535
# ASCII digits: str.isdigit() takes '²' and '５'
PORT = re.compile(r"[0-9]{1,5}")
# a host name or IPv4 address, or a bracketed IPv6 one
HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
MAX_HOST = 253  # DNS's limit for a name


def address_problem(address: str) -> str | None:
    """Why ``address`` is not host:port, or None if it is."""
    host, _, port = address.rpartition(":")
    if len(host) > MAX_HOST:  # gRPC's error would quote it three times, past 8 KB
        return f"the host in the address is {len(host)} characters; the limit is {MAX_HOST}"
    if HOST.fullmatch(host) and PORT.fullmatch(port) and 1 <= int(port) <= MAX_PORT:
        return None
    return (
        f"address {address!r} must be host:port (a host name, an IPv4 address or a "
        "[bracketed] IPv6 one; the port 1-65535)"
    )


def port_flag(lowest: int) -> Callable[[str], int]:
    """An argparse type for a TCP port from ``lowest`` to 65535, checked when
    parsed: unchecked, 70000 reached bind() as an OverflowError traceback (or
    gRPC's "address in use?") after the process had started its work. Port 0
    means "pick a free one" to the servers; murmur-cluster asks for 1."""

    def port(text: str) -> int:
        value = int(text)
        if not lowest <= value <= MAX_PORT:
            free = " (0 picks a free port)" if lowest == 0 else ""
            raise argparse.ArgumentTypeError(
                f"port {value} is out of range; it must be {lowest}-{MAX_PORT}{free}"
            )
        return value

    return port


def bind_family(host: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon in it, IPv4 (or a name) otherwise."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_host(host: str) -> str:
    """``[::1]`` as gRPC takes it, ``::1`` as bind() does."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def listen_host(text: str) -> str:
    """--host, probed by binding a free port on it when parsed: a name that
    does not resolve, or an address this machine does not have, used to read
    as "port ... is taken" (murmur-cluster, which sent people looking for
    another cluster) or "address in use?" (router and shard, after a C-core
    log line). An empty one (every address, to bind()) is refused, and a
    bare IPv6 address comes back bracketed, as gRPC takes it ("::1:50061"
    was "Misformatted domain name")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("it is empty; give an address of this machine")
    try:
        with socket.socket(bind_family(text)) as probe:
            probe.bind((bind_host(text), 0))
    except socket.gaierror as exc:
        raise argparse.ArgumentTypeError(f"cannot resolve {text!r} ({exc.strerror})") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot listen on {text!r} ({exc.strerror}); give an address of this machine"
        ) from None
    return f"[{text}]" if ":" in text and not text.startswith("[") else text


def shard_list(text: str) -> str:
    """--shards as argparse checks it: each comma-separated address host:port
    (a port past 65535 used to leave the router silent for --shard-wait)."""
    for address in (part.strip() for part in text.split(",")):
        problem = address_problem(address) if address else None
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
    return text

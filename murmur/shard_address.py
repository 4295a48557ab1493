"""What a shard's address looks like: ``host:port``, as the slot map holds it.

Checked by the router's AddShard and, before any call, by ``murmur-admin
add-shard``: gRPC takes anything as a name to resolve, so a scheme
("http://", "unix:"), white space or a port past 65535 came back only as
"no shard answers".
"""

from __future__ import annotations

import re

# ASCII digits: str.isdigit() takes '²' and '５'
PORT = re.compile(r"[0-9]{1,5}")
# a host name or IPv4 address, or a bracketed IPv6 one
HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def address_problem(address: str) -> str | None:
    """Why ``address`` is not host:port, or None if it is."""
    host, _, port = address.rpartition(":")
    if HOST.fullmatch(host) and PORT.fullmatch(port) and 1 <= int(port) <= 65535:
        return None
    return (
        f"address {address!r} must be host:port (a host name, an IPv4 address or a "
        "[bracketed] IPv6 one; the port 1-65535)"
    )

"""What gRPC will carry as a metadata value: printable ASCII (0x20-0x7E).

The operator token travels as ``authorization: Bearer <token>``. gRPC
refuses any other character inside the call, with C-core log lines and
INTERNAL "Invalid metadata", which reads like a server fault; so the CLIs
and the router's --admin-token check it first.
"""

from __future__ import annotations

import unicodedata


def header_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent as a metadata value, or None, without
    quoting any of it (it is a secret)."""
    for index, char in enumerate(text):
        if not " " <= char <= "~":
            kind = (
                "a control character"
                if unicodedata.category(char) == "Cc"
                else "a non-ASCII character"
            )
            where = " at its end" if index == len(text) - 1 else ""
            return (
                f"holds {kind}{where}; only printable ASCII (0x20-0x7E) can be sent "
                "in the authorization header"
            )
    return None

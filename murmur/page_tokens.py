"""Opaque page tokens.

A token is a cursor (the last id a page returned) tagged with what it pages
through and a checksum, base64url-encoded. Timelines page by tweet id, so
continuing from a token never repeats a tweet and never skips an older one,
however many new tweets arrive meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import struct
import zlib

_FORMAT = ">BBQ"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")  # unpadded, as encode() writes it
_VERSION = 1


class TokenKind(enum.IntEnum):
    USER_TIMELINE = 1
    HOME_TIMELINE = 2
    FOLLOWERS = 3
    FOLLOWING = 4


class BadPageToken(ValueError):
    """The token was not made by Murmur for this listing."""


def encode(kind: TokenKind, cursor: int) -> str:
    body = struct.pack(_FORMAT, _VERSION, int(kind), cursor)
    check = struct.pack(">I", zlib.crc32(body))
    return base64.urlsafe_b64encode(body + check).rstrip(b"=").decode("ascii")


def decode(kind: TokenKind, token: str) -> int:
    """The cursor inside ``token``; 0 for an empty token (the first page)."""
    if not token:
        return 0
    if not _BASE64URL.fullmatch(token):  # b64decode would drop the stray characters
        raise BadPageToken("page_token is not valid base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadPageToken("page_token is not valid base64url") from exc
    size = struct.calcsize(_FORMAT)
    if len(raw) != size + 4:
        raise BadPageToken("page_token has the wrong length (truncated or forged)")
    body, check = raw[:size], raw[size:]
    if struct.unpack(">I", check)[0] != zlib.crc32(body):
        raise BadPageToken("page_token checksum does not match (truncated or forged)")
    version, got_kind, cursor = struct.unpack(_FORMAT, body)
    if version != _VERSION:
        raise BadPageToken(f"page_token version {version} is not supported")
    if got_kind != int(kind):
        raise BadPageToken("page_token belongs to a different listing")
    return cursor

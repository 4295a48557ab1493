"""Opaque page tokens.

A token is a cursor (the last id a page returned) tagged with what it pages
through (the listing's kind and whose listing it is) and a checksum,
base64url-encoded. Timelines page by tweet id, so continuing from a token
never repeats a tweet and never skips an older one, however many new tweets
arrive meanwhile. Binding a token to its owner turns a token passed with the
wrong user_id (a client bug that would page silently through someone else's
listing from an unrelated position) into a clear INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import struct
import zlib

_FORMAT = ">BBQQ"  # version, kind, owner, cursor
_LEGACY_FORMAT = ">BBQ"  # version 1: kind and cursor, no owner
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")  # unpadded, as encode() writes it
_VERSION = 2
_LEGACY_VERSION = 1
_CHECK_SIZE = 4


class TokenKind(enum.IntEnum):
    USER_TIMELINE = 1
    HOME_TIMELINE = 2
    FOLLOWERS = 3
    FOLLOWING = 4


class BadPageToken(ValueError):
    """The token was not made by Murmur for this listing."""


def encode(kind: TokenKind, owner: int, cursor: int) -> str:
    """The token continuing ``owner``'s listing of ``kind`` after ``cursor``."""
    body = struct.pack(_FORMAT, _VERSION, int(kind), owner, cursor)
    check = struct.pack(">I", zlib.crc32(body))
    return base64.urlsafe_b64encode(body + check).rstrip(b"=").decode("ascii")


def decode(kind: TokenKind, owner: int, token: str) -> int:
    """The cursor inside ``token``; 0 for an empty token (the first page).

    Version 1 tokens (made before tokens named their owner) are still read,
    for any owner, so that a client holding one from a router not yet
    upgraded keeps its place on an upgraded one. The other way fails: a
    router from before version 2 refuses its tokens, so while routers are
    upgraded one by one, a client may have to start a listing over."""
    if not token:
        return 0
    body = _checked_body(token)
    if body[0] == _VERSION and len(body) == struct.calcsize(_FORMAT):
        _, got_kind, got_owner, cursor = struct.unpack(_FORMAT, body)
    elif body[0] == _LEGACY_VERSION and len(body) == struct.calcsize(_LEGACY_FORMAT):
        _, got_kind, cursor = struct.unpack(_LEGACY_FORMAT, body)
        got_owner = owner
    elif body[0] in (_VERSION, _LEGACY_VERSION):
        raise BadPageToken("page_token has the wrong length (truncated or forged)")
    else:
        raise BadPageToken(f"page_token version {body[0]} is not supported")
    if got_kind != int(kind):
        raise BadPageToken("page_token belongs to a different listing")
    if got_owner != owner:
        raise BadPageToken(f"page_token was issued for user {got_owner}, not user {owner}")
    return cursor


def _checked_body(token: str) -> bytes:
    """The token's bytes before its checksum, once the checksum matches."""
    if not _BASE64URL.fullmatch(token):  # b64decode would drop the stray characters
        raise BadPageToken("page_token is not valid base64url")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadPageToken("page_token is not valid base64url") from exc
    if len(raw) <= _CHECK_SIZE:
        raise BadPageToken("page_token has the wrong length (truncated or forged)")
    body, check = raw[:-_CHECK_SIZE], raw[-_CHECK_SIZE:]
    if struct.unpack(">I", check)[0] != zlib.crc32(body):
        raise BadPageToken("page_token checksum does not match (truncated or forged)")
    return body

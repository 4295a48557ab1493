"""What the fuzz suites share: the Hypothesis settings, the checks every error
message must pass, store snapshots, and an independent page-token reader."""

from __future__ import annotations

import base64
import binascii
import os
import string
import zlib
from typing import Any

from hypothesis import HealthCheck, settings

# Derandomized (the same examples on every run, so CI is stable) and never a
# wall-clock deadline per example; tests pick ``max_examples=examples(n)``.
# For a deeper hunt: MURMUR_FUZZ_SCALE=20 (20x the examples) and
# MURMUR_FUZZ_RANDOM=1 (new examples on every run instead of the fixed ones).
SCALE = float(os.environ.get("MURMUR_FUZZ_SCALE", "1"))
FUZZ = settings(
    derandomize=not os.environ.get("MURMUR_FUZZ_RANDOM"),
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


def examples(n: int) -> int:
    return max(1, round(n * SCALE))


U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
I32_MIN = -(1 << 31)
I32_MAX = (1 << 31) - 1
EDGE_IDS = (0, 1, 2, 1023, I64_MAX, 1 << 63, U64_MAX)

# Text that must never reach a caller: stack traces, source locations, Python
# exception class names, internals of the libraries underneath.
LEAK_MARKERS = (
    "Traceback",
    'File "',
    "<class '",
    "Exception",
    "KeyError",
    "ValueError",
    "TypeError",
    "AttributeError",
    "IndexError",
    "OverflowError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "DecodeError",
    "struct.error",
    "AssertionError",
    "RuntimeError",
    "RecursionError",
    "MemoryError",
    "plyvel",
    "grpc._cython",
    "AioRpcError",
    "StatusCode.",
    "Unexpected",
)
MAX_MESSAGE = 600  # an actionable message, not an echo of a megabyte of input


def message_problems(message: str, allow_empty: bool = False) -> list[str]:
    """Why ``message`` is not fit for a caller (empty list: it is fine).

    ``allow_empty`` for DEADLINE_EXCEEDED, which the caller's own gRPC library
    may produce (with no message) before any server answered."""
    problems = [f"contains {marker!r}" for marker in LEAK_MARKERS if marker in message]
    if not message.strip() and not allow_empty:
        problems.append("is empty")
    if len(message) > MAX_MESSAGE:
        problems.append(f"is {len(message)} characters long")
    return problems


# page tokens, read independently of murmur.page_tokens -------------------------
TOKEN_VERSION = 2
TOKEN_BODY = 18  # version (1 byte) | kind (1) | owner (8) | cursor (8), then crc32 (4 bytes)
LEGACY_VERSION = 1
LEGACY_BODY = 10  # version 1: version | kind | cursor, for any owner


def token_bytes(token: str) -> bytes | None:
    """The bytes in ``token``, written as encode() writes it: the base64url
    alphabet, unpadded (None: anything else)."""
    if not set(token) <= set(string.ascii_letters + string.digits + "-_"):
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None


def token_cursor(kind: int, owner: int, token: str) -> int | None:
    """The cursor of a well-formed token of ``owner``'s listing ``kind``;
    None if the router must refuse it. The empty token is the first page
    (cursor 0); a version 1 token names no owner and pages any."""
    if not token:
        return 0
    raw = token_bytes(token)
    if raw is None or len(raw) < 5:
        return None
    body, check = raw[:-4], raw[-4:]
    if zlib.crc32(body) != int.from_bytes(check, "big"):
        return None
    if body[0] == TOKEN_VERSION and len(body) == TOKEN_BODY:
        made_for = int.from_bytes(body[2:10], "big")
    elif body[0] == LEGACY_VERSION and len(body) == LEGACY_BODY:
        made_for = owner
    else:
        return None
    if body[1] != kind or made_for != owner:
        return None
    return int.from_bytes(body[-8:], "big")


def make_token(kind: int, owner: int, cursor: int, version: int = TOKEN_VERSION) -> str:
    """A token with a correct checksum (forged, but indistinguishable from real)."""
    return _sealed(bytes([version, kind]) + owner.to_bytes(8, "big") + cursor.to_bytes(8, "big"))


def make_legacy_token(kind: int, cursor: int) -> str:
    """A version 1 token, as routers made them before tokens named their owner."""
    return _sealed(bytes([LEGACY_VERSION, kind]) + cursor.to_bytes(8, "big"))


def _sealed(body: bytes) -> str:
    return encode_raw_token(body + zlib.crc32(body).to_bytes(4, "big"))


def encode_raw_token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# store snapshots ---------------------------------------------------------------
def snapshot(cluster: Any) -> dict[int, list[tuple[bytes, bytes]]]:
    """Every key and value of every shard's LevelDB (MemoryCluster)."""
    return {i: list(state.store.db.iterator()) for i, state in cluster.states.items()}


def snapshot_diff(before: dict, after: dict, limit: int = 5) -> list[str]:
    """Human-readable differences between two snapshots (empty: identical)."""
    changes: list[str] = []
    for shard in sorted(set(before) | set(after)):
        old, new = dict(before.get(shard, [])), dict(after.get(shard, []))
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                what = "added" if key not in old else "removed" if key not in new else "changed"
                changes.append(f"shard {shard}: {what} {key[:40]!r}")
                if len(changes) >= limit:
                    return changes
    return changes

"""Errors that carry a gRPC status code and a message a person can act on.

Storage and routing code raises ``ServiceError``; the servicers turn it into
``context.abort`` so every failure reaches the caller as a precise status.
"""

from __future__ import annotations

import grpc

WRONG_SLOT_METADATA = "murmur-wrong-slot"


class ServiceError(Exception):
    """A failure to report to the caller with ``code`` and ``message``."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailing: tuple[tuple[str, str], ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing = trailing
        # seconds until the same call would be let through (a rate limit):
        # callers get it as a google.rpc.RetryInfo (murmur/retry_info.py)
        self.retry_after = retry_after


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


def wrong_slot(shard_id: int, slot: int) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"shard {shard_id} does not own slot {slot}",
        ((WRONG_SLOT_METADATA, str(slot)),),
    )


# ShardStatus.health of a shard whose storage fence is closed (the router
# words it so, murmur-admin shows it); the reason follows it
WRITES_REFUSED_HEALTH = "SERVING READS; WRITES REFUSED"


class StorageFailed(Exception):
    """A shard's storage refused a write for good: one write (or fsync) to
    LevelDB failed, and LevelDB 1.22 may then have left a torn record in
    its log, which a restart reads as corruption, silently dropping every
    write after it. So the shard takes no more writes until it restarts.
    Reaches callers as UNAVAILABLE, the text following the shard's name."""

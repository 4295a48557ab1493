"""A small synchronous Python client for the operator API, ``murmur.v1.Admin``.

One method per RPC. Every call carries the operator token as metadata
``authorization: Bearer <token>`` and a deadline; failures become the typed
exceptions of ``client.errors`` (UNAUTHENTICATED without a token,
PERMISSION_DENIED with a wrong one, FAILED_PRECONDITION when the router has
no token configured). The streaming RPCs (MoveSlots, Rebalance, DrainShard,
BackupShard) return iterators of progress messages; errors raised while
iterating are typed the same way, and closing the iterator early cancels the
call.

The token is kept out of ``repr()`` and never appears in an exception.

Retries: only the read-only calls (GetClusterStatus, GetShardStats,
GetSettings, CheckConsistency) are retried on UNAVAILABLE by the channel.
Moves, backups, repairs and map changes are not: a repeat after a lost answer
is the operator's decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc

from client.client import (
    DEFAULT_TARGET,
    RECONNECT_OPTIONS,
    RETRY_POLICY,
    ChannelClient,
    check_timeout,
    open_channel,
)
from client.errors import error_from_rpc
from murmur.v1 import admin_pb2 as apb
from murmur.v1 import admin_pb2_grpc as apb_grpc
from murmur.v1 import shard_pb2 as spb

__all__ = [
    "ADMIN_SERVICE_NAME",
    "AdminClient",
    "READ_ONLY_METHODS",
    "admin_channel_options",
]

ADMIN_SERVICE_NAME: str = apb.DESCRIPTOR.services_by_name["Admin"].full_name  # murmur.v1.Admin

READ_ONLY_METHODS: tuple[str, ...] = (
    "GetClusterStatus",
    "GetShardStats",
    "GetSettings",
    "CheckConsistency",
)

_T = TypeVar("_T")


def admin_channel_options(retries: bool = True) -> list[tuple[str, Any]]:
    """Channel options: retry UNAVAILABLE on the read-only Admin RPCs only;
    reconnect soon after a router comes back, as ``MurmurClient`` does."""
    if not retries:
        return list(RECONNECT_OPTIONS)
    names = [{"service": ADMIN_SERVICE_NAME, "method": m} for m in READ_ONLY_METHODS]
    config = {"methodConfig": [{"name": names, "retryPolicy": RETRY_POLICY}]}
    return [
        *RECONNECT_OPTIONS,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
    ]


class AdminClient(ChannelClient):
    """One connection to a Murmur router's Admin service. Thread-safe.

    ``timeout`` is the deadline in seconds of quick calls (status, stats,
    settings, adding and removing shards). ``long_timeout`` bounds the calls
    that scan or copy a shard's data: the streams, CompactShard,
    CheckConsistency, Repair and UpdateSettings (which re-evaluates every
    user); ``None`` means no deadline. Either must otherwise be more than 0
    and at most ``MAX_TIMEOUT_S`` seconds (ValueError), and after ``close()``
    every call raises ``ClientClosed``. ``token`` may be ``None`` (no
    authorization metadata is sent, so the router answers UNAUTHENTICATED).
    ``tls_ca``: speak TLS, trusting this PEM CA file (a router started with
    ``--tls-*`` flags). Pass ``channel`` to reuse one; it is then not closed
    here, and ``retries``/``tls_ca`` have no effect.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        long_timeout: float | None = 3600.0,
        channel: grpc.Channel | None = None,
        retries: bool = True,
        tls_ca: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = check_timeout("timeout", timeout)
        self.long_timeout = (
            None if long_timeout is None else check_timeout("long_timeout", long_timeout)
        )
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._owns_channel = channel is None
        self._channel = channel or open_channel(target, admin_channel_options(retries), tls_ca)
        self._stub = apb_grpc.AdminStub(self._channel)

    def __repr__(self) -> str:
        token = "set" if self._metadata else "none"
        return f"AdminClient(target={self.target!r}, token={token}, timeout={self.timeout!r})"

    # -- plumbing ----------------------------------------------------------

    def _call(self, rpc: Callable[..., _T], request: Any, long: bool = False) -> _T:
        self._check_open()
        timeout = self.long_timeout if long else self.timeout
        try:
            return rpc(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def _stream(self, rpc: Callable[..., Any], request: Any) -> Iterator[Any]:
        """Start a server stream now; iterate it lazily with typed errors.

        The generator cancels the call when closed early (``break`` in a for
        loop, garbage collection, Ctrl-C), so the router stops its work.
        """
        self._check_open()
        call = rpc(request, timeout=self.long_timeout, metadata=self._metadata)
        return _typed_stream(call)

    # -- cluster -----------------------------------------------------------

    def get_cluster_status(self) -> apb.ClusterStatus:
        """Every shard: address, slots, health, key counts, disk bytes; the map version."""
        return self._call(self._stub.GetClusterStatus, apb.GetClusterStatusRequest())

    def get_shard_stats(self, shard_id: int) -> apb.ShardStats:
        """One shard's status, LevelDB statistics, fan-out backlog and lag."""
        return self._call(self._stub.GetShardStats, apb.GetShardStatsRequest(shard_id=shard_id))

    def add_shard(self, address: str) -> apb.AddShardResponse:
        """Join a running, empty ``murmur-shard`` at ``address`` (host:port)."""
        return self._call(self._stub.AddShard, apb.AddShardRequest(address=address))

    def remove_shard(self, shard_id: int) -> apb.RemoveShardResponse:
        """Forget a shard that owns no slots (drain it first)."""
        return self._call(self._stub.RemoveShard, apb.RemoveShardRequest(shard_id=shard_id))

    # -- slot moves (streams) ------------------------------------------------

    def move_slots(self, slots: Iterable[int], target_shard: int) -> Iterator[apb.MoveProgress]:
        """Move ``slots`` to ``target_shard`` online, yielding progress."""
        request = apb.MoveSlotsRequest(slots=list(slots), target_shard=target_shard)
        return self._stream(self._stub.MoveSlots, request)

    def rebalance(self, dry_run: bool = False) -> Iterator[apb.MoveProgress]:
        """Even out slot counts (only plan with ``dry_run``), yielding progress."""
        return self._stream(self._stub.Rebalance, apb.RebalanceRequest(dry_run=dry_run))

    def drain_shard(self, shard_id: int) -> Iterator[apb.MoveProgress]:
        """Move every slot off ``shard_id``, yielding progress."""
        return self._stream(self._stub.DrainShard, apb.DrainShardRequest(shard_id=shard_id))

    # -- maintenance ---------------------------------------------------------

    def compact_shard(self, shard_id: int) -> apb.CompactShardResponse:
        """Compact one shard's LevelDB; disk bytes before and after."""
        return self._call(
            self._stub.CompactShard,
            apb.CompactShardRequest(shard_id=shard_id),
            long=True,
        )

    def backup_shard(self, shard_id: int, path: str) -> Iterator[apb.BackupProgress]:
        """Snapshot one shard's LevelDB into ``path`` (absolute, on the shard's
        host, not existing yet), yielding progress; the last message has ``done``."""
        request = apb.BackupShardRequest(shard_id=shard_id, path=path)
        return self._stream(self._stub.BackupShard, request)

    # -- settings ------------------------------------------------------------

    def get_settings(self) -> spb.Settings:
        """The cluster-wide runtime settings."""
        return self._call(self._stub.GetSettings, spb.GetSettingsRequest())

    def update_settings(
        self,
        *,
        celebrity_threshold: int | None = None,
        inbox_cap: int | None = None,
        backfill_limit: int | None = None,
        post_rate_limit: int | None = None,
        follow_rate_limit: int | None = None,
    ) -> spb.Settings:
        """Change the given settings on every shard; the others stay as they are.
        The rate limits are per user per minute, 0 for none."""
        given = {
            "celebrity_threshold": celebrity_threshold,
            "inbox_cap": inbox_cap,
            "backfill_limit": backfill_limit,
            "post_rate_limit": post_rate_limit,
            "follow_rate_limit": follow_rate_limit,
        }
        request = spb.UpdateSettingsRequest(
            **{name: value for name, value in given.items() if value is not None}
        )
        return self._call(self._stub.UpdateSettings, request, long=True)

    # -- consistency ---------------------------------------------------------

    def check_consistency(self, slots: Iterable[int] = ()) -> apb.ConsistencyReport:
        """One-sided edges, wrong counters, stale outbox records (all slots if empty)."""
        request = apb.CheckConsistencyRequest(slots=list(slots))
        return self._call(self._stub.CheckConsistency, request, long=True)

    def repair(self, slots: Iterable[int] = ()) -> apb.ConsistencyReport:
        """Like ``check_consistency``, then fix what it found."""
        request = apb.CheckConsistencyRequest(slots=list(slots))
        return self._call(self._stub.Repair, request, long=True)


def _typed_stream(call: Any) -> Iterator[Any]:
    try:
        yield from call
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
    finally:
        # A no-op once the stream ended; stops the router's work if we quit early.
        call.cancel()

"""Calls from the router to shards: deadlines carried, failures named.

Every call carries the caller's remaining deadline (or a default when the
caller set none), and a shard that does not answer becomes UNAVAILABLE or
DEADLINE_EXCEEDED naming that shard, so users on other shards keep working
and the caller knows whom to blame.
"""

from __future__ import annotations

from typing import Any

import grpc

from murmur.errors import WRONG_SLOT_METADATA, ServiceError
from murmur.v1 import shard_pb2_grpc
from server.slot_map import RoutingTable

DEFAULT_TIMEOUT_S = 10.0
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),
]


class WrongSlot(ServiceError):
    """The shard no longer owns the slot: the routing table is stale."""


class ShardPool:
    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._stubs: dict[tuple[int, str], shard_pb2_grpc.ShardStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def describe(self, shard_id: int) -> str:
        return f"shard {shard_id} ({self.table.addresses.get(shard_id, 'no address')})"

    def stub(self, shard_id: int) -> shard_pb2_grpc.ShardStub:
        address = self.table.addresses.get(shard_id)
        if not address:
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE, f"shard {shard_id} has no known address"
            )
        key = (shard_id, address)
        stub = self._stubs.get(key)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[key] = shard_pb2_grpc.ShardStub(channel)
        return stub

    async def call(self, shard_id: int, method: str, request: Any, timeout: float | None) -> Any:
        """Invoke ``method`` on one shard, turning its failure into a ServiceError."""
        rpc = getattr(self.stub(shard_id), method)
        try:
            return await rpc(request, timeout=timeout if timeout is not None else DEFAULT_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(shard_id, exc) from None

    def _translate(self, shard_id: int, exc: grpc.aio.AioRpcError) -> ServiceError:
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServiceError(code, f"{self.describe(shard_id)} is unavailable: {exc.details()}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServiceError(
                code, f"{self.describe(shard_id)} did not answer within the deadline"
            )
        if code == grpc.StatusCode.CANCELLED:
            return ServiceError(code, f"call to {self.describe(shard_id)} was cancelled")
        trailing = exc.trailing_metadata() or ()
        if any(key == WRONG_SLOT_METADATA for key, _ in trailing):
            return WrongSlot(code, exc.details() or "wrong slot")
        return ServiceError(code, exc.details() or f"{code.name} from {self.describe(shard_id)}")

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

"""Lazily opened channels to shards, one per (shard id, address).

The router and every shard (for fan-out and moves) talk to shards the same
way: TLS as configured, large messages allowed, one channel per address,
closed together at shutdown.
"""

from __future__ import annotations

import grpc

from murmur import tls
from murmur.v1 import shard_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.keepalive_time_ms", 30_000),
]


class ShardStubs:
    def __init__(self) -> None:
        self._stubs: dict[tuple[int, str], shard_pb2_grpc.ShardStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def get(self, shard_id: int, address: str) -> shard_pb2_grpc.ShardStub:
        key = (shard_id, address)
        stub = self._stubs.get(key)
        if stub is None:
            channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[key] = shard_pb2_grpc.ShardStub(channel)
        return stub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

"""Lazily opened channels to shards, one per (shard id, address).

The router and every shard (for fan-out and moves) talk to shards the same
way: TLS as configured, large messages allowed, one channel per address and
one ExecuteStream on it for batches, closed together at shutdown.
"""

from __future__ import annotations

import grpc

from murmur import tls
from murmur.execute_stream import ShardStream
from murmur.serving import KEEPALIVE_FLOOR_MS
from murmur.v1 import shard_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    # finds a dead connection under an idle stream; servers accept a ping
    # every KEEPALIVE_FLOOR_MS (murmur.serving), a third of this
    ("grpc.keepalive_time_ms", 3 * KEEPALIVE_FLOOR_MS),
    # gRPC's reconnect backoff grows to 120 s by default: a shard back after
    # a minute's outage went unused for another ~35 s. Few channels ever
    # point at one shard (one per router and per peer shard), so retrying
    # every second at most costs nothing and users get it back at once.
    # (Not grpc.min_reconnect_backoff_ms: gRPC core takes that as each
    # attempt's connect timeout, and a slow handshake would never finish.)
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


class ShardStubs:
    def __init__(self) -> None:
        self._stubs: dict[tuple[int, str], shard_pb2_grpc.ShardStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        self._streams: dict[tuple[int, str], ShardStream] = {}

    def get(self, shard_id: int, address: str) -> shard_pb2_grpc.ShardStub:
        key = (shard_id, address)
        stub = self._stubs.get(key)
        if stub is None:
            channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            stub = self._stubs[key] = shard_pb2_grpc.ShardStub(channel)
        return stub

    def stream(self, shard_id: int, address: str) -> ShardStream:
        key = (shard_id, address)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = ShardStream(self.get(shard_id, address))
        return stream

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        for channel in self._channels:
            await channel.close()

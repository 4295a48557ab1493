"""Channels from this shard to the other shards, for fan-out deliveries."""

from __future__ import annotations

import grpc

from murmur import tls
from murmur.v1 import shard_pb2_grpc
from shard.ownership import SlotOwnership

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]


class PeerShards:
    """Lazily opened stubs keyed by shard id; addresses come from the slot map."""

    def __init__(self, ownership: SlotOwnership) -> None:
        self.ownership = ownership
        self._stubs: dict[tuple[int, str], shard_pb2_grpc.ShardStub] = {}
        self._channels: list[grpc.aio.Channel] = []

    def address(self, shard_id: int) -> str:
        return self.ownership.slot_map.addresses.get(shard_id, "")

    def stub(self, shard_id: int, address: str = "") -> shard_pb2_grpc.ShardStub:
        """A stub for ``shard_id`` at ``address`` (default: its slot-map address)."""
        address = address or self.address(shard_id)
        if not address:
            raise LookupError(f"shard {shard_id} has no address in slot map")
        key = (shard_id, address)
        if key not in self._stubs:
            channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
            self._channels.append(channel)
            self._stubs[key] = shard_pb2_grpc.ShardStub(channel)
        return self._stubs[key]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

"""Channels from this shard to the other shards, for fan-out deliveries."""

from __future__ import annotations

from murmur.execute_stream import ShardStream
from murmur.shard_stubs import ShardStubs
from murmur.v1 import shard_pb2_grpc
from shard.ownership import SlotOwnership


class PeerShards:
    """Stubs keyed by shard id; addresses come from the slot map."""

    def __init__(self, ownership: SlotOwnership) -> None:
        self.ownership = ownership
        self._stubs = ShardStubs()

    def address(self, shard_id: int) -> str:
        return self.ownership.slot_map.addresses.get(shard_id, "")

    def stub(self, shard_id: int, address: str = "") -> shard_pb2_grpc.ShardStub:
        """A stub for ``shard_id`` at ``address`` (default: its slot-map address)."""
        address = address or self.address(shard_id)
        if not address:
            raise LookupError(f"shard {shard_id} has no address in slot map")
        return self._stubs.get(shard_id, address)

    def stream(self, shard_id: int) -> ShardStream:
        """The ExecuteStream to ``shard_id`` at its slot-map address."""
        address = self.address(shard_id)
        if not address:
            raise LookupError(f"shard {shard_id} has no address in slot map")
        return self._stubs.stream(shard_id, address)

    async def close(self) -> None:
        await self._stubs.close()

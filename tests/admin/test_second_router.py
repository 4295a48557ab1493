"""A router that took no part in an operator's change still follows it.

A shard drained and removed through one router, then stopped, never answers
another router again, so that router never hears "wrong slot" from it: it
must find the new slot map on its own (its health probe of the silent shard
re-reads the map) and send those users to their new shard.
"""

from __future__ import annotations

import secrets

import grpc
import pytest

from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import Unavailable
from murmur.slots import slot_for_user
from murmur.v1 import shard_pb2, shard_pb2_grpc
from tests.admin.launcher import Processes, eventually

pytestmark = pytest.mark.integration


def _slot_owners(shard_address: str) -> list[int]:
    with grpc.insecure_channel(shard_address) as channel:
        info = shard_pb2_grpc.ShardStub(channel).GetShardInfo(
            shard_pb2.GetShardInfoRequest(), timeout=10
        )
    return list(info.slot_map.owners)


def test_a_router_finds_the_new_owner_of_a_removed_shards_slots(tmp_path) -> None:
    token = secrets.token_hex(16)
    with Processes(tmp_path) as procs:
        shards = [procs.shard(i) for i in range(3)]
        addresses = [shard.address for shard in shards]
        operator_router = procs.router(addresses, token)
        other_router = procs.router(addresses, None, name="router-b")
        admin = AdminClient(operator_router.address, token=token)
        client = MurmurClient(other_router.address, timeout=5.0, retries=False)
        try:
            users = [client.create_user(f"user{i}").user_id for i in range(24)]
            owners = _slot_owners(shards[0].address)
            on_leaving = [u for u in users if owners[slot_for_user(u)] == 2]
            assert on_leaving, "no user landed on shard 2"

            list(admin.drain_shard(2))
            admin.remove_shard(2)
            shards[2].kill()

            def every_user_reads_through_the_other_router() -> None:
                for user in users:
                    try:
                        assert client.get_user(user_id=user).user_id == user
                    except Unavailable as exc:  # until it learns the new map
                        raise AssertionError(str(exc)) from exc

            eventually(every_user_reads_through_the_other_router, timeout=20)
            assert "left the slot map" in other_router.log()
        finally:
            client.close()
            admin.close()

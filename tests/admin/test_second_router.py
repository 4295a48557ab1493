"""A router that took no part in an operator's change still follows it.

A shard drained and removed through one router, then stopped, never answers
another router again, so that router never hears "wrong slot" from it: it
must find the new slot map on its own (its health probe of the silent shard
re-reads the map) and send those users to their new shard.
"""

from __future__ import annotations

import asyncio
import secrets
import threading

import grpc
import pytest

from client.admin_client import AdminClient
from client.client import MurmurClient
from client.errors import FailedPrecondition, Unavailable
from murmur.slots import SLOT_COUNT, slot_for_handle, slot_for_user
from murmur.v1 import shard_pb2, shard_pb2_grpc
from server.slot_map import RoutingTable, bootstrap
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


@pytest.mark.parametrize("chained", [False, True], ids=["disjoint", "chained"])
def test_moves_made_at_once_through_two_routers_take_turns_and_lose_nothing(
    tmp_path, chained: bool
) -> None:
    """Each router made its move as "its map + 1": two different maps under
    one version, each pair of shards holding one; the next move then built
    on one of them handed the other's slots back to a shard that had
    deleted them (a user and tweet gone, the handle free again). When one
    move's target was the other's source, the source dropped its copy and
    kept claiming the slots. Now a router takes the cluster's map-change
    lease first: a move started while the other runs is refused, naming the
    other router, and goes through when retried."""
    token = secrets.token_hex(16)
    with Processes(tmp_path) as procs:
        shards = [procs.shard(i) for i in range(4)]
        addresses = [shard.address for shard in shards]
        routers = [procs.router(addresses, token, name=f"router-{n}") for n in (1, 2)]
        owners = _slot_owners(addresses[0])
        second_source = 2 if chained else 1  # chained: the first move's target moves too
        moves = [
            (routers[0], [s for s in range(SLOT_COUNT) if owners[s] == 0][:64], 2),
            (routers[1], [s for s in range(SLOT_COUNT) if owners[s] == second_source][:64], 3),
        ]
        with MurmurClient(routers[0].address, timeout=10) as client:
            written = []
            for n, (_router, slots, _target) in enumerate(moves):
                handle = next(
                    f"u{n}x{i}" for i in range(100_000) if slot_for_handle(f"u{n}x{i}") in slots
                )
                user = client.create_user(handle).user_id
                written.append((handle, user, client.post_tweet(user, f"kept {n}").tweet_id))
        with grpc.insecure_channel(addresses[0]) as channel:  # another router's change
            coordinator = shard_pb2_grpc.ShardStub(channel)
            held = shard_pb2.AcquireMapLeaseRequest(holder="router elsewhere", ttl_ms=60_000)
            assert coordinator.AcquireMapLease(held, timeout=10).granted
            with AdminClient(routers[1].address, token=token, timeout=120) as admin:
                with pytest.raises(FailedPrecondition) as refused:
                    list(admin.move_slots(moves[1][1], moves[1][2]))
            assert "another router (router elsewhere) is changing the slot map" in (
                refused.value.details
            )
            coordinator.ReleaseMapLease(
                shard_pb2.ReleaseMapLeaseRequest(holder="router elsewhere"), timeout=10
            )
        refused_moves: list[tuple] = []
        failures: list[BaseException] = []

        def move(router, slots: list[int], target: int) -> None:
            try:
                with AdminClient(router.address, token=token, timeout=120) as admin:
                    list(admin.move_slots(slots, target))
            except FailedPrecondition as exc:
                if "is changing the slot map" not in exc.details:
                    failures.append(exc)
                refused_moves.append((router, slots, target))
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=move, args=m) for m in moves]  # at once
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        for router, slots, target in refused_moves:  # the other's change is done: it goes
            with AdminClient(router.address, token=token, timeout=120) as admin:
                list(admin.move_slots(slots, target))

        maps = [_slot_owners(address) for address in addresses]
        assert all(m == maps[0] for m in maps), "the shards hold different slot maps"
        for _router, slots, target in moves:
            assert {maps[0][s] for s in slots} == {target}
        for router in routers:
            with MurmurClient(router.address, timeout=10) as client:
                for handle, user, tweet in written:
                    assert client.get_user(handle=handle).user_id == user
                    assert client.get_tweet(tweet).tweet_id == tweet


def _shard_map(shard_address: str) -> tuple[int, list[int]]:
    with grpc.insecure_channel(shard_address) as channel:
        info = shard_pb2_grpc.ShardStub(channel).GetShardInfo(
            shard_pb2.GetShardInfoRequest(), timeout=10
        )
    return info.map_version, list(info.slot_map.owners)


async def found_together(*shard_lists: list[str]) -> list[RoutingTable]:
    """Each list's router start (its map learnt or made), all at once."""
    return list(await asyncio.gather(*(bootstrap(addresses, 10) for addresses in shard_lists)))


def test_two_routers_founding_one_cluster_at_once_agree_on_its_map(tmp_path) -> None:
    """Two routers started at once on brand-new shards, given different but
    overlapping --shards lists: each pushed its own first map to part of the
    shards, one exited with a traceback, and the shards held two version-1
    maps claiming the same slots (a split cluster no later start mended). Now
    the founding takes every shard's lease in shard-id order, so one router
    founds the cluster and the other learns its map."""
    for round_number in range(3):
        with Processes(tmp_path / f"round-{round_number}") as procs:
            shards = [procs.shard(i) for i in range(3)]
            first = [shards[0].address, shards[1].address]
            second = [shards[2].address, shards[1].address, shards[0].address]

            tables = asyncio.run(found_together(first, second))
            held = [_shard_map(shard.address) for shard in shards]
            assert len({version for version, _ in held}) == 1, held
            assert len({tuple(owners) for _, owners in held}) == 1, "the shards hold two maps"
            owners = held[0][1]
            assert all(table.owners == owners for table in tables)
            assert len(owners) == SLOT_COUNT and set(owners) <= {0, 1, 2}

"""A map change while a shard is silent: the router waits MAP_WAIT_S for a
shard's map only until it knows the shard is silent; after that (and for a
shard whose health probe fails) every ask, and the new map's AssignSlots,
gives it one short try. A move asks three times before it starts and once
per chunk: measured with a shard outside the move stopped, a 200-slot move
took 75 s before and 8 s after."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment
from murmur.v1 import shard_pb2
from server import admin as admin_module
from server import slot_map
from server.admin import MAP_WAIT_S, AdminServicer
from server.shard_pool import ShardPool
from server.slot_map import BRIEF_ATTEMPT_S, RoutingTable

ADDRESSES = {0: "s0", 1: "s1", 2: "s2"}


class Shards:
    """Fake shards: who answers GetShardInfo, and the deadline each ask got."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, silent: set[str]) -> None:
        self.silent = silent
        self.waits: list[dict[str, float]] = []
        monkeypatch.setattr(slot_map, "fetch_info", self.fetch_info)

    async def fetch_info(self, address: str, deadline: float) -> shard_pb2.ShardInfo | None:
        self.waits[-1][address] = round(deadline - time.monotonic())
        if address in self.silent:
            return None
        shard_id = next(s for s, a in ADDRESSES.items() if a == address)
        return shard_pb2.ShardInfo(shard_id=shard_id, map_version=1)

    async def ask(self, admin: AdminServicer) -> set[str]:
        self.waits.append({})
        return set(await admin._shard_infos())


class RecordingPool(ShardPool):
    def __init__(self, table: RoutingTable) -> None:
        super().__init__(table)
        self.timeouts: dict[int, float] = {}

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        self.timeouts[shard_id] = timeout
        return shard_pb2.AssignSlotsResponse()


def new_admin() -> AdminServicer:
    slot_map_ = shard_pb2.SlotMap(version=1, addresses=ADDRESSES, owners=even_assignment([0, 1, 2]))
    return AdminServicer(RecordingPool(RoutingTable(slot_map_)), admin_token=None)


def test_a_shard_found_silent_gets_one_short_try_until_it_answers(monkeypatch) -> None:
    shards = Shards(monkeypatch, silent={"s2"})
    admin = new_admin()

    async def asks() -> list[set[str]]:
        answered = [await shards.ask(admin), await shards.ask(admin)]
        shards.silent.clear()
        return [*answered, await shards.ask(admin), await shards.ask(admin)]

    answered = asyncio.run(asks())
    everyone = set(ADDRESSES.values())
    assert answered == [{"s0", "s1"}, {"s0", "s1"}, everyone, everyone]
    waited_for_s2 = [waits["s2"] for waits in shards.waits]
    assert waited_for_s2 == [MAP_WAIT_S, 0, 0, MAP_WAIT_S]  # 0: one try, then give up
    assert all(waits["s0"] == MAP_WAIT_S for waits in shards.waits)


def test_a_shard_failing_its_health_probe_gets_one_short_try_at_once(monkeypatch) -> None:
    shards = Shards(monkeypatch, silent={"s2"})
    admin = new_admin()
    admin.pool.suspect.add(2)
    assert asyncio.run(shards.ask(admin)) == {"s0", "s1"}
    assert shards.waits == [{"s0": MAP_WAIT_S, "s1": MAP_WAIT_S, "s2": 0}]


def test_the_new_map_gives_a_silent_shard_a_short_timeout(monkeypatch) -> None:
    shards = Shards(monkeypatch, silent={"s2"})
    admin = new_admin()

    async def change() -> None:
        await shards.ask(admin)
        new_map = admin._next_map()
        await admin._publish(new_map)

    asyncio.run(change())
    pool = admin.pool
    assert isinstance(pool, RecordingPool)
    assert pool.timeouts == {
        0: admin_module.STATS_TIMEOUT_S,
        1: admin_module.STATS_TIMEOUT_S,
        2: BRIEF_ATTEMPT_S,
    }
    assert admin.table.version == 2


def test_none_answering_names_each_with_its_own_wait(monkeypatch) -> None:
    shards = Shards(monkeypatch, silent=set(ADDRESSES.values()))
    admin = new_admin()
    admin.pool.suspect.add(2)
    with pytest.raises(ServiceError) as info:
        asyncio.run(shards.ask(admin))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "shards did not answer: s0 within 5s, s1 within 5s, s2 within 1s"
    with pytest.raises(ServiceError):  # all three now known to be silent
        asyncio.run(shards.ask(admin))
    assert shards.waits[-1] == {"s0": 0, "s1": 0, "s2": 0}

"""The slot map's change lease (shard/map_lease.py on the coordinator,
server/map_change_lease.py on routers): one router changes the map at a
time, a lease outlives a coordinator restart, and one a router stops
renewing expires."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment, map_coordinator
from murmur.v1 import shard_pb2
from server import map_change_lease
from server.map_change_lease import MapChangeLease
from server.slot_map import RoutingTable
from shard import keys
from shard.map_lease import MapLeases, stored_lease
from shard.ownership import SlotOwnership
from shard.store import Store


class FakeClock:
    """The coordinator's monotonic clock, in ms, moved by the test."""

    def __init__(self, now_ms: int = 1_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def leases_on(
    path: Path, shard_id: int = 0, clock: FakeClock | None = None
) -> tuple[MapLeases, Store]:
    store = Store(str(path))
    ownership = SlotOwnership(store, shard_id)
    if not ownership.assigned:
        ownership.adopt(
            shard_pb2.SlotMap(version=1, addresses={0: "a", 1: "b"}, owners=even_assignment([0, 1]))
        )
    return MapLeases(store, ownership, clock), store


def test_one_holder_at_a_time_until_release_or_expiry(tmp_path: Path) -> None:
    clock = FakeClock(1_000)
    leases, store = leases_on(tmp_path / "db", clock=clock)

    def acquire(holder: str, at_ms: int) -> shard_pb2.MapLease:
        clock.now_ms = at_ms
        return leases.acquire(holder, 30_000)

    try:
        assert acquire("router-a", 1_000).granted
        other = acquire("router-b", 2_000)
        assert not other.granted and other.holder == "router-a"
        assert other.expires_in_ms == 29_000
        assert acquire("router-a", 20_000).granted  # renewed
        assert not acquire("router-b", 40_000).granted
        assert acquire("router-b", 50_001).granted  # a's expired
        assert leases.release("router-a").holder == "router-b"  # not a's to give
        assert leases.release("router-b").holder == ""
        assert acquire("router-a", 50_004).granted
    finally:
        store.close()


def test_a_restarted_coordinator_gives_the_stored_holder_a_whole_lease_time(
    tmp_path: Path,
) -> None:
    """What outlives a restart is the holder and its time to live: the
    coordinator's new monotonic clock starts the lease afresh."""
    leases, store = leases_on(tmp_path / "db", clock=FakeClock(1_000))
    assert leases.acquire("router-a", 30_000).granted
    store.close()
    clock = FakeClock(5)  # a new process: its monotonic clock starts elsewhere
    again, store = leases_on(tmp_path / "db", clock=clock)
    try:
        refused = again.acquire("router-b", 30_000)
        assert not refused.granted and refused.holder == "router-a"
        assert refused.expires_in_ms == 30_000
        clock.now_ms += 30_001
        assert again.acquire("router-b", 30_000).granted
    finally:
        store.close()


def test_a_released_lease_stays_released_across_a_restart(tmp_path: Path) -> None:
    leases, store = leases_on(tmp_path / "db", clock=FakeClock())
    assert leases.acquire("router-a", 30_000).granted
    leases.release("router-a")
    store.close()
    again, store = leases_on(tmp_path / "db", clock=FakeClock())
    try:
        assert again.holder == "" and again.acquire("router-b", 30_000).granted
    finally:
        store.close()


def test_a_wall_clock_step_neither_ends_nor_stretches_a_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expiry used to be a wall-clock moment: an NTP step forward of a
    minute let a second router in while the first was mid-change."""
    leases, store = leases_on(tmp_path / "db")
    try:
        assert leases.acquire("router-a", 30_000).granted
        stepped = time.time() + 3600
        monkeypatch.setattr(time, "time", lambda: stepped)
        assert not leases.acquire("router-b", 30_000).granted
    finally:
        store.close()


def test_a_renewal_by_the_holder_writes_nothing(tmp_path: Path) -> None:
    """The router renews every 4 s; each renewal was a synced write."""
    clock = FakeClock()
    leases, store = leases_on(tmp_path / "db", clock=clock)
    try:
        assert leases.acquire("router-a", 30_000).granted
        stored = store.get(keys.MAP_LEASE)
        store.db.delete(keys.MAP_LEASE)  # a renewal that wrote would put it back
        clock.now_ms += 20_000
        assert leases.acquire("router-a", 30_000).granted
        assert store.get(keys.MAP_LEASE) is None
        clock.now_ms += 20_000  # renewed: 10 s left, not expired
        assert not leases.acquire("router-b", 30_000).granted
        store.db.put(keys.MAP_LEASE, stored)
        assert leases.acquire("router-a", 60_000).granted  # a new time to live is stored
        assert stored_lease(store.get(keys.MAP_LEASE)) == ("router-a", 60_000)
    finally:
        store.close()


def test_a_lease_stored_as_a_wall_clock_expiry_keeps_what_is_left_of_it(tmp_path: Path) -> None:
    """Shards before this change stored the expiry moment, not the TTL."""
    now = int(time.time() * 1000)
    assert stored_lease(keys.u64(now + 9_000) + b"router-a")[0] == "router-a"
    assert 8_000 <= stored_lease(keys.u64(now + 9_000) + b"router-a")[1] <= 9_000
    assert stored_lease(keys.u64(now - 1) + b"router-a") == ("", 0)  # lapsed
    assert stored_lease(keys.u64(0)) == ("", 0) and stored_lease(None) == ("", 0)
    leases, store = leases_on(tmp_path / "db")
    try:
        store.db.put(keys.MAP_LEASE, keys.u64(now + 15_000) + b"router-a")
        converted = MapLeases(store, leases.ownership)
        assert converted.holder == "router-a"
        # stored in the new form at once: a renewal with an equal ttl writes nothing
        assert stored_lease(store.get(keys.MAP_LEASE)) == ("router-a", converted.ttl_ms)
        assert keys.read_u64(store.get(keys.MAP_LEASE)) <= 15_000
    finally:
        store.close()


def test_only_the_coordinator_by_its_own_map_grants(tmp_path: Path) -> None:
    leases, store = leases_on(tmp_path / "db", shard_id=1)
    try:
        with pytest.raises(ServiceError) as refused:
            leases.acquire("router-a", 30_000)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "shard 1 does not hold the map lease" in refused.value.message
        assert "shard 0 does" in refused.value.message
    finally:
        store.close()


@pytest.mark.parametrize(("holder", "ttl_ms"), [("", 1000), ("r", 0), ("r", 600_001)])
def test_a_lease_request_without_holder_or_with_a_bad_ttl_is_refused(
    tmp_path: Path, holder: str, ttl_ms: int
) -> None:
    leases, store = leases_on(tmp_path / "db")
    try:
        with pytest.raises(ServiceError, match="needs a holder and a ttl_ms of 1-600000"):
            leases.acquire(holder, ttl_ms)
    finally:
        store.close()


class LeasePool:
    """A ShardPool stand-in whose coordinator is a real MapLeases."""

    def __init__(self, leases: MapLeases) -> None:
        self.leases = leases
        self.table = RoutingTable(leases.ownership.slot_map)

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        if method == "AcquireMapLease":
            return self.leases.acquire(request.holder, request.ttl_ms)
        return self.leases.release(request.holder)


def test_a_router_refused_the_lease_names_the_holder_and_one_that_loses_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leases, store = leases_on(tmp_path / "db")
    monkeypatch.setattr(map_change_lease, "RENEW_EVERY_S", 0.01)

    async def refresh() -> None:
        return None

    async def scenario() -> None:
        pool = LeasePool(leases)
        first, second = MapChangeLease(pool, refresh), MapChangeLease(pool, refresh)  # type: ignore[arg-type]
        async with first.held():
            with pytest.raises(ServiceError) as refused:
                async with second.held():
                    pytest.fail("two routers held the map lease at once")
            assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert f"another router ({first.holder}) is changing the slot map" in (
                refused.value.message
            )
            leases.holder, leases.expires_ms = "someone else", 2**62  # taken over
            await asyncio.sleep(0.05)
            with pytest.raises(ServiceError, match="change lease was lost"):
                first.require()
        leases.release("someone else")
        async with second.held():  # given back at the end of a change
            second.require()
        assert leases.holder == ""

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_the_coordinator_is_the_lowest_shard_that_owns_a_slot(tmp_path: Path) -> None:
    """A drained (maybe dead) shard 0 must not hold up every map change,
    removing it included."""
    assert map_coordinator([2, 1, 1, 2]) == 1 and map_coordinator([]) is None
    store = Store(str(tmp_path / "db"))
    try:
        ownership = SlotOwnership(store, 0)
        ownership.adopt(shard_pb2.SlotMap(version=3, addresses={0: "a", 1: "b"}, owners=[1] * 4096))
        with pytest.raises(ServiceError, match="shard 1 does; refresh the map"):
            MapLeases(store, ownership).acquire("router-a", 30_000)
    finally:
        store.close()


class TwoCoordinators(LeasePool):
    """Shards 0 and 1, each with its own MapLeases."""

    def __init__(self, first: MapLeases, second: MapLeases) -> None:
        super().__init__(first)
        self.by_shard = {0: first, 1: second}

    async def direct(self, shard_id: int, method: str, request: Any, timeout: float) -> Any:
        leases = self.by_shard[shard_id]
        if method == "AcquireMapLease":
            return leases.acquire(request.holder, request.ttl_ms)
        return leases.release(request.holder)


def test_a_change_that_moves_the_coordinator_takes_the_lease_there(tmp_path: Path) -> None:
    """Draining shard 0 makes shard 1 the coordinator, where a router
    starting up now asks: the change takes the lease there before its next
    step (a starting router used to push a map into the middle of it)."""
    first, first_store = leases_on(tmp_path / "s0", shard_id=0)
    second, second_store = leases_on(tmp_path / "s1", shard_id=1)

    async def refresh() -> None:
        return None

    async def scenario() -> None:
        pool = TwoCoordinators(first, second)
        lease = MapChangeLease(pool, refresh, "router-a")  # type: ignore[arg-type]
        async with lease.held():
            assert lease.coordinator == 0 and first.holder == "router-a"
            drained = shard_pb2.SlotMap(version=2, addresses={0: "a", 1: "b"}, owners=[1] * 4096)
            pool.table.install(drained)
            second.ownership.adopt(drained)
            await lease.follow()
            lease.require()
            assert lease.coordinator == 1 and second.holder == "router-a" and first.holder == ""
            assert not second.acquire("router-b", 30_000).granted
        assert second.holder == ""

    try:
        asyncio.run(scenario())
    finally:
        first_store.close()
        second_store.close()


def test_a_router_counts_its_lease_lost_once_renewals_stop_reaching_it(tmp_path: Path) -> None:
    """A router whose renewals fail (the coordinator out of its reach) went
    on with its change after the lease lapsed, for another router to take."""
    leases, store = leases_on(tmp_path / "db")

    async def refresh() -> None:
        return None

    async def scenario() -> None:
        lease = MapChangeLease(LeasePool(leases), refresh, "router-a")  # type: ignore[arg-type]
        async with lease.held():
            lease.require()
            lease._granted_at -= map_change_lease.LEASE_TTL_MS / 1000  # no renewal since
            with pytest.raises(ServiceError, match="no renewal reached the coordinator in time"):
                lease.require()

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_a_shard_with_no_map_grants_the_founding_lease_to_one_router(tmp_path: Path) -> None:
    """A router founding a new cluster takes every shard's lease before it
    pushes the first map: one router at a time, and the lease is the
    coordinator's alone once a map says who that is."""
    store = Store(str(tmp_path / "db"))
    try:
        ownership = SlotOwnership(store, 1)
        leases = MapLeases(store, ownership, FakeClock(1_000))
        assert leases.acquire("router-a", 30_000).granted
        refused = leases.acquire("router-b", 30_000)
        assert not refused.granted and refused.holder == "router-a"
        leases.release("router-a")
        ownership.adopt(shard_pb2.SlotMap(version=1, addresses={0: "a", 1: "b"}, owners=[0] * 4096))
        with pytest.raises(ServiceError, match="shard 0 does; refresh the map"):
            leases.acquire("router-b", 30_000)
    finally:
        store.close()

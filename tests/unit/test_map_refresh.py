"""The router's slot-map refresh: silent shards are not asked; callers that
waited share a refresh only if it began after they found the map stale; a
slot still refused after a refresh is reported as retryable; no shard
answering is an error, not an exit."""

from __future__ import annotations

import asyncio
import logging
import selectors
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.slots import even_assignment, slot_for_user
from murmur.v1 import murmur_pb2, shard_pb2
from server import shard_pool, slot_map
from server.servicer import MurmurServicer
from server.shard_pool import ShardPool, WrongSlot
from server.slot_map import RoutingTable

USER = 12345
SLOT = slot_for_user(USER)


def test_waiters_share_one_refresh_begun_after_them_and_skip_silent_shards(monkeypatch) -> None:
    addresses = {0: "s0", 1: "s1", 2: "s2"}
    owners = even_assignment([0, 1, 2])
    pool = ShardPool(RoutingTable(shard_pb2.SlotMap(version=3, addresses=addresses, owners=owners)))
    pool.suspect.add(2)
    asked: list[list[str]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        asked.append(sorted(known))
        started.set()
        await release.wait()
        moved = shard_pb2.SlotMap(version=3 + len(asked), addresses={0: "s0", 1: "s1"})
        moved.owners.extend(even_assignment([0, 1]))
        return moved

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)

    async def scenario() -> None:
        in_flight = asyncio.create_task(pool.refresh_map())
        await started.wait()
        waiters = [asyncio.create_task(pool.refresh_map()) for _ in range(3)]
        await asyncio.sleep(0)  # all three now wait for the lock
        release.set()
        await asyncio.gather(in_flight, *waiters)

    asyncio.run(scenario())
    # the one in flight may have read the maps before their callers' moves
    # finished: the three waiters need one more, and share it
    assert asked == [["s0", "s1"], ["s0", "s1"]]
    assert pool.table.version == 5 and 2 not in pool.table.addresses


@pytest.mark.parametrize("suspect", [set(), {0, 1}])
def test_every_shard_is_asked_when_none_or_all_are_silent(monkeypatch, suspect) -> None:
    addresses = {0: "s0", 1: "s1"}
    slot_map = shard_pb2.SlotMap(version=1, addresses=addresses, owners=even_assignment([0, 1]))
    pool = ShardPool(RoutingTable(slot_map))
    pool.suspect.update(suspect)
    asked: list[list[str]] = []

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        asked.append(sorted(known))
        return slot_map

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)
    asyncio.run(pool.refresh_map())
    assert asked == [["s0", "s1"]]


def map_where_slot_is_on(version: int, owner: int) -> shard_pb2.SlotMap:
    owners = even_assignment([0, 1])
    owners[SLOT] = owner
    return shard_pb2.SlotMap(version=version, addresses={0: "s0", 1: "s1"}, owners=owners)


class MovingCluster(ShardPool):
    """Shards that answer Ping only for slots they own in ``held`` (the map
    the shards hold now), saying "wrong slot" otherwise."""

    def __init__(self, table: RoutingTable, held: shard_pb2.SlotMap) -> None:
        super().__init__(table)
        self.held = held
        self.wrong_slot_said = asyncio.Event()

    async def call(self, shard_id: int, method: str, request: Any, timeout: float | None) -> Any:
        if self.held.owners[SLOT] != shard_id:
            self.wrong_slot_said.set()
            raise WrongSlot(
                grpc.StatusCode.FAILED_PRECONDITION, f"shard {shard_id} does not own slot {SLOT}"
            )
        return murmur_pb2.PingResponse(shard_id=shard_id)


class Context:
    def __init__(self, remaining: float | None = 5.0) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def test_a_refresh_begun_before_the_move_does_not_satisfy_a_later_wrong_slot(
    monkeypatch,
) -> None:
    """The order of refresh_race.py: refresh A reads the shards' maps (v2),
    then the move finishes (v3), then a request gets "wrong slot" and waits
    for A. A installs v2, still stale: the request must fetch again."""
    pool = MovingCluster(RoutingTable(map_where_slot_is_on(1, 0)), map_where_slot_is_on(2, 0))
    servicer = MurmurServicer(pool.table, pool)
    a_read_the_maps, a_may_finish = asyncio.Event(), asyncio.Event()

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        seen = pool.held  # what the shards hold when the refresh reads them
        a_read_the_maps.set()
        await a_may_finish.wait()
        return seen

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)

    async def scenario() -> murmur_pb2.PingResponse:
        refresh_a = asyncio.create_task(pool.refresh_map())
        await a_read_the_maps.wait()
        pool.held = map_where_slot_is_on(3, 1)  # the slot's move completes
        request = murmur_pb2.PingRequest(user_id=USER)
        caller = asyncio.create_task(servicer._user_call(USER, "Ping", request, Context()))
        await pool.wrong_slot_said.wait()  # the caller now waits for refresh A
        a_may_finish.set()
        await refresh_a
        return await caller

    assert asyncio.run(scenario()).shard_id == 1
    assert pool.table.version == 3


def test_a_slot_still_refused_after_a_refresh_is_unavailable_naming_it(monkeypatch) -> None:
    """Mid-move the newest map may still send the slot to a shard that
    refuses it: the caller gets UNAVAILABLE (which clients retry), not the
    shard's FAILED_PRECONDITION."""
    held = map_where_slot_is_on(1, 0)
    pool = MovingCluster(RoutingTable(map_where_slot_is_on(1, 1)), held)

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        return map_where_slot_is_on(1, 1)  # the shards' maps are not updated yet

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)
    servicer = MurmurServicer(pool.table, pool)
    request = murmur_pb2.PingRequest(user_id=USER)
    with pytest.raises(ServiceError) as info:
        asyncio.run(servicer._user_call(USER, "Ping", request, Context()))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert f"slot {SLOT} is moving between shards" in info.value.message
    assert "shard 1" in info.value.message and "retry" in info.value.message


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when it would sleep: it jumps to
    the next timer. Which deadline fires first then follows from the
    deadlines alone, never from how busy the machine is."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(JumpingSelector(self))

    def time(self) -> float:
        return self.now


class JumpingSelector(selectors.DefaultSelector):
    """Polls without blocking; where the loop would wait for a timer, moves
    its clock to that timer instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout: float | None = None) -> list:
        events = super().select(None if timeout is None else 0)
        if not events and timeout:
            self.loop.now += timeout
        return events


def test_a_refresh_ends_within_the_callers_time(monkeypatch) -> None:
    """GetShardInfo's own 2 s timeout (and the 1 s wait) must not outlast a
    caller with less time: the refresh ends first, saying why. The caller's
    deadline is a real one here: were the refresh to outlast it, the
    caller's TimeoutError would escape ``pytest.raises``."""
    table = RoutingTable(map_where_slot_is_on(1, 0))
    pool = ShardPool(table)
    caller_s = 0.3

    async def newest_map(known: list[str], wait_s: float, silent_log_level: int):
        await asyncio.sleep(30)  # a shard that hangs

    monkeypatch.setattr(shard_pool, "newest_map", newest_map)

    async def caller() -> ServiceError:
        with pytest.raises(ServiceError) as info:
            async with asyncio.timeout(caller_s):
                await pool.refresh_map(caller_s)
        return info.value

    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        error = runner.run(caller())
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "slot map" in error.message


def no_shard_answers(monkeypatch) -> None:
    async def fetch_info(address: str, deadline: float) -> None:
        return None

    monkeypatch.setattr(slot_map, "fetch_info", fetch_info)


def test_no_shard_answering_is_an_error_naming_them_not_an_exit(monkeypatch) -> None:
    """A serving router asks too (admin moves): SystemExit from a handler
    would end the whole process."""
    no_shard_answers(monkeypatch)
    with pytest.raises(ServiceError) as info:
        asyncio.run(slot_map.fetch_infos(["10.0.0.1:1", "10.0.0.2:2"], wait_s=5.0))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "shards at 10.0.0.1:1, 10.0.0.2:2 did not answer within 5s"


def test_no_shard_answering_at_start_is_a_one_line_exit(monkeypatch) -> None:
    no_shard_answers(monkeypatch)
    with pytest.raises(SystemExit) as info:
        asyncio.run(slot_map.bootstrap(["10.0.0.1:1"], wait_s=2.0))
    assert str(info.value) == "shards at 10.0.0.1:1 did not answer within 2s"


def test_a_refresh_with_no_shard_answering_is_unavailable(monkeypatch) -> None:
    no_shard_answers(monkeypatch)
    pool = ShardPool(RoutingTable(map_where_slot_is_on(1, 0)))
    with pytest.raises(ServiceError) as info:
        asyncio.run(pool.refresh_map())
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message.startswith("cannot refresh the slot map: shards at s0, s1")


def test_a_router_that_rewrites_a_stored_address_says_from_what_to_what(caplog) -> None:
    """Routers given different spellings of one shard (localhost and
    127.0.0.1) rewrite its address at each start; it was logged at INFO
    without the addresses."""
    stored = map_where_slot_is_on(1, 0)
    stored.addresses[0] = "127.0.0.1:7000"
    with caplog.at_level(logging.WARNING, logger="murmur.router.slots"):
        assert slot_map.take_given_addresses(stored, {0: "localhost:7000", 1: stored.addresses[1]})
    assert stored.addresses[0] == "localhost:7000"
    (record,) = [r for r in caplog.records if "stored address" in r.getMessage()]
    assert record.getMessage().startswith(
        "shard 0's stored address 127.0.0.1:7000 becomes localhost:7000, as --shards gives it"
    )

"""The router facing shards that are down or hung: operator calls answer
with a status naming the shards (and the router keeps serving), and a
start-up settings push skips shards that are down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from murmur.errors import ServiceError
from murmur.registration import add_service
from murmur.slots import even_assignment
from murmur.v1 import admin_pb2, admin_pb2_grpc, shard_pb2, shard_pb2_grpc
from server import slot_map
from server.admin import AdminServicer
from server.main import parse_args, push_settings
from server.shard_pool import ShardPool
from server.slot_map import RoutingTable

TOKEN = (("authorization", "Bearer tok"),)


@asynccontextmanager
async def admin_stub(table: RoutingTable) -> AsyncIterator[admin_pb2_grpc.AdminStub]:
    """A router's Admin service in this process, and a stub calling it."""
    pool = ShardPool(table)
    router = grpc.aio.server()
    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    add_service(router, AdminServicer(pool, "tok"), service)
    port = router.add_insecure_port("127.0.0.1:0")
    await router.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield admin_pb2_grpc.AdminStub(channel)
    finally:
        await router.stop(None)
        await pool.close()


def test_a_move_while_no_shard_answers_is_unavailable_and_the_router_lives(monkeypatch) -> None:
    async def silent(address: str, deadline: float) -> None:
        return None

    monkeypatch.setattr(slot_map, "fetch_info", silent)
    owners = even_assignment([0])
    table = RoutingTable(shard_pb2.SlotMap(version=1, addresses={0: "127.0.0.1:9"}, owners=owners))

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        got = []
        async with admin_stub(table) as stub:
            for _ in range(2):  # the second is served: the first did not end the router
                request = admin_pb2.RebalanceRequest(dry_run=True)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    async for _progress in stub.Rebalance(request, metadata=TOKEN, timeout=5):
                        pass
                got.append((info.value.code(), info.value.details()))
        return got

    expected = "cannot take the slot map's change lease: shard 0 (127.0.0.1:9) is "
    try:
        got = asyncio.run(scenario())
    except SystemExit as exc:  # gRPC let it out of the handler: the process would end
        pytest.fail(f"the router's event loop died of SystemExit: {exc}")
    assert [code for code, _ in got] == [grpc.StatusCode.UNAVAILABLE] * 2
    assert all(details.startswith(expected) for _, details in got), got


CALLER_DEADLINE_S = 2.5


class HungShard(shard_pb2_grpc.ShardServicer):
    async def GetStats(self, request: Any, context: Any) -> Any:
        await asyncio.Event().wait()  # a stopped process, a frozen host


class HealthyShard(shard_pb2_grpc.ShardServicer):
    async def GetStats(self, request: Any, context: Any) -> Any:
        return shard_pb2.LocalStats(disk_bytes=7)


@pytest.mark.parametrize("method", ["GetClusterStatus", "GetShardStats"])
def test_a_hung_shard_is_named_within_the_callers_deadline(method: str) -> None:
    """Not a bare DEADLINE_EXCEEDED after the router's own 30 s per shard:
    the answer comes in time, naming the hung shard, with the others' status.
    The caller allows 2.5 s, so the router keeps its full 0.25 s margin to
    answer (with 1 s it kept 0.1 s, which a loaded 2-core box overran once)."""

    async def scenario() -> tuple[list[tuple[int, str, int]], float]:
        shards, addresses = [], {}
        for shard_id, impl in enumerate((HealthyShard(), HungShard())):
            shard = grpc.aio.server()
            shard_pb2_grpc.add_ShardServicer_to_server(impl, shard)
            addresses[shard_id] = f"127.0.0.1:{shard.add_insecure_port('127.0.0.1:0')}"
            await shard.start()
            shards.append(shard)
        owners = even_assignment([0, 1])
        table = RoutingTable(shard_pb2.SlotMap(version=1, addresses=addresses, owners=owners))
        try:
            async with admin_stub(table) as stub:
                started = time.monotonic()
                if method == "GetClusterStatus":
                    reply = await stub.GetClusterStatus(
                        admin_pb2.GetClusterStatusRequest(),
                        metadata=TOKEN,
                        timeout=CALLER_DEADLINE_S,
                    )
                    statuses = list(reply.shards)
                else:
                    statuses = []
                    for shard_id in (0, 1):
                        reply = await stub.GetShardStats(
                            admin_pb2.GetShardStatsRequest(shard_id=shard_id),
                            metadata=TOKEN,
                            timeout=CALLER_DEADLINE_S,
                        )
                        statuses.append(reply.status)
                took = time.monotonic() - started
        finally:
            for shard in shards:
                await shard.stop(None)
        return [(s.shard_id, s.health, s.disk_bytes) for s in statuses], took

    statuses, _took = asyncio.run(scenario())
    assert statuses[0] == (0, "SERVING", 7)
    shard_id, health, _ = statuses[1]
    assert shard_id == 1
    assert health.startswith("DEADLINE_EXCEEDED: shard 1 (127.0.0.1:")
    assert health.endswith("did not answer within the deadline")


class SettingsPool(ShardPool):
    """Shard 0 takes the settings; shard 1 fails with ``failure``."""

    def __init__(self, failure: ServiceError) -> None:
        owners = even_assignment([0, 1])
        addresses = {0: "127.0.0.1:9", 1: "127.0.0.1:10"}
        super().__init__(
            RoutingTable(shard_pb2.SlotMap(version=3, addresses=addresses, owners=owners))
        )
        self.failure = failure
        self.took: list[int] = []

    async def call(self, shard_id: int, method: str, request: Any, timeout: float | None) -> Any:
        if shard_id == 1:
            raise self.failure
        self.took.append(shard_id)
        return shard_pb2.Settings(celebrity_threshold=request.celebrity_threshold)


def test_start_up_settings_skip_a_shard_that_is_down_with_a_warning(caplog) -> None:
    pool = SettingsPool(
        ServiceError(grpc.StatusCode.UNAVAILABLE, "shard 1 (127.0.0.1:10) is unavailable")
    )
    update = shard_pb2.UpdateSettingsRequest(celebrity_threshold=500)
    with caplog.at_level(logging.WARNING, logger="murmur.router"):
        asyncio.run(push_settings(pool, update))
    assert pool.took == [0]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        "shard 1 did not take the settings celebrity_threshold=500 "
        "(UNAVAILABLE: shard 1 (127.0.0.1:10) is unavailable)"
    )


def test_start_up_settings_a_shard_refuses_end_the_start_in_one_line() -> None:
    pool = SettingsPool(
        ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "inbox_cap is 0; it must be 1-100000")
    )
    update = shard_pb2.UpdateSettingsRequest(inbox_cap=0)
    with pytest.raises(SystemExit) as info:
        asyncio.run(push_settings(pool, update))
    assert (
        str(info.value)
        == "shard 1 refused the settings inbox_cap=0: inbox_cap is 0; it must be 1-100000"
    )


@pytest.mark.parametrize("flag", ["--inbox-cap", "--celebrity-threshold"])
def test_a_negative_setting_is_a_usage_error(flag: str, capsys) -> None:
    """The shards keep these as unsigned numbers: -1 used to end the start
    with a ValueError traceback."""
    with pytest.raises(SystemExit) as info:
        parse_args(["--shards", "127.0.0.1:9", flag, "-1"])
    assert info.value.code == 2
    assert f"{flag}: {flag[2:].replace('-', '_')} is -1; it must be " in capsys.readouterr().err


def test_start_up_settings_that_timed_out_may_have_been_taken(caplog) -> None:
    """A shard stores new settings before re-checking every user against
    them, so a timeout usually came after they were taken: say so."""
    pool = SettingsPool(ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "shard 1 timed out"))
    with caplog.at_level(logging.WARNING, logger="murmur.router"):
        asyncio.run(push_settings(pool, shard_pb2.UpdateSettingsRequest(celebrity_threshold=9)))
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("shard 1 may not have taken the settings celebrity_threshold=9")


@pytest.mark.parametrize(
    ("details", "code"),
    [
        ("Received RST_STREAM with error code 2", grpc.StatusCode.UNAVAILABLE),
        ("Stream removed", grpc.StatusCode.UNAVAILABLE),
        ("Socket closed", grpc.StatusCode.UNAVAILABLE),
        ("Exception deserializing response!", grpc.StatusCode.INTERNAL),  # a bug: stays
        ("internal error in shard 1 while serving Follow; see its log", grpc.StatusCode.INTERNAL),
    ],
)
def test_a_connection_broken_under_a_call_is_retryable(details: str, code) -> None:
    """gRPC says INTERNAL when a shard's connection drops mid-call (a shard
    killed): clients retry UNAVAILABLE, and take INTERNAL for a bug."""
    table = RoutingTable(
        shard_pb2.SlotMap(version=1, addresses={0: "a", 1: "b"}, owners=even_assignment([0, 1]))
    )
    broken = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details
    )
    error = ShardPool(table)._translate(1, broken)
    assert error.code == code and details in error.message
    if code == grpc.StatusCode.UNAVAILABLE:
        assert error.message.startswith("the connection to shard 1 (b) broke during the call")

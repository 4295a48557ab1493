"""Servers accept the keepalive pings of the channels that call them.

With gRPC's defaults a server takes a ping more often than every 5 minutes
(with no data sent in between) as a strike and, after two, ends the
connection with GOAWAY "too_many_pings". The shards' callers ping every
30 s, so idle clusters had their router -> shard and fan-out streams cut a
few minutes after start-up. Here the same contest runs at a hundredth of the
pace: a channel pinging every second against a server whose floor is half
of that keeps its stream, and the same channel against gRPC's defaults
loses it (which shows that the ping options' names are the ones gRPC reads:
it ignores names it does not know)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from murmur.serving import KEEPALIVE_FLOOR_MS, server_options
from murmur.shard_stubs import CHANNEL_OPTIONS

PING_EVERY_MS = 1_000
HOLD_S = 4.5  # the defaults cut the stream at the third ping, ~3 s in
PING_OPTIONS = {
    "grpc.http2.min_ping_interval_without_data_ms",
    "grpc.keepalive_permit_without_calls",
}


async def _stream_outlives_pings(options: list[tuple[str, int]]) -> bool:
    """Hold one idle server stream open while the channel pings; True if it lasted."""
    server = grpc.aio.server(options=options)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.keepalive_time_ms", PING_EVERY_MS),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging, as a long idle spell does
        ],
    )
    try:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        await watch.read()  # SERVING; nothing more comes until the status changes
        try:
            await asyncio.wait_for(watch.read(), HOLD_S)
        except TimeoutError:
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return False
        raise AssertionError("the health status changed while nothing changed it")
    finally:
        await channel.close()
        await server.stop(0)


@pytest.mark.timeout(60)
def test_a_stream_outlives_pings_at_the_servers_floor() -> None:
    options = server_options(keepalive_floor_ms=PING_EVERY_MS // 2)
    assert asyncio.run(_stream_outlives_pings(options))


@pytest.mark.timeout(60)
def test_the_same_pings_are_cut_under_grpcs_defaults() -> None:
    defaults = [(name, value) for name, value in server_options() if name not in PING_OPTIONS]
    assert not asyncio.run(_stream_outlives_pings(defaults))


def test_shard_channels_ping_no_faster_than_servers_accept() -> None:
    assert dict(CHANNEL_OPTIONS)["grpc.keepalive_time_ms"] >= 2 * KEEPALIVE_FLOOR_MS
    assert dict(server_options())["grpc.http2.min_ping_interval_without_data_ms"] == (
        KEEPALIVE_FLOOR_MS
    )

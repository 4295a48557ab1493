"""Channels to shards retry their connection at least once a second.

gRPC's reconnect backoff grows to 120 s by default, so a shard back after a
long outage could go unused for minutes. The router and the shards (fan-out,
moves) reach shards only through ``ShardStubs``, whose channels cap the
backoff; these tests pin that cap without waiting out an outage."""

from __future__ import annotations

from unittest import mock

from murmur import shard_stubs
from murmur.shard_stubs import CHANNEL_OPTIONS, ShardStubs

MAX_BACKOFF_MS = 1_000


def test_the_reconnect_backoff_is_capped_at_a_second() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert options["grpc.max_reconnect_backoff_ms"] <= MAX_BACKOFF_MS
    assert 0 < options["grpc.initial_reconnect_backoff_ms"] <= MAX_BACKOFF_MS
    # gRPC core takes the minimum as each attempt's connect timeout
    assert "grpc.min_reconnect_backoff_ms" not in options


def test_every_shard_channel_is_opened_with_those_options(monkeypatch) -> None:
    """A channel opened without them would fall back to gRPC's default."""
    opened: list[tuple[str, list]] = []

    def aio_channel(address: str, options: list | None = None) -> mock.MagicMock:
        opened.append((address, options))
        return mock.MagicMock()

    monkeypatch.setattr(shard_stubs.tls, "aio_channel", aio_channel)
    stubs = ShardStubs()
    stubs.get(0, "s0:1")
    stubs.get(1, "s1:1")
    stubs.stream(2, "s2:1")
    assert [address for address, _ in opened] == ["s0:1", "s1:1", "s2:1"]
    assert all(options == CHANNEL_OPTIONS for _, options in opened)

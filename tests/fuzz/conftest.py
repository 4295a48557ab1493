"""Fixtures for the fuzz suites.

``world`` is an in-process cluster (real servicers and LevelDBs, calls as
awaits) seeded with a few users and tweets and a model of its contents; it is
module-scoped because Hypothesis runs many examples per test and the model
follows every change they make. ``wire_cluster`` is one real router and two
shard processes for the wire-level tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.fuzz.world import World
from tests.integration.cluster import LocalCluster
from tests.timeline.memory_cluster import MemoryCluster


@pytest.fixture(scope="module")
def fuzz_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, fuzz_loop) -> Iterator[World]:
    cluster = MemoryCluster(tmp_path_factory.mktemp("fuzz-world"), shards=3)
    try:
        yield World(cluster, fuzz_loop).seed()
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def wire_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("fuzz-wire"), shards=2) as running:
        yield running

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.timeline.memory_cluster import MemoryCluster


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def make_cluster(tmp_path, loop):
    clusters: list[MemoryCluster] = []

    def factory(**kwargs) -> MemoryCluster:
        root = tmp_path / f"cluster-{len(clusters)}"
        cluster = MemoryCluster(root, **kwargs)
        clusters.append(cluster)
        return cluster

    yield factory
    for cluster in clusters:
        cluster.close()

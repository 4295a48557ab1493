"""Fixtures for the integration suites: a real cluster and a client on it.

``cluster`` is module-scoped (one cluster per test module, ~1 s to start), so
tests that share it must use fresh handles (``cluster.handle_on_shard`` or
``unique_handle``) and must not kill its processes; a test that kills or
restarts servers takes ``fresh_cluster`` (its own cluster in ``tmp_path``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client.client import MurmurClient
from tests.integration.cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster"), shards=3) as running:
        yield running


@pytest.fixture
def fresh_cluster(tmp_path) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill, restart or stop servers."""
    with LocalCluster(tmp_path / "cluster", shards=3) as running:
        yield running


@pytest.fixture
def client(cluster: LocalCluster) -> Iterator[MurmurClient]:
    with MurmurClient(cluster.target) as murmur:
        yield murmur

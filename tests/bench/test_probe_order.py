"""Delivery probes run four at a time from the front of their list: the
biggest authors' probes must not sit together, or each waits behind the
others' fan-out and the bench measures a burst instead of a post."""

from __future__ import annotations

import argparse

from bench.datasets import Graph
from bench.main import Bench, System
from bench.probes import interleaved

MEGA = (10**6, 10**6 + 1, 9000)


def test_groups_are_taken_in_turn_while_they_last() -> None:
    assert interleaved([[1, 2, 3], ["a"], ["b", "c"]]) == [1, "a", "b", 2, "c", 3]
    assert interleaved([]) == []
    assert interleaved([[], [1]]) == [1]


def bench_on(authors_by_followers: dict[int, int]) -> tuple[Bench, System]:
    """A Bench over a graph where, for each (followers: authors) pair, that
    many authors have that many followers (drawn from 2,000 readers)."""
    edges, author = [], 2000
    for followers, count in authors_by_followers.items():
        for _ in range(count):
            edges += [(reader, author) for reader in range(followers)]
            author += 1
    bench = Bench.__new__(Bench)  # only the graph and the seed are needed
    bench.graph = Graph(source="test", nodes=list(range(author)), edges=edges)
    bench.args = argparse.Namespace(seed=1)
    system = System("test", "127.0.0.1:1")
    system.ids = list(range(author))
    return bench, system


def test_the_biggest_probes_never_run_together() -> None:
    """The full run's shape: ten probes from each smaller bucket, and in the
    biggest the real graph's six authors with 1,000+ followers and four
    probes of the 9,000-follower account."""
    bench, system = bench_on({3: 20, 30: 20, 300: 20, 1500: 6})
    order = bench.probe_targets(system, 40, [MEGA] * 4)
    assert len(order) == 40
    assert sorted(f for _, _, f in order) == sorted(
        [3] * 10 + [30] * 10 + [300] * 10 + [1500] * 6 + [9000] * 4
    )
    for start in range(len(order) - 3):
        running = [followers for _, _, followers in order[start : start + 4]]
        assert sum(followers >= 1000 for followers in running) <= 1, running

"""The followee sweep reports each size's median interleaved round."""

from __future__ import annotations

import random
from unittest import mock

from bench.loadgen import Workload
from bench.main import median_round, size_result


def round_with(p50: float, throughput: float) -> dict:
    return {"throughput": throughput, "ops": {"home": {"p50_ms": p50}}}


def test_the_median_round_is_reported_whole_with_every_rounds_p50() -> None:
    chosen = median_round([round_with(3.0, 300), round_with(1.0, 900), round_with(2.0, 500)])
    assert chosen["ops"]["home"]["p50_ms"] == 2.0
    assert chosen["throughput"] == 500  # the same round's other figures
    assert chosen["round_p50s_ms"] == [3.0, 1.0, 2.0]


def test_a_round_without_reads_counts_as_the_slowest() -> None:
    empty = {"throughput": 0, "ops": {}}
    chosen = median_round([empty, round_with(1.0, 900), round_with(2.0, 500)])
    assert chosen["ops"]["home"]["p50_ms"] == 2.0


def test_each_size_gets_its_own_part_of_an_interleaved_phase() -> None:
    phase = {
        "mode": "closed",
        "concurrency": 1,
        "throughput": 900.0,
        "server_cpu_ms_per_op": {"router": 0.9},
        "ops": {
            "home@10": {"count": 450, "p50_ms": 1.5, "errors": {}},
            "home@5000": {"count": 449, "p50_ms": 1.6, "errors": {"UNAVAILABLE": 1}},
        },
    }
    part = size_result(phase, "home@5000")
    assert part["ops"] == {"home": phase["ops"]["home@5000"]}
    assert (part["ops_ok"], part["ops_failed"], part["concurrency"]) == (449, 1, 1)
    assert "server_cpu_ms_per_op" not in part  # shared by both sizes: not one size's cost


def test_a_grouped_read_asks_for_a_reader_of_its_own_group() -> None:
    spec = {
        "users": [1],
        "user_groups": {"10": [11, 12], "5000": [51, 52]},
        "texts": ["x"],
        "mix": {"home@10": 1.0, "home@5000": 1.0},
    }
    workload = Workload(spec, random.Random(4))
    stub = mock.Mock()
    asked: dict[str, set[int]] = {"10": set(), "5000": set()}
    for _ in range(200):
        op = workload.pick_op()
        workload.call(stub, op)
        asked[op.split("@")[1]].add(stub.GetHomeTimeline.call_args.args[0].user_id)
    assert asked == {"10": {11, 12}, "5000": {51, 52}}

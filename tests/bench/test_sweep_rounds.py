"""The followee sweep reports each size's median interleaved round."""

from __future__ import annotations

from bench.main import median_round


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

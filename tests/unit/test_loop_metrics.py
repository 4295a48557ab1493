"""The lock-free metric families must expose exactly what prometheus_client's
own Counter and Histogram expose for the same observations (less the
``_created`` timestamps), so scrapers and dashboards see no change."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from murmur.loop_metrics import LoopCounter, LoopHistogram

BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 1, 10)
values = st.one_of(
    st.sampled_from([0.0, *BOUNDS]),  # exactly on a bound: counted in that bucket ("le")
    st.floats(min_value=0, max_value=50, allow_nan=False),
)
methods = st.sampled_from(["Ping", "ReadInbox", "PostTweet"])


def exposition(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def pair(registry_a: CollectorRegistry, registry_b: CollectorRegistry):
    ours = (
        LoopCounter("murmur_rpc_total", "RPCs", ["service", "method"], registry=registry_a),
        LoopHistogram(
            "murmur_rpc_seconds", "latency", ["method"], buckets=BOUNDS, registry=registry_a
        ),
    )
    theirs = (
        Counter("murmur_rpc_total", "RPCs", ["service", "method"], registry=registry_b),
        Histogram("murmur_rpc_seconds", "latency", ["method"], buckets=BOUNDS, registry=registry_b),
    )
    return ours, theirs


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(methods, values), max_size=60))
def test_exposition_matches_prometheus_client(observations: list[tuple[str, float]]) -> None:
    registry_a, registry_b = CollectorRegistry(), CollectorRegistry()
    ours, theirs = pair(registry_a, registry_b)
    for method, value in observations:
        for counter, histogram in (ours, theirs):
            counter.labels("Shard", method).inc()
            histogram.labels(method).observe(value)
    assert exposition(registry_a) == exposition(registry_b)


def test_counter_adds_amounts_and_keeps_each_label_set_apart() -> None:
    registry = CollectorRegistry()
    lookups = LoopCounter("copies", "lookups", ["result"], registry=registry)
    lookups.labels("copy").inc(3)
    lookups.labels("pulled").inc()
    lookups.labels("copy").inc(2)
    assert registry.get_sample_value("copies_total", {"result": "copy"}) == 5
    assert registry.get_sample_value("copies_total", {"result": "pulled"}) == 1


def test_a_histogram_without_labels_counts_into_its_one_series() -> None:
    registry = CollectorRegistry()
    sizes = LoopHistogram("inbox", "sizes", buckets=(10, 100), registry=registry).labels()
    for size in (0, 10, 11, 500):
        sizes.observe(size)
    assert registry.get_sample_value("inbox_bucket", {"le": "10.0"}) == 2
    assert registry.get_sample_value("inbox_bucket", {"le": "100.0"}) == 3
    assert registry.get_sample_value("inbox_bucket", {"le": "+Inf"}) == 4
    assert registry.get_sample_value("inbox_count") == 4
    assert registry.get_sample_value("inbox_sum") == 521


def test_wrong_label_count_and_unordered_bounds_are_refused() -> None:
    registry = CollectorRegistry()
    counter = LoopCounter("calls", "calls", ["service", "method"], registry=registry)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("Shard")
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("bad", "bad", buckets=(1, 0.5), registry=registry)


def test_a_scrape_while_the_loop_adds_series_never_fails() -> None:
    """The HTTP thread copies each family before reading it: scraping while
    new label sets appear must neither raise nor lose a finished count."""
    registry = CollectorRegistry()
    counter = LoopCounter("grow", "grow", ["n"], registry=registry)
    done = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not done.is_set():
                generate_latest(registry)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    for n in range(4_000):
        counter.labels(str(n % 1_000)).inc()
        if n % 100 == 0:
            time.sleep(0.001)  # let the scraper run between additions
    done.set()
    scraper.join()
    assert errors == []
    assert (
        sum(registry.get_sample_value("grow_total", {"n": str(n)}) for n in range(1_000)) == 4_000
    )

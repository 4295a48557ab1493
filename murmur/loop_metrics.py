"""Prometheus counters and histograms written from one event loop, without locks.

prometheus_client guards each increment with a lock and checks its arguments
in Python: ~0.6 µs a counter and ~1.5 µs a histogram observation on an idle
box, and several times that on a loaded one, where py-spy put its code at
~6% of a shard serving batched home reads (each read is counted, timed and
its inbox size observed). Our servers touch their metrics from their event
loop only, so one thread writes and a plain ``+=`` on an int or a list slot
is enough; the HTTP thread that serves scrapes only reads, copying each
series in one C call (``list(...)``, ``dict.copy()``) so a scrape never
iterates a dict that the loop is growing. A scrape may see a histogram's sum
a moment apart from its buckets; its count is always the buckets' total.

The families keep prometheus_client's names and exposition (a counter
``x_total``, a histogram's ``_bucket``/``_count``/``_sum``), so dashboards
and alerts see no difference. One series is gone: prometheus_client also
exports each series' creation time (``x_created``), which a scraper uses
only to spot counter resets earlier than a drop in the value shows them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterChild:
    """One labelled series of a ``LoopCounter``."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    """One labelled series of a ``LoopHistogram``: a count per bucket (the
    last one is +Inf) and the sum of the values observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bucket whose upper bound is >= value ("le")
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


Child = TypeVar("Child", CounterChild, HistogramChild)


class _Family(Collector, Generic[Child]):
    """A named family of series, one per label set, registered on creation."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        (REGISTRY if registry is None else registry).register(self)

    def labels(self, *values: object) -> Child:
        """The series for these label values (bind it once on hot paths)."""
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {len(key)} values")
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, self._new_child())
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        """The family with no samples, so registering it needs no collect."""
        yield self._family()

    def _snapshot(self) -> list[tuple[tuple[str, ...], Child]]:
        return list(self._children.copy().items())


class LoopCounter(_Family[CounterChild]):
    """A counter family; ``labels(...)`` gives the series to ``inc``."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        for values, child in self._snapshot():
            family.add_metric(list(values), child.value)
        yield family


class LoopHistogram(_Family[HistogramChild]):
    """A histogram family with fixed upper bounds; ``labels(...)`` gives the
    series to ``observe``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        registry: CollectorRegistry | None = None,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: bucket bounds must be distinct and increasing")
        self.bounds = bounds
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = self._family()
        les = [floatToGoString(bound) for bound in self.bounds] + ["+Inf"]
        for values, child in self._snapshot():
            cumulative, running = [], 0
            for le, count in zip(les, list(child.counts), strict=True):
                running += count
                cumulative.append((le, running))
            family.add_metric(list(values), cumulative, sum_value=child.total)
        yield family

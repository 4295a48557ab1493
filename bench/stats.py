"""Latency histograms that merge across worker processes.

HdrHistogram (the ``hdrhistogram`` package) when it is installed, 3
significant digits from 1 µs to 2 minutes; otherwise a sorted-list
percentile over the raw samples. Values are recorded in microseconds.
"""

from __future__ import annotations

import base64
from typing import Any

try:
    from hdrh.histogram import HdrHistogram
except ImportError:  # pragma: no cover - the fallback
    HdrHistogram = None

MAX_US = 120_000_000
BACKEND = "hdrhistogram" if HdrHistogram is not None else "sorted-list"


class Latency:
    def __init__(self) -> None:
        self._hdr = HdrHistogram(1, MAX_US, 3) if HdrHistogram is not None else None
        self._values: list[int] = []
        self._sum = 0
        self._count = 0
        self._max = 0

    def record(self, micros: float) -> None:
        value = max(1, min(MAX_US, int(micros)))
        if self._hdr is not None:
            self._hdr.record_value(value)
        else:
            self._values.append(value)
        self._sum += value
        self._count += 1
        if value > self._max:
            self._max = value

    @property
    def count(self) -> int:
        return self._count

    def percentile(self, pct: float) -> float:
        """Microseconds at percentile ``pct`` (0-100); 0 when empty."""
        if not self._count:
            return 0.0
        if self._hdr is not None:
            return float(self._hdr.get_value_at_percentile(pct))
        ordered = sorted(self._values)
        index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
        return float(ordered[index])

    def merge(self, other: Latency) -> Latency:
        if self._hdr is not None and other._hdr is not None:
            self._hdr.add(other._hdr)
        else:
            self._values.extend(other._values)
        self._sum += other._sum
        self._count += other._count
        self._max = max(self._max, other._max)
        return self

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"sum": self._sum, "count": self._count, "max": self._max}
        if self._hdr is not None and self._count:
            wire["hdr"] = base64.b64encode(self._hdr.encode()).decode()
        else:
            wire["values"] = self._values
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Latency:
        latency = cls()
        latency._sum, latency._count, latency._max = wire["sum"], wire["count"], wire["max"]
        if "hdr" in wire and HdrHistogram is not None:
            latency._hdr = HdrHistogram.decode(base64.b64decode(wire["hdr"]))
        elif wire.get("values"):
            latency._hdr = None
            latency._values = list(wire["values"])
        return latency

    def summary(self) -> dict[str, float]:
        """Milliseconds, rounded for reading."""

        def ms(micros: float) -> float:
            return round(micros / 1000.0, 3)

        return {
            "count": self._count,
            "mean_ms": ms(self._sum / self._count) if self._count else 0.0,
            "p50_ms": ms(self.percentile(50)),
            "p95_ms": ms(self.percentile(95)),
            "p99_ms": ms(self.percentile(99)),
            "p999_ms": ms(self.percentile(99.9)),
            "max_ms": ms(self._max),
        }


def summarize_ms(values_ms: list[float]) -> dict[str, float]:
    latency = Latency()
    for value in values_ms:
        latency.record(value * 1000.0)
    return latency.summary()

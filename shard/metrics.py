"""Prometheus series of one shard, read from its live state at scrape time:
fan-out backlog, lag and deliveries, group commit, celebrities, slot moves
and LevelDB size (per-RPC counts and latencies come from ``murmur/observability.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from murmur.loop_metrics import LoopHistogram
from murmur.v1 import shard_pb2
from shard import keys
from shard.maintenance import disk_bytes, oldest_outbox_age_ms

INBOX_SIZE = LoopHistogram(
    "murmur_inbox_size_entries",
    "Home inbox sizes seen by reads",
    buckets=(0, 10, 50, 100, 200, 400, 800, 1600, 5000),
).labels()
CELEBRITY_CACHE_S = 30.0


class ShardCollector(Collector):
    def __init__(self, state, worker, commits) -> None:
        self.state = state
        self.worker = worker
        self.commits = commits
        self._celebrities = (0.0, 0)

    def describe(self) -> list:
        """Nothing up front: otherwise the registry would collect (and cache
        the celebrity count) at registration, before the shard has users."""
        return []

    def _celebrity_count(self) -> int:
        taken_at, count = self._celebrities
        if time.monotonic() - taken_at < CELEBRITY_CACHE_S:
            return count
        count = 0
        for slot, owned in enumerate(self.state.ownership.owned):
            if not owned:
                continue
            for _key, raw in self.state.store.scan(keys.slot_prefix(slot) + keys.USER):
                count += shard_pb2.UserRecord.FromString(raw).user.celebrity
        self._celebrities = (time.monotonic(), count)
        return count

    def collect(self) -> Iterator[Metric]:
        """Each group is a generator, so every value is read from the live
        state as its family is yielded; the groups come in one fixed order
        (outbox, delivery, group commit, placement, storage) so that two
        scrapes compare line by line."""
        yield from self._outbox_families()
        yield from self._delivery_families()
        yield from self._group_commit_families()
        yield from self._placement_families()
        yield from self._storage_families()

    def _shard_label(self) -> list[str]:
        """Every series carries the shard id, so one dashboard can hold a
        whole cluster's scrapes side by side."""
        return [str(self.state.shard_id)]

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=["shard"])
        family.add_metric(self._shard_label(), value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=["shard"])
        family.add_metric(self._shard_label(), value)
        return family

    def _outbox_families(self) -> Iterator[Metric]:
        """What is still waiting to be delivered: a growing backlog or an
        aging oldest record is the first sign that fan-out falls behind."""
        yield self._gauge(
            "murmur_fanout_backlog_records",
            "Outbox records not yet delivered",
            self.state.outbox.backlog(),
        )
        yield self._parked_family()
        yield self._gauge(
            "murmur_fanout_oldest_record_seconds",
            "Age of the oldest outbox record",
            oldest_outbox_age_ms(self.state) / 1000,
        )

    def _parked_family(self) -> GaugeMetricFamily:
        """One series per destination, so the shard that did not answer is
        named rather than hidden in a total."""
        parked = GaugeMetricFamily(
            "murmur_fanout_parked_ops",
            "Fan-out ops parked for a destination shard that did not answer",
            labels=["shard", "destination"],
        )
        for destination, count in sorted(dict(self.state.parked.counts).items()):
            parked.add_metric([*self._shard_label(), str(destination)], count)
        return parked

    def _delivery_families(self) -> Iterator[Metric]:
        """How the fan-out worker is doing: lags users notice, and counters
        to take rates of (entries per second, failed rounds per round)."""
        stats = self.worker.stats
        yield self._gauge(
            "murmur_fanout_lag_p50_seconds",
            "Recent post-to-inbox lag, median",
            stats.percentile(0.5) / 1000,
        )
        yield self._gauge(
            "murmur_fanout_lag_p99_seconds",
            "Recent post-to-inbox lag, p99",
            stats.percentile(0.99) / 1000,
        )
        yield self._counter(
            "murmur_fanout_inbox_entries",
            "Inbox entries delivered by this shard's worker",
            stats.inbox_entries,
        )
        yield self._counter("murmur_fanout_rounds", "Fan-out rounds completed", stats.rounds)
        yield self._counter(
            "murmur_fanout_failures", "Fan-out rounds that failed and were retried", stats.failures
        )

    def _group_commit_families(self) -> Iterator[Metric]:
        """Writes wait for fsyncs, so these explain slow writes: writes per
        fsync, time spent syncing, and how long the event loop itself
        waited on the disk for the fsyncs it ran inline."""
        commits = self.commits
        yield self._counter("murmur_fsyncs", "Group-commit fsyncs", commits.syncs)
        yield self._counter(
            "murmur_synced_writes",
            "Writes made durable by those fsyncs",
            commits.synced_writes,
        )
        yield self._counter(
            "murmur_inline_fsyncs",
            "Fsyncs run on the event loop, the disk being fast enough (the rest use a thread)",
            commits.inline_syncs,
        )
        yield self._counter(
            "murmur_fsync_seconds",
            "Wall time spent in group-commit fsyncs",
            commits.sync_seconds,
        )
        yield self._counter(
            "murmur_inline_fsync_seconds",
            "Wall time of the fsyncs run on the event loop: the time it waited on the disk",
            commits.inline_sync_seconds,
        )
        yield self._gauge(
            "murmur_fsync_seconds_average",
            "Moving average of fsync wall time; it decides where fsyncs run",
            commits.sync_s,
        )
        yield self._gauge(
            "murmur_unsafe_no_fsync",
            "1 if this shard acknowledges writes without the group commit's fsync "
            "(--unsafe-no-fsync): a power cut can lose acknowledged writes",
            0 if commits.fsync_enabled else 1,
        )

    def _placement_families(self) -> Iterator[Metric]:
        """Who lives here and what is moving: celebrities are pulled at read
        time instead of fanned out, and frozen slots refuse callers until
        their move completes."""
        ownership = self.state.ownership
        yield self._gauge(
            "murmur_celebrities", "Celebrity users on this shard", self._celebrity_count()
        )
        yield self._gauge("murmur_slots_owned", "Slots this shard owns", sum(ownership.owned))
        yield self._gauge(
            "murmur_slots_frozen", "Slots in the last step of a move", len(ownership.frozen)
        )

    def _storage_families(self) -> Iterator[Metric]:
        """A shard whose storage failed still serves reads, so only this gauge
        (and murmur-admin's health) tells a scraper that writes stopped; the
        folder size is what a full-disk alert watches."""
        store = self.state.store
        yield self._gauge(
            "murmur_storage_writes_refused",
            "1 once a write to the shard's storage failed: it refuses writes until restarted",
            1 if store.db.closed else 0,
        )
        yield self._gauge(
            "murmur_leveldb_bytes",
            "Bytes of the shard's LevelDB folder",
            disk_bytes(store.path),
        )


def register(state, worker, commits) -> None:
    REGISTRY.register(ShardCollector(state, worker, commits))

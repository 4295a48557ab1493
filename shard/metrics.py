"""Prometheus series of one shard, read from its live state at scrape time:
fan-out backlog, lag and deliveries, group commit, celebrities, slot moves
and LevelDB size (per-RPC counts and latencies come from ``murmur/observability.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
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

    def collect(self) -> Iterator:
        state, stats = self.state, self.worker.stats
        labels = [str(state.shard_id)]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["shard"])
            family.add_metric(labels, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["shard"])
            family.add_metric(labels, value)
            return family

        yield gauge(
            "murmur_fanout_backlog_records",
            "Outbox records not yet delivered",
            state.outbox.backlog(),
        )
        parked = GaugeMetricFamily(
            "murmur_fanout_parked_ops",
            "Fan-out ops parked for a destination shard that did not answer",
            labels=["shard", "destination"],
        )
        for destination, count in sorted(dict(state.parked.counts).items()):
            parked.add_metric([*labels, str(destination)], count)
        yield parked
        yield gauge(
            "murmur_fanout_oldest_record_seconds",
            "Age of the oldest outbox record",
            oldest_outbox_age_ms(state) / 1000,
        )
        yield gauge(
            "murmur_fanout_lag_p50_seconds",
            "Recent post-to-inbox lag, median",
            stats.percentile(0.5) / 1000,
        )
        yield gauge(
            "murmur_fanout_lag_p99_seconds",
            "Recent post-to-inbox lag, p99",
            stats.percentile(0.99) / 1000,
        )
        yield counter(
            "murmur_fanout_inbox_entries",
            "Inbox entries delivered by this shard's worker",
            stats.inbox_entries,
        )
        yield counter("murmur_fanout_rounds", "Fan-out rounds completed", stats.rounds)
        yield counter(
            "murmur_fanout_failures", "Fan-out rounds that failed and were retried", stats.failures
        )
        yield counter("murmur_fsyncs", "Group-commit fsyncs", self.commits.syncs)
        yield counter(
            "murmur_synced_writes",
            "Writes made durable by those fsyncs",
            self.commits.synced_writes,
        )
        yield counter(
            "murmur_inline_fsyncs",
            "Fsyncs run on the event loop, the disk being fast enough (the rest use a thread)",
            self.commits.inline_syncs,
        )
        yield counter(
            "murmur_fsync_seconds",
            "Wall time spent in group-commit fsyncs",
            self.commits.sync_seconds,
        )
        yield counter(
            "murmur_inline_fsync_seconds",
            "Wall time of the fsyncs run on the event loop: the time it waited on the disk",
            self.commits.inline_sync_seconds,
        )
        yield gauge(
            "murmur_fsync_seconds_average",
            "Moving average of fsync wall time; it decides where fsyncs run",
            self.commits.sync_s,
        )
        yield gauge("murmur_celebrities", "Celebrity users on this shard", self._celebrity_count())
        yield gauge("murmur_slots_owned", "Slots this shard owns", sum(state.ownership.owned))
        yield gauge(
            "murmur_slots_frozen", "Slots in the last step of a move", len(state.ownership.frozen)
        )
        yield gauge(
            "murmur_storage_writes_refused",
            "1 once a write to the shard's storage failed: it refuses writes until restarted",
            1 if state.store.db.closed else 0,
        )
        yield gauge(
            "murmur_leveldb_bytes",
            "Bytes of the shard's LevelDB folder",
            disk_bytes(state.store.path),
        )


def register(state, worker, commits) -> None:
    REGISTRY.register(ShardCollector(state, worker, commits))

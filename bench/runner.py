"""Running timed phases: worker processes, server CPU before/after, merging."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.loadgen import run_worker, warm_up
from bench.stats import Latency

START_DELAY_S = 0.6
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def load_average() -> float:
    try:
        with open("/proc/loadavg") as handle:
            return float(handle.read().split()[0])
    except OSError:
        return 0.0


class PhaseRunner:
    """Runs load phases in a pool of spawned worker processes."""

    def __init__(self, max_workers: int, progress: bool = True) -> None:
        import multiprocessing

        self.max_workers = max_workers
        self.pool = ProcessPoolExecutor(
            max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")
        )
        self.progress = progress

    def warm(self) -> None:
        futures = [self.pool.submit(warm_up, 0.5) for _ in range(self.max_workers)]
        for future in futures:
            future.result(timeout=120)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def run(
        self,
        spec: dict[str, Any],
        workers: int,
        cpu: Callable[[], dict[str, float]] | None,
        label: str,
    ) -> dict[str, Any]:
        """One phase split over ``workers`` processes; returns the merged result."""
        workers = max(1, min(workers, self.max_workers))
        start_at = time.time() + START_DELAY_S
        specs = []
        for index in range(workers):
            part = dict(spec, start_at=start_at, seed=spec.get("seed", 0) * 100 + index)
            part["max_ops"] = max(1, spec["max_ops"] // workers)
            if spec["mode"] == "closed":
                share = spec["concurrency"] // workers + (
                    1 if index < spec["concurrency"] % workers else 0
                )
                part["concurrency"] = max(1, share)
            else:
                part["rate"] = spec["rate"] / workers
            specs.append(part)
        loop = asyncio.get_running_loop()
        futures = [
            asyncio.wrap_future(self.pool.submit(run_worker, part), loop=loop) for part in specs
        ]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = cpu() if cpu else {}
        busy0, own0 = machine_busy_s(), time.process_time()
        wall0 = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=round(spec["duration"]),
                desc=f"  {label}",
                unit="s",
                leave=False,
                bar_format="{desc}: {bar} {n_fmt}/{total_fmt}s",
            )
        try:
            pending = set(futures)
            while pending:
                _done, pending = await asyncio.wait(pending, timeout=1.0)
                if bar is not None and bar.n < bar.total:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - wall0
        cpu1 = cpu() if cpu else {}
        merged = merge_results(spec, results, wall, cpu0, cpu1, workers)
        busy = machine_busy_s() - busy0
        own = time.process_time() - own0
        ours = sum(merged["server_cpu_s"].values()) + merged["loadgen_cpu_s"] + own
        merged["machine"] = {
            "busy_cores": round(busy / wall, 3),
            "other_processes_cores": round(max(0.0, busy - ours) / wall, 3) if cpu else None,
            "load_average_1m": load_average(),
        }
        return merged


def merge_results(
    spec: dict[str, Any],
    results: list[dict[str, Any]],
    wall: float,
    cpu0: dict[str, float],
    cpu1: dict[str, float],
    workers: int,
) -> dict[str, Any]:
    elapsed = max(r["elapsed_s"] for r in results) or wall
    latencies: dict[str, Latency] = {}
    errors: dict[str, Counter] = {}
    for result in results:
        for op, data in result["ops"].items():
            latencies.setdefault(op, Latency()).merge(Latency.from_wire(data["latency"]))
            errors.setdefault(op, Counter()).update(data["errors"])
    total_ok = sum(lat.count for lat in latencies.values())
    total_err = sum(sum(c.values()) for c in errors.values())
    ops = {}
    for op in sorted(set(latencies) | set(errors)):
        latency = latencies.get(op, Latency())
        ops[op] = {
            **latency.summary(),
            "throughput": round(latency.count / elapsed, 1),
            "errors": dict(errors.get(op, {})),
        }
    server_cpu = {name: round(cpu1.get(name, 0.0) - cpu0.get(name, 0.0), 3) for name in cpu1}
    loadgen_cpu = sum(r["cpu_s"] for r in results)
    out: dict[str, Any] = {
        "mode": spec["mode"],
        "mix": spec["mix"],
        "workers": workers,
        "duration_s": round(elapsed, 3),
        "ops_ok": total_ok,
        "ops_failed": total_err,
        "throughput": round(total_ok / elapsed, 1),
        "ops": ops,
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_op": {
            name: round(1000 * value / total_ok, 4) if total_ok else None
            for name, value in server_cpu.items()
        },
        "server_cpu_ms_per_op_total": round(1000 * sum(server_cpu.values()) / total_ok, 4)
        if total_ok and server_cpu
        else None,
        "loadgen_cpu_s": round(loadgen_cpu, 3),
        "loadgen_cpu_cores": round(loadgen_cpu / elapsed, 3),
        "loadgen_cpu_ms_per_op": round(1000 * loadgen_cpu / total_ok, 4) if total_ok else None,
    }
    if spec["mode"] == "closed":
        out["concurrency"] = spec["concurrency"]
    else:
        out["offered_rate"] = spec["rate"]
        out["shed"] = sum(r.get("shed", 0) for r in results)
        out["generator_late_max_ms"] = round(max(r.get("late_max_ms", 0) for r in results), 2)
        out["achieved_rate"] = round((total_ok + total_err) / elapsed, 1)
        everything = Latency()
        for latency in latencies.values():
            everything.merge(Latency.from_wire(latency.to_wire()))
        out["all_ops"] = everything.summary()
    return out

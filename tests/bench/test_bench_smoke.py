"""The benchmark harness end to end on a tiny generated graph.

Starts real shard, router and join-server processes on 127.0.0.1, runs
every section in miniature (``--tiny``) into a temporary folder, and checks
the JSON's sections and the plots. No timing assertions: the numbers of a
tiny run on a busy machine mean nothing; only the plumbing is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="bench extras not installed (pip install -e '.[bench]')")
pytest.importorskip("tqdm")

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = [
    "meta",
    "config",
    "dataset",
    "load",
    "closed_loop",
    "side_by_side",
    "rate_sweep",
    "followee_sweep",
    "join",
    "strategies",
    "fsync_cost",
    "fanout",
    "disk",
    "targets",
    "plots",
    "timings_s",
]


@pytest.mark.timeout(240)
def test_tiny_bench_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.main",
            "--tiny",
            "--users",
            "60",
            "--no-progress",
            "--name",
            "smoke",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=230,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    result = json.loads((out / "smoke.json").read_text())
    for section in SECTIONS:
        assert section in result, f"missing section {section}"
    assert result["dataset"]["graph"]["source"].startswith("generated")
    assert result["dataset"]["graph"]["users"] == 60

    murmur = result["closed_loop"]["murmur"]
    for workload in ("ping", "home", "mix", "post"):
        assert murmur[workload], workload
        for phase in murmur[workload].values():
            assert phase["ops_ok"] > 0
            assert phase["ops_failed"] == 0, phase
    mix = next(iter(murmur["mix"].values()))
    assert set(mix["ops"]) == {"home", "user", "post"}
    assert set(mix["server_cpu_s"]) == {"router", "shard-0", "shard-1"}
    assert mix["loadgen_cpu_s"] > 0

    paired = result["side_by_side"]
    assert len(paired["rounds"]) == 1
    (only,) = paired["rounds"]
    assert [phase["op"] for phase in only["phases"]] == paired["order"]
    assert all(phase["throughput"] > 0 and phase["ops_failed"] == 0 for phase in only["phases"])
    assert all(only[op]["throughput"] > 0 for op in ("ping", "home", "post"))
    # scraped from the shards' metrics (0 if a slow disk sends fsyncs to a thread)
    assert all(0.0 <= phase["loop_fsync_share"] <= 1.0 for phase in only["phases"])
    for ratio in paired["ratios"].values():
        assert len(ratio["per_round"]) == 1 and ratio["median"] > 0
    home_target = next(t for t in result["targets"] if t["target"].startswith("home-timeline thr"))
    assert home_target["measured"] == paired["ratios"]["home_throughput"]["median"]

    fsync = result["fsync_cost"]  # restarts with and without --unsafe-no-fsync, in turn
    assert [r["side"] for r in fsync["restarts"]] == ["with_fsync", "without_fsync"]
    assert all(r["warm_up_posts_per_s"] > 0 for r in fsync["restarts"])  # uncounted phases
    for side in ("with_fsync", "without_fsync"):
        (only,) = fsync[f"rounds_{side}"]
        assert [phase["op"] for phase in only["phases"]] == ["ping", "post", "post", "ping"]
        assert all(phase["ops_failed"] == 0 for phase in only["phases"])
        assert fsync["ratios"][side]["post_throughput"]["median"] > 0
    unsynced_posts = fsync["rounds_without_fsync"][0]["phases"][1:3]
    assert all(phase["loop_fsync_share"] == 0.0 for phase in unsynced_posts)
    assert "What the fsync costs posts" in (out / "smoke.md").read_text()

    assert result["rate_sweep"]["steps"]
    assert "p99_crossing_rate" in result["rate_sweep"]

    sweep = result["followee_sweep"]
    for size in sweep["sizes"]:
        assert sweep["murmur"][str(size)]["ops"]["home"]["count"] > 0
        assert sweep["join"][str(size)]["ops"]["home"]["count"] > 0
        assert sweep["join_query_alone"][str(size)]["count"] > 0
    history = result["join"]["history"]
    assert history["followees"] == 20
    assert [int(d) for d in history["by_depth"]] == [2, 10]
    assert all(s["count"] > 0 for s in history["by_depth"].values())

    assert result["join"]["check"]["ok"] is True
    assert set(result["strategies"]) == {"hybrid-500", "write-all", "read-all"}
    assert result["strategies"]["read-all"]["top_accounts_celebrity"] == [True] * 3
    assert result["strategies"]["write-all"]["top_accounts_celebrity"] == [False] * 3
    for strategy in result["strategies"].values():
        assert strategy["delivery"]["timed_out"] == 0

    fanout = result["fanout"]
    peak = fanout["mix_peak"]["throughput"]  # the write-all cluster's own, measured first
    assert peak > 0
    assert fanout["background_mix"]["offered_rate"] == pytest.approx(max(5.0, peak / 2), rel=0.05)
    assert fanout["burst_idle"]["inbox_entries"] > 0
    assert fanout["burst_idle"]["missing_tweets"] == 0
    # timed from the shards' fan-out log lines, not the polling fallback
    assert fanout["burst_idle"]["method"].startswith("shard log lines")
    assert fanout["burst_idle"]["delivered_tweets"] > 0
    assert "entries_per_s" in fanout["burst_idle"]
    assert result["disk"]["bytes_per_inbox_entry"]

    names = {t["target"] for t in result["targets"]}
    assert any("floor" in n for n in names) and any("join" in n for n in names)

    markdown = (out / "smoke.md").read_text()
    assert "## Targets" in markdown and "met" in markdown
    assert "join query alone" in markdown and "half of this cluster's peak" in markdown
    assert len(result["plots"]) == 5
    for name in result["plots"]:
        png = out / name
        assert png.exists() and png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

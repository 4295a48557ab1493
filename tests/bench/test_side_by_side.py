"""How the report reads a run's targets. The floor ratios: taken within
each interleaved round, reported as the median round's, with the long
phases' ratio kept beside it. The delivery target: named by the largest
author its probes reached."""

from __future__ import annotations

from bench.main import ROUND_ORDER, paired_ratios, round_means
from bench.report import markdown, targets


def rounds(*rates: tuple[float, float, float]) -> list[dict]:
    """(Ping, home, post) throughputs per round; p99s mirror them."""
    return [
        {
            op: {"throughput": rate, "p99_ms": 1000.0 / rate if rate else 0.0, "ops_failed": 0}
            for op, rate in zip(("ping", "home", "post"), r, strict=True)
        }
        for r in rates
    ]


def test_each_ratio_is_taken_within_its_round() -> None:
    # a slow spell halves the second round: its ratios are the same as the others'
    ratios = paired_ratios(rounds((1000, 900, 800), (500, 450, 400), (1000, 1100, 700)))
    assert ratios["home_throughput"] == {"per_round": [0.9, 0.9, 1.1], "median": 0.9}
    assert ratios["post_throughput"] == {"per_round": [0.8, 0.8, 0.7], "median": 0.8}
    assert ratios["home_p99"]["median"] == round(1000 / 900, 3)


def test_the_round_order_reads_the_same_both_ways() -> None:
    assert ROUND_ORDER == ROUND_ORDER[::-1]
    for op in ("ping", "home", "post"):
        places = [i for i, name in enumerate(ROUND_ORDER) if name == op]
        assert sum(places) / len(places) == (len(ROUND_ORDER) - 1) / 2  # the same centre


def test_a_steady_slowdown_across_a_round_cancels_out() -> None:
    # the box loses 10% of its speed per phase; home is really 1.2x Ping and
    # post 0.9x. Run in the order ping, home, post, the drift alone would put
    # home/Ping at 1.08x and post/Ping at 0.72x.
    truth = {"ping": 1000.0, "home": 1200.0, "post": 900.0}
    speed = [1.0 - 0.1 * i for i in range(len(ROUND_ORDER))]
    measured = [
        {"op": op, "throughput": truth[op] * s, "p99_ms": 10.0 / s, "ops_failed": 1}
        for op, s in zip(ROUND_ORDER, speed, strict=True)
    ]
    row = round_means(measured)
    assert row["phases"] == measured
    assert row["ping"]["ops_failed"] == 2
    ratios = paired_ratios([row])
    assert ratios["home_throughput"]["median"] == 1.2
    assert ratios["post_throughput"]["median"] == 0.9


def test_a_round_averages_the_loops_fsync_wait_of_its_phases() -> None:
    measured = [
        {"op": op, "throughput": 1000.0, "p99_ms": 10.0, "ops_failed": 0, "loop_fsync_share": s}
        for op, s in zip(ROUND_ORDER, (0.0, 0.0, 0.2, 0.3, 0.0, None), strict=True)
    ]
    row = round_means(measured)
    assert row["post"]["loop_fsync_share"] == 0.25
    assert row["ping"]["loop_fsync_share"] == 0.0  # a phase without a reading is left out
    unread = round_means([{**measured[0], "loop_fsync_share": None}])
    assert unread["ping"]["loop_fsync_share"] is None
    paired = {
        "concurrency": 16,
        "order": list(ROUND_ORDER),
        "rounds": [row],
        "ratios": paired_ratios([row]),
    }
    report = markdown({"side_by_side": paired}).splitlines()
    (line,) = [line for line in report if line[:4] == "| 1 "]
    assert line.endswith("| 25% |")


def phases(ping: float, home: float, post: float) -> dict:
    def phase(op: str, rate: float) -> dict:
        return {"throughput": rate, "ops": {op: {"p99_ms": 20.0}}}

    return {
        "ping": {"c16": phase("ping", ping)},
        "home": {"c16": phase("home", home)},
        "post": {"c16": phase("post", post)},
    }


def test_the_targets_use_the_rounds_and_show_the_phases() -> None:
    result = {
        "closed_loop": {"murmur": phases(1000, 700, 800)},
        "side_by_side": {
            "concurrency": 16,
            "ratios": paired_ratios(rounds((1000, 1050, 990), (900, 990, 950), (1200, 1100, 1300))),
        },
    }
    home = next(t for t in targets(result) if t["target"].startswith("home-timeline throughput"))
    assert home["measured"] == 1.05 and home["met"] is True
    assert "median of 3 interleaved rounds" in home["note"] and "0.70" in home["note"]


def test_without_rounds_the_phases_decide() -> None:
    result = {"closed_loop": {"murmur": phases(1000, 700, 800)}}
    found = {t["target"]: t for t in targets(result)}
    assert found["home-timeline throughput vs floor (c16)"]["measured"] == 0.7
    assert found["PostTweet throughput vs floor (c16)"]["met"] is False


def test_a_round_without_ping_keeps_the_others_in_their_places() -> None:
    ratios = paired_ratios(rounds((1000, 900, 800), (0.0, 450, 400), (1000, 1100, 700)))
    assert ratios["home_throughput"] == {"per_round": [0.9, None, 1.1], "median": 1.0}
    paired = {
        "concurrency": 16,
        "order": list(ROUND_ORDER),
        "rounds": rounds((1000, 900, 800), (1, 450, 400), (1000, 1100, 700)),
        "ratios": ratios,
    }
    lines = [line for line in markdown({"side_by_side": paired}).splitlines() if line[:4] == "| 3 "]
    assert lines and "1.10" in lines[0]  # round 3's ratio on round 3's line


def test_the_p99_ratio_is_a_ceiling_on_the_paired_path_too() -> None:
    # home p99 / Ping p99 = Ping rate / home rate here: 1000/600 in every round
    result = {
        "closed_loop": {"murmur": phases(1000, 700, 800)},
        "side_by_side": {
            "concurrency": 16,
            "ratios": paired_ratios(rounds((1000, 600, 900), (1000, 600, 900))),
        },
    }
    p99 = next(t for t in targets(result) if t["target"].startswith("home-timeline p99"))
    assert p99["measured"] == round(1000 / 600, 3) and p99["met"] is False


def test_rounds_without_any_ping_fall_back_to_the_phases_and_say_so() -> None:
    result = {
        "closed_loop": {"murmur": phases(1000, 1100, 800)},
        "side_by_side": {"concurrency": 8, "ratios": paired_ratios(rounds((0.0, 450, 400)))},
    }
    home = next(t for t in targets(result) if t["target"].startswith("home-timeline throughput"))
    assert home["target"].endswith("(c16)") and home["measured"] == 1.1 and home["met"] is True


def test_the_delivery_target_names_the_largest_author_its_probes_reached() -> None:
    probes = [{"followers": 6}, {"followers": 9000}, {"followers": 120}]
    result = {"fanout": {"delivery": {"all": {"p99_ms": 450.0}, "results": probes}}}
    delivery = next(t for t in targets(result) if t["target"].startswith("delivery p99"))
    assert delivery["target"] == "delivery p99, authors up to 9,000 followers, mix at half peak"
    assert delivery["met"] is True
    none = next(t for t in targets({}) if t["target"].startswith("delivery p99"))
    assert "no delivery probes" in none["target"]


def test_rounds_without_home_have_only_the_post_ratio() -> None:
    # the rounds without fsync run Ping and posts only
    ping_and_post = [{"ping": r["ping"], "post": r["post"]} for r in rounds((1000, 0, 950))]
    assert paired_ratios(ping_and_post) == {
        "post_throughput": {"per_round": [0.95], "median": 0.95}
    }


def test_the_post_target_and_the_report_show_what_the_fsync_costs() -> None:
    synced = [{"ping": r["ping"], "post": r["post"]} for r in rounds((1000, 0, 900))]
    unsynced = [{"ping": r["ping"], "post": r["post"]} for r in rounds((1000, 0, 980))]
    result = {
        "closed_loop": {"murmur": phases(1000, 700, 800)},
        "side_by_side": {
            "concurrency": 16,
            "order": list(ROUND_ORDER),
            "rounds": rounds((1000, 900, 850)),
            "ratios": paired_ratios(rounds((1000, 900, 850))),
        },
        "fsync_cost": {
            "concurrency": 16,
            "order": ["ping", "post", "post", "ping"],
            "rounds_with_fsync": synced,
            "rounds_without_fsync": unsynced,
            "ratios": {
                "with_fsync": paired_ratios(synced),
                "without_fsync": paired_ratios(unsynced),
            },
        },
    }
    post = next(t for t in targets(result) if t["target"].startswith("PostTweet"))
    assert post["measured"] == 0.85 and post["met"] is False  # the side-by-side rounds decide
    assert post["note"].endswith(
        "after the same restarts, 0.900 with the fsync and 0.980 without it (not durable)"
    )
    report = markdown({key: result[key] for key in ("side_by_side", "fsync_cost")})
    assert "| 1 | 1,000 | 900 | 0.900 | 1,000 | 980 | 0.980 |" in report
    assert "| median | | | 0.900 | | | 0.980 |" in report

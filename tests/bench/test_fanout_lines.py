"""The bench times fan-out bursts from the shards' log lines: the parser must
read every tweet of a round's line, in the text and the JSON log format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench.probes import fanout_lines, log_offsets
from murmur.serving import JsonFormatter, TextFormatter
from shard.fanout import FanoutStats, FanoutWorker, RoundPlan


def write_round(path: Path, formatter: logging.Formatter, delivered: list) -> None:
    """Log one round through the fan-out worker's own code and formatter."""
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    logger = logging.getLogger("murmur.shard.fanout")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        worker = FanoutWorker.__new__(FanoutWorker)  # only its stats are needed
        worker.stats = FanoutStats()
        worker._record_lags(RoundPlan(delivered_tweets=delivered))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def test_every_tweet_of_a_round_is_read_back(tmp_path: Path) -> None:
    text_log, json_log = tmp_path / "text.log", tmp_path / "json.log"
    text_log.write_text("an earlier line: fanout round delivered tweet=1 followers=1 lag_ms=1\n")
    offsets = log_offsets([text_log, json_log])
    write_round(text_log, TextFormatter(), [(101, 0, 40), (102, 0, 0), (103, 0, 7)])
    write_round(json_log, JsonFormatter(), [(201, 0, 9000)])
    found = fanout_lines(offsets)
    assert set(found) == {101, 103, 201}  # a tweet with no followers has no lag; nothing before
    assert found[101][0] == 40 and found[103][0] == 7 and found[201][0] == 9000
    assert all(lag >= 0 for _followers, lag in found.values())
    assert json.loads(json_log.read_text().splitlines()[0])  # still one JSON object a line

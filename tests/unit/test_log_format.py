"""The text log carries a call's structured fields as the JSON log does."""

from __future__ import annotations

import json
import logging

from murmur.serving import JsonFormatter, TextFormatter


def call_record() -> logging.LogRecord:
    record = logging.LogRecord(
        "murmur.calls",
        logging.WARNING,
        __file__,
        1,
        "failed call %s %s in %.1f ms",
        ("Murmur.GetUser", "UNAVAILABLE", 0.3),
        None,
    )
    record.fields = {
        "rpc": "Murmur.GetUser",
        "component": "router admin",
        "code": "UNAVAILABLE",
        "duration_ms": 0.3,
        "user_id": 42,
        "shard": 1,
    }
    return record


def test_text_lines_end_with_the_fields_the_message_does_not_say() -> None:
    line = TextFormatter().format(call_record())
    assert line.endswith(
        "murmur.calls: failed call Murmur.GetUser UNAVAILABLE in 0.3 ms"
        ' component="router admin" user_id=42 shard=1'
    )


def test_a_record_without_fields_is_the_plain_line() -> None:
    record = logging.LogRecord("murmur", logging.INFO, __file__, 1, "started", (), None)
    assert TextFormatter().format(record).endswith("INFO murmur: started")


def test_json_lines_carry_the_same_fields() -> None:
    entry = json.loads(JsonFormatter().format(call_record()))
    assert (entry["component"], entry["user_id"], entry["shard"]) == ("router admin", 42, 1)

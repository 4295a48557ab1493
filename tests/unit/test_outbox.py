"""The outbox's backlog count, which every metrics scrape reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shard import outbox as outbox_module
from shard.outbox import Outbox, add_follower_record
from shard.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "db"))
    yield opened
    opened.close()


def queue(outbox: Outbox, store: Store, count: int) -> list[int]:
    txn = store.txn()
    seqs = [outbox.append(txn, add_follower_record(1, 100 + n)) for n in range(count)]
    txn.commit()
    return seqs


def test_the_backlog_counts_what_is_still_queued(store: Store) -> None:
    outbox = Outbox(store)
    seqs = queue(outbox, store, 8)
    assert outbox.backlog() == 8
    outbox.finish(seqs[:5], {})
    assert outbox.backlog() == 3
    assert Outbox(store).backlog() == 3  # reopened: the floor is found again


def test_a_long_backlog_is_the_open_span_of_sequence_numbers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting millions of records would hold the GIL through a scrape: past
    the limit the backlog is the span between the floor and the next number."""
    monkeypatch.setattr(outbox_module, "COUNT_BACKLOG_UP_TO", 4)
    outbox = Outbox(store)
    seqs = queue(outbox, store, 10)
    outbox.append(store.txn(), add_follower_record(1, 99))  # its commit never came
    outbox.finish(seqs[:3], {})
    assert outbox.backlog() == 8  # 7 queued, and the number the failed commit took
    outbox.finish(seqs[3:8], {})
    assert outbox.backlog() == 2  # under the limit again: counted

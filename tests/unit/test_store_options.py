"""LevelDB options (table compression, the write buffer) are choices of the
process, not of the data folder, and bad values fail at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from shard.main import parse_args
from shard.store import Store

VALUE = b"compressible " * 80  # ~1 KB that snappy shrinks many times over
COUNT = 2_000


def table_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix in (".ldb", ".sst"))


def fill(store: Store, start: int = 0) -> None:
    txn = store.txn()
    for i in range(start, start + COUNT):
        txn.put(b"k%08d" % i, VALUE)
    txn.commit()
    store.db.compact_range()


def test_tables_are_written_uncompressed_by_default(tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    for path, compress in ((plain, False), (packed, True)):
        store = Store(str(path), compress_tables=compress)
        fill(store)
        store.close()
    assert table_bytes(plain) >= COUNT * len(VALUE)
    assert table_bytes(packed) < table_bytes(plain) / 4


def test_a_store_reopens_with_the_other_setting(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = Store(str(path), compress_tables=True)
    fill(store)
    store.close()
    store = Store(str(path))
    fill(store, start=COUNT)
    assert [value for _, value in store.scan(b"k")] == [VALUE] * (2 * COUNT)
    store.close()


def test_the_write_buffer_holds_a_burst_in_memory(tmp_path: Path) -> None:
    """~6 MB of writes: a 1 MB buffer writes tables while they arrive; the
    default keeps them in its memtable (and its log) until it fills."""
    small, default = tmp_path / "small", tmp_path / "default"
    for store in (Store(str(small), write_buffer_mb=1), Store(str(default))):
        txn = store.txn()
        for i in range(3 * COUNT):
            txn.put(b"k%08d" % i, VALUE)
            if i % 200 == 199:  # LevelDB switches memtables between batches
                txn.commit()
                txn = store.txn()
        txn.commit()
        assert store.get(b"k%08d" % 0) == VALUE
        store.close()
    assert table_bytes(small) > 0
    assert table_bytes(default) == 0


@pytest.mark.parametrize("value", ["0", "1025", "-4"])
def test_a_write_buffer_out_of_range_is_refused_at_start(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", "x", "--write-buffer-mb", value])
    assert f"--write-buffer-mb: must be 1 to 1024 MB, got {int(value)}" in capsys.readouterr().err

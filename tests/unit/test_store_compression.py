"""Table compression is a choice of the process, not of the data folder."""

from __future__ import annotations

from pathlib import Path

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

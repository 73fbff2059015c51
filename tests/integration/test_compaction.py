"""Compaction on real Parquet files, with a reader running at the same time."""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from dataexport.ingest.hits import validate_hits
from dataexport.warehouse.embedded import compaction, durable
from dataexport.warehouse.embedded.compaction import compact, compact_partition
from dataexport.warehouse.embedded.layout import partition_dir, partition_files
from dataexport.warehouse.embedded.store import PageviewStore

DAY = date(2026, 3, 1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def rows(users: range, views: int = 3, title: str = "v1") -> list[dict]:
    return validate_hits(
        [
            {
                "user_id_unhashed": f"user-{u}",
                "session_number": 1,
                "session_time": "2026-03-01T08:00:00Z",
                "view_number": v,
                "view_time": f"2026-03-01T08:0{v}:00Z",
                "device_id": 1,
                "url": "https://x/",
                "title": title,
            }
            for u in users
            for v in range(1, views + 1)
        ]
    ).rows


def read(root: Path) -> list[tuple]:
    files = partition_files(root, 1, T0, T0 + timedelta(days=1))
    sql = f"SELECT user_id_unhashed, view_number, title FROM read_parquet({files!r}, hive_partitioning = false)"
    return duckdb.connect().sql(sql).fetchall()


def test_merges_files_into_one_keeping_the_latest_copy_of_each_pageview(tmp_path):
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 10)), now=T0)
        store.append(1, rows(range(10, 20)), now=T0)
        store.append(1, rows(range(5, 15), title="v2"), now=T0 + timedelta(hours=1))  # re-sent, corrected
        store.append(2, rows(range(0, 3)), now=T0)  # another project: untouched
        before = sorted(read(tmp_path))
        result = compact_partition(store, 1, DAY)
    assert result is not None
    assert (result.files_before, result.rows_before, result.rows_after) == (3, 90, 60)
    files = partition_files(tmp_path, 1, T0, T0 + timedelta(days=1))
    assert len(files) == 1
    after = sorted(read(tmp_path))
    expected = {(u, v): t for u, v, t in before if t == "v1"}
    expected.update({(u, v): t for u, v, t in before if t == "v2"})
    assert after == sorted((u, v, t) for (u, v), t in expected.items())
    assert len(list(partition_dir(tmp_path, 2, DAY).glob("*.parquet"))) == 1
    assert list((tmp_path / "_store").glob("compact-*.lock")) == []  # one a partition would pile up


def test_a_partition_being_compacted_is_left_to_its_compactor(tmp_path):
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 2)), now=T0)
        store.append(1, rows(range(2, 4)), now=T0)
        guard_path = store.meta / f"compact-1-{DAY.isoformat()}.lock"
        guard = durable.try_lock_removable(guard_path)  # as another process's compaction of it
        assert guard is not None
        assert compact_partition(store, 1, DAY) is None
        durable.unlock_and_remove(guard_path, guard)
        assert compact_partition(store, 1, DAY) is not None


def test_compact_removes_partition_locks_nobody_holds(tmp_path):
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 2)), now=T0)
        (store.meta / "compact-1-2026-01-01.lock").touch()  # left by a compaction killed mid-way
        held_path = store.meta / "compact-1-2026-01-02.lock"
        held = durable.try_lock_removable(held_path)
        compact(tmp_path)
        assert [p.name for p in store.meta.glob("compact-*.lock")] == [held_path.name]
        durable.unlock_and_remove(held_path, held)


def test_a_removed_lock_file_is_not_a_lock(tmp_path):
    # B opened the lock file, then A (its holder) removed it and let go: B's lock on the removed file must not
    # count, or B and a third process C (which creates the file anew) would both hold "the" lock.
    path = tmp_path / "compact.lock"
    a = durable.try_lock_removable(path)
    assert a is not None
    b_fd = os.open(path, os.O_RDWR)
    durable.unlock_and_remove(path, a)
    assert fcntl.flock(b_fd, fcntl.LOCK_EX | fcntl.LOCK_NB) is None  # B gets a lock, on a file no one can find
    assert not durable._names(path, b_fd)
    c = durable.try_lock_removable(path)  # so C does get the lock, on the new file...
    assert c is not None and durable._names(path, c)
    assert durable.try_lock_removable(path) is None  # ...and holds it alone
    os.close(b_fd)
    durable.unlock_and_remove(path, c)
    assert not path.exists()


def codec(path: Path) -> str:
    return pq.ParquetFile(path).metadata.row_group(0).column(0).compression


def test_a_single_fresh_file_is_rewritten_compactly_once(tmp_path):
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(3)))
        before = sorted(read(tmp_path))
        [fresh] = partition_dir(tmp_path, 1, DAY).glob("*.parquet")
        assert codec(fresh) == "LZ4"  # written for speed at ingest
        result = compact_partition(store, 1, DAY)
        assert result is not None and (result.files_before, result.rows_after) == (1, 9)
        [compacted] = partition_dir(tmp_path, 1, DAY).glob("*.parquet")
        assert codec(compacted) == "ZSTD" and sorted(read(tmp_path)) == before
        assert compact_partition(store, 1, DAY) is None  # a compacted single file is left alone


def test_rows_appended_during_the_merge_are_kept(tmp_path, monkeypatch):
    real_merge = compaction._merge

    def merge_while_a_batch_lands(sources, target):
        out = real_merge(sources, target)
        with PageviewStore(tmp_path) as other_writer:
            other_writer.append(1, rows(range(100, 102)))
        return out

    monkeypatch.setattr(compaction, "_merge", merge_while_a_batch_lands)
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 5)))
        store.append(1, rows(range(5, 10)))
        compact_partition(store, 1, DAY)
    assert len(partition_files(tmp_path, 1, T0, T0 + timedelta(days=1))) == 2  # merged + the late one
    assert len(read(tmp_path)) == 30 + 6


def test_without_atomic_exchange_the_result_is_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "exchange_dirs", lambda a, b: False)
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 4)))
        store.append(1, rows(range(2, 6)), now=datetime.now(UTC) + timedelta(seconds=1))
        compact_partition(store, 1, DAY)
    assert len(partition_files(tmp_path, 1, T0, T0 + timedelta(days=1))) == 1
    assert len(read(tmp_path)) == 18
    assert list((tmp_path / "_store" / "staging").glob("*/compact-*")) == []


def test_concurrent_reader_never_sees_duplicates_or_missing_rows(tmp_path):
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def reader() -> None:
        con = duckdb.connect()
        while not stop.is_set():
            files = partition_files(tmp_path, 1, T0, T0 + timedelta(days=1))
            if not files:
                if seen:
                    problems.append("the partition looked empty")
                continue
            sql = (
                "SELECT count(*), count(DISTINCT (user_id_unhashed, view_number)) "
                f"FROM read_parquet({files!r}, hive_partitioning = false)"
            )
            try:
                total, distinct = con.sql(sql).fetchall()[0]
            except duckdb.IOException:
                continue  # listed before a swap, opened after it: list again (what readers must do)
            except Exception as exc:  # noqa: BLE001 - any other failure is a finding
                problems.append(repr(exc))
                continue
            if total != distinct:
                problems.append(f"duplicates: {total} rows, {distinct} distinct")
            if seen and total < seen[-1]:
                problems.append(f"rows went missing: {seen[-1]} -> {total}")
            seen.append(total)

    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 50)))
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for round_ in range(6):
                for b in range(4):
                    first = 50 + (round_ * 4 + b) * 10
                    store.append(1, rows(range(first, first + 10)))
                assert compact_partition(store, 1, DAY) is not None
        finally:
            stop.set()
            thread.join()
    assert problems == []
    assert len(seen) >= 5, "the reader did not get to read during compaction"
    assert len(read(tmp_path)) == (50 + 6 * 4 * 10) * 3


@pytest.mark.parametrize("older_than, compacted", [(timedelta(hours=1), 0), (timedelta(seconds=0), 1)])
def test_compact_picks_settled_partitions_only(tmp_path, older_than, compacted):
    with PageviewStore(tmp_path) as store:
        store.append(1, rows(range(0, 2)))
        store.append(1, rows(range(2, 4)))
    results = compact(tmp_path, older_than=older_than, now=datetime.now(UTC) + timedelta(seconds=1))
    assert len(results) == compacted
    assert len(partition_files(tmp_path, 1, T0, T0 + timedelta(days=1))) == 2 - compacted

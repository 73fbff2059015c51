"""Merge a partition's small files into one, keeping one row per natural key (the latest ingested_at).

Readers list a partition directory and read the files listed. To make a listing see either the old set
or the new set, never both, the merged partition is built as a whole new directory beside the staging
area and swapped with the live one in a single atomic step (renameat2 RENAME_EXCHANGE on Linux). A
listing is one readdir of one directory inode, so it is consistent.

Appends that land during the merge are not lost: the swap happens under the store's commit lock, and
files that appeared after the merge began are moved into the new directory before the swap (they are
merged by the next run). A reader that listed the old files before the swap and opens them afterwards
finds them gone: it must list again and retry (the old files are removed right after the swap).

Where the exchange is unavailable the fallback swaps by two renames: a reader then may briefly see the
partition empty, never duplicated.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dataexport.warehouse.arrow_stream import stream_arrow
from dataexport.warehouse.embedded.durable import exchange_dirs, fsync_dir, try_lock_removable, unlock_and_remove
from dataexport.warehouse.embedded.layout import partition_dir
from dataexport.warehouse.embedded.store import COMPRESSION, PageviewStore
from dataexport.warehouse.schema import NATURAL_KEY, PAGEVIEW_SCHEMA, PARTITION_ROOT

BATCH_ROWS = 64_000


@dataclass(frozen=True)
class CompactionResult:
    project_id: int
    session_day: date
    files_before: int
    rows_before: int
    rows_after: int


def needs_compaction(files: list[Path], min_files: int = 2) -> bool:
    """Several files to merge, or one still in the fast format `append` writes (see schema.FRESH_FILE_OPTIONS)."""
    if len(files) >= min_files:
        return True
    return len(files) == 1 and _is_fresh(files[0])


def _is_fresh(path: Path) -> bool:
    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowInvalid):
        return False  # gone meanwhile (compacted, swept), or unreadable: not ours to rewrite now
    return metadata.num_row_groups > 0 and metadata.row_group(0).column(0).compression != COMPRESSION.upper()


def compact_partition(store: PageviewStore, project_id: int, session_day: date) -> CompactionResult | None:
    """Merge one partition's files into one (or rewrite a single fresh-format file compactly). None when there
    was nothing to do or another run holds it."""
    live = partition_dir(store.root, project_id, session_day)
    guard_path = store.meta / f"compact-{int(project_id)}-{session_day.isoformat()}.lock"
    guard = try_lock_removable(guard_path)
    if guard is None:
        return None  # another compaction of this partition is running
    try:
        with store.commit_lock():
            sources = sorted(live.glob("*.parquet")) if live.is_dir() else []
        if not needs_compaction(sources):
            return None
        new_dir = store.staging / f"compact-{project_id}-{session_day.isoformat()}"
        new_dir.mkdir()
        merged = new_dir / f"{int(time.time() * 1000)}-compacted-{os.urandom(4).hex()}.parquet"
        rows_before, rows_after = _merge(sources, merged)
        fsync_dir(new_dir)
        with store.commit_lock():
            source_names = {p.name for p in sources}
            for late in live.glob("*.parquet"):  # appended while merging: carried over as they are
                if late.name not in source_names:
                    os.replace(late, new_dir / late.name)
            fsync_dir(new_dir)
            _swap(new_dir, live)
        shutil.rmtree(new_dir)  # after the swap it holds the old files
        return CompactionResult(project_id, session_day, len(sources), rows_before, rows_after)
    finally:
        unlock_and_remove(guard_path, guard)  # one a partition would pile up in _store/


def _swap(new_dir: Path, live: Path) -> None:
    if not exchange_dirs(new_dir, live):
        aside = new_dir.with_name(new_dir.name + ".old")
        os.replace(live, aside)
        os.replace(new_dir, live)
        os.replace(aside, new_dir)
    fsync_dir(live.parent)
    fsync_dir(new_dir.parent)


def _merge(sources: list[Path], target: Path) -> tuple[int, int]:
    """Stream the de-duplicated union of `sources` into `target`, sorted for compression and locality."""
    con = duckdb.connect()
    try:
        files = [str(p) for p in sources]
        count_sql = "SELECT count(*) FROM read_parquet(?, hive_partitioning = false)"
        rows_before = con.sql(count_sql, params=[files]).fetchall()[0][0]
        key = ", ".join(NATURAL_KEY)
        # Latest ingest wins; the file name breaks ties so a rerun picks the same row.
        reader = stream_arrow(
            con,
            f"""
            SELECT * EXCLUDE (filename) FROM read_parquet(?, filename = true, hive_partitioning = false)
            QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY ingested_at DESC, filename DESC) = 1
            ORDER BY user_id, session_id, view_number
            """,
            [files],
            BATCH_ROWS,
        )
        rows_after = 0
        with open(target, "wb") as f:
            with pq.ParquetWriter(f, PAGEVIEW_SCHEMA, compression=COMPRESSION) as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(PAGEVIEW_SCHEMA))
                    rows_after += batch.num_rows
            f.flush()
            os.fsync(f.fileno())
        return rows_before, rows_after
    finally:
        con.close()


def compact(
    root: Path,
    *,
    older_than: timedelta = timedelta(hours=1),
    min_files: int = 2,
    now: datetime | None = None,
    project_id: int | None = None,
) -> list[CompactionResult]:
    """Compact every partition with at least `min_files` files (or one fresh-format file) whose newest file is older
    than `older_than`.

    Waiting until a partition has settled avoids rewriting today's partition after every batch; run it
    periodically in the background.
    """
    cutoff = (now or datetime.now(UTC)).timestamp() - older_than.total_seconds()
    results = []
    with PageviewStore(root) as store:
        _remove_idle_locks(store)
        for part in _partitions(Path(root), project_id):
            files = list(part.glob("*.parquet"))
            if not needs_compaction(files, min_files):
                continue
            with contextlib.suppress(FileNotFoundError):  # a file compacted away meanwhile
                if max(f.stat().st_mtime for f in files) > cutoff:
                    continue
            pid = int(part.parent.name.split("=", 1)[1])
            day = date.fromisoformat(part.name.split("=", 1)[1])
            result = compact_partition(store, pid, day)
            if result is not None:
                results.append(result)
    return results


def _remove_idle_locks(store: PageviewStore) -> None:
    """Partition locks that no compaction holds: left by a compaction that died, or by versions that kept them."""
    for path in store.meta.glob("compact-*.lock"):
        guard = try_lock_removable(path)
        if guard is not None:
            unlock_and_remove(path, guard)


def _partitions(root: Path, project_id: int | None) -> list[Path]:
    base = root / PARTITION_ROOT
    pattern = f"project_id={int(project_id)}" if project_id is not None else "project_id=*"
    return sorted(p for p in base.glob(f"{pattern}/session_day=*") if p.is_dir())

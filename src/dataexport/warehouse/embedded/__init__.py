"""The embedded backend: Parquet files under one local directory (store.py writes them, layout.py names them,
compaction.py and retention.py keep them), for one machine.

Several processes of one machine may share the directory (`serve --processes N`, bulk-load and demo workers):
commits serialise on a file lock there. Across machines use the DuckLake backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from dataexport.catalog.sql import Sql
from dataexport.warehouse.backend import MaintenanceReport, PreparedBatch, ReadLimits, RowGroup
from dataexport.warehouse.batches import StoredBatch
from dataexport.warehouse.duckdb_read import read_connection
from dataexport.warehouse.embedded import compaction, retention
from dataexport.warehouse.embedded.layout import partition_dir, partition_files_by_day
from dataexport.warehouse.embedded.store import PageviewStore, StagedBatch, stage
from dataexport.warehouse.relations import parquet_source
from dataexport.warehouse.schema import PARTITION_ROOT

BATCH_LOG_DAYS = 7  # days of batch-log segments kept (idempotency needs two; the rest helps investigations)


@dataclass(frozen=True)
class EmbeddedSpec:
    root: str

    def open(self) -> EmbeddedWarehouse:
        return EmbeddedWarehouse(Path(self.root))


@dataclass(frozen=True)
class EmbeddedStager:
    """Stages batches in the staging directory of the store that will commit them."""

    staging: str

    def prepare(
        self, project_id: int, table: pa.Table, *, batch_key: str | None = None, now: datetime | None = None
    ) -> StagedBatch:
        return stage(project_id, table, Path(self.staging), batch_key=batch_key, now=now)


class EmbeddedWarehouse:
    name = "embedded"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Opened now, not on the first write: opening finishes the batches a crashed process committed but had not
        # yet moved into place, which readers must see before any ingest comes.
        self._store: PageviewStore | None = PageviewStore(self.root)
        self._lock = threading.Lock()

    @property
    def spec(self) -> EmbeddedSpec:
        return EmbeddedSpec(str(self.root))

    @property
    def store(self) -> PageviewStore:
        with self._lock:
            if self._store is None:
                self._store = PageviewStore(self.root)
            return self._store

    def __enter__(self) -> EmbeddedWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- write side -----------------------------------------------------------------------------------------

    def append(
        self,
        project_id: int,
        rows: list[dict] | pa.Table,
        *,
        batch_key: str | None = None,
        now: datetime | None = None,
    ) -> StoredBatch:
        return self.store.append(project_id, rows, batch_key=batch_key, now=now)

    def restore(self, project_id: int, table: pa.Table, *, batch_key: str) -> StoredBatch:
        return self.store.restore(project_id, table, batch_key=batch_key)

    def stager(self) -> EmbeddedStager:
        return EmbeddedStager(str(self.store.staging))

    def commit(self, project_id: int, batch: PreparedBatch) -> StoredBatch:
        if not isinstance(batch, StagedBatch):
            raise TypeError(f"the embedded warehouse commits StagedBatch, not {type(batch).__name__}")
        return self.store.commit(project_id, batch)

    # -- read side ------------------------------------------------------------------------------------------

    @contextmanager
    def read(self, project_id: int, start: datetime, end: datetime, limits: ReadLimits) -> Iterator[FileSource]:
        # The file set is fixed here: a compaction that swaps a partition meanwhile makes the read fail with an
        # I/O error, which the export retries on the new files.
        files_by_day = dict(partition_files_by_day(self.root, project_id, start, end))
        conn = read_connection(limits)
        try:
            yield FileSource(conn, files_by_day)
        finally:
            conn.close()

    def days(self, project_id: int) -> list[date]:
        project_dir = self.root / PARTITION_ROOT / f"project_id={int(project_id)}"
        out = []
        for part in sorted(project_dir.glob("session_day=*")):
            try:
                day = date.fromisoformat(part.name.split("=", 1)[1])
            except ValueError:
                continue  # not a partition of ours
            if any(part.glob("*.parquet")):
                out.append(day)
        return out

    def scan(self, project_id: int, day: date) -> Iterator[pa.RecordBatch]:
        for path in sorted(partition_dir(self.root, project_id, day).glob("*.parquet")):
            yield from pq.ParquetFile(path).iter_batches()

    # -- upkeep ---------------------------------------------------------------------------------------------

    def delete_before(self, project_id: int, day: date) -> int:
        return retention.delete_before(self.store, project_id, day)

    def maintain(self, now: datetime, *, settled_after: timedelta) -> MaintenanceReport:
        report = MaintenanceReport()
        if (self.root / PARTITION_ROOT).is_dir():
            report.partitions_compacted = len(compaction.compact(self.root, older_than=settled_after, now=now))
        report.batch_records_pruned = self.store.prune_batch_logs(keep_days=BATCH_LOG_DAYS)
        return report


class FileSource:
    """A window's Parquet files by session day, read on one connection."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, files_by_day: dict[date, list[str]]) -> None:
        self.conn = conn
        self._files = files_by_day
        self.days = sorted(files_by_day)

    def relation(self, days: Sequence[date]) -> Sql:
        return parquet_source([f for day in days for f in self._files.get(day, ())])

    def row_groups(self, day: date) -> tuple[RowGroup, ...]:
        """Those of the day's largest file: a compacted partition is one file sorted by user_id (fresh files
        beside it are small, and unsorted)."""
        files = self._files.get(day)
        if not files:
            return ()
        largest = max(files, key=lambda f: Path(f).stat().st_size)
        return parquet_row_groups(largest)


def parquet_row_groups(path: str) -> tuple[RowGroup, ...]:
    """The user_id statistics of each row group of a Parquet file, from its footer."""
    metadata = pq.ParquetFile(path).metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if "user_id" not in names:
        return ()
    column = names.index("user_id")
    groups = []
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        stats = group.column(column).statistics
        known = stats is not None and stats.has_min_max
        groups.append(RowGroup(stats.min if known else None, stats.max if known else None, group.num_rows))
    return tuple(groups)

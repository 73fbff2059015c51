"""The warehouse interface: what the ingest path, bulk load, the demo, maintenance, the variables endpoints and the
export read path ask of the store of pageviews, whichever backend holds them.

Two backends implement it: `embedded` (Parquet files under a local directory, warehouse/embedded/) and
`ducklake` (a DuckLake lakehouse: catalog in PostgreSQL, Parquet on S3 or a directory, warehouse/ducklake.py).
`open_warehouse(settings)` picks one by `DATAEXPORT_WAREHOUSE`.

The read mechanics (export SQL, slicing, variables SQL) are shared: a backend only says what relation holds a
window's pageviews, on which DuckDB connection, and what it knows of each session day's row groups.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from dataexport.catalog.sql import Sql
from dataexport.warehouse.batches import StoredBatch

if TYPE_CHECKING:
    from dataexport.config import Settings


@dataclass(frozen=True)
class RowGroup:
    """The user_id range (None: unknown) and size of a piece of a session day's data: a Parquet row group, or a
    lake file; what slicing cuts a partition by."""

    min_user_id: int | None
    max_user_id: int | None
    rows: int


@dataclass(frozen=True)
class ReadLimits:
    """What one read may use of the machine: DuckDB's threads, memory limit (bytes) and spill directory."""

    threads: int
    memory_limit: int
    spill_dir: Path
    rows_per_slice: int | None = None  # None: derived from memory_limit and the query's width


class PreparedBatch(Protocol):
    """A validated batch made ready for its commit (the slow half of an append, by any process); opaque to
    callers but for these."""

    @property
    def batch_id(self) -> str: ...
    @property
    def rows(self) -> int: ...


@dataclass
class MaintenanceReport:
    partitions_compacted: int = 0
    partitions_deduplicated: int = 0  # partitions that held copies of a pageview, now one each
    batch_records_pruned: int = 0  # idempotency records past any use (log segments, ledger rows)
    snapshots_expired: int = 0
    files_deleted: int = 0


class PageviewSource(Protocol):
    """The stored pageviews of a project's sessions started in one window, as one consistent version: every
    relation it gives reads the same data, whatever commits in the meantime (so slices of one export agree)."""

    conn: duckdb.DuckDBPyConnection  # configured by the backend (limits, extensions); not to be closed
    days: list[date]  # the UTC session days of the window that hold data, in order

    def relation(self, days: Sequence[date]) -> Sql:
        """A relation (FROM-able SQL with bound values) with the stored pageview columns, holding at least every
        pageview of these session days; other projects and days may be in it, so callers filter by project_id and
        session_time as they would anyway."""
        ...

    def row_groups(self, day: date) -> tuple[RowGroup, ...]:
        """The user_id ranges the day's data is stored in, for slicing; () when unknown or unsorted."""
        ...


class Stager(Protocol):
    """Picklable: prepares batches in any process (bulk-load workers) for the warehouse that made it to commit."""

    def prepare(
        self, project_id: int, table: pa.Table, *, batch_key: str | None = None, now: datetime | None = None
    ) -> PreparedBatch: ...


class WarehouseSpec(Protocol):
    """Picklable recipe to open the same warehouse in another process (demo day workers)."""

    def open(self) -> Warehouse: ...


@runtime_checkable
class Warehouse(Protocol):
    """Thread-safe: one per process, shared by its request threads, worker and scheduler."""

    name: str  # "embedded" or "ducklake"

    @property
    def spec(self) -> WarehouseSpec: ...

    # -- write side -----------------------------------------------------------------------------------------

    def append(
        self,
        project_id: int,
        rows: list[dict] | pa.Table,
        *,
        batch_key: str | None = None,
        now: datetime | None = None,
    ) -> StoredBatch:
        """Store validated rows (a table with the stored columns, or dicts from `hits`) atomically, every session
        day or none, and idempotently: a batch whose id (the key, else a hash of its natural keys) was committed
        within IDEMPOTENCY_DAYS, by this or any other process or replica, is acknowledged as a duplicate; a key
        sent again with other rows raises IdempotencyKeyReused. Durable when it returns. project_id and
        ingested_at are set here."""
        ...

    def restore(self, project_id: int, table: pa.Table, *, batch_key: str) -> StoredBatch:
        """Store rows exactly as given, ingested_at included (moving data between warehouses), atomically and
        idempotently as `append` does. Every row's project_id must be `project_id`."""
        ...

    def stager(self) -> Stager:
        """What bulk-load workers prepare batches with, for `commit` here."""
        ...

    def commit(self, project_id: int, batch: PreparedBatch) -> StoredBatch:
        """The commit point of a batch from `stager().prepare`, with the idempotency of `append`. Whatever happens
        short of the commit point, the prepared batch leaves nothing behind."""
        ...

    # -- read side ------------------------------------------------------------------------------------------

    def read(
        self, project_id: int, start: datetime, end: datetime, limits: ReadLimits
    ) -> AbstractContextManager[PageviewSource]:
        """The pageviews of the project's sessions started in [start, end), pinned to one version for the block."""
        ...

    def days(self, project_id: int) -> list[date]:
        """Every UTC session day that holds the project's data, in order."""
        ...

    def scan(self, project_id: int, day: date) -> Iterator[pa.RecordBatch]:
        """Every stored row of one session day, as stored (migration between backends, tests)."""
        ...

    # -- upkeep ---------------------------------------------------------------------------------------------

    def delete_before(self, project_id: int, day: date) -> int:
        """Drop the project's session days before `day` (retention); how many days went."""
        ...

    def maintain(self, now: datetime, *, settled_after: timedelta) -> MaintenanceReport:
        """Compaction of settled partitions (one copy per natural key, sorted by user_id), pruning of idempotency
        records past any use, and the backend's own upkeep. Safe to run from several schedulers at once."""
        ...

    def close(self) -> None: ...


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse `settings` name (DATAEXPORT_WAREHOUSE: embedded, the default, or ducklake)."""
    if settings.warehouse == "ducklake":
        from dataexport.warehouse.ducklake import DuckLakeWarehouse

        return DuckLakeWarehouse.from_settings(settings)
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    return EmbeddedWarehouse(settings.resolved_warehouse_dir)

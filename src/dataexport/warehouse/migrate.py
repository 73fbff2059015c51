"""Moving a project's pageviews from one warehouse to another (`dataexport warehouse migrate`): typically from the
embedded directory of a single machine to the DuckLake lakehouse of a scaled-out deployment.

Rows move as stored (ingested_at included, so compaction's "latest copy wins" keeps its meaning), a bounded
chunk at a time (memory stays flat whatever a day holds). Each chunk is committed under a key made of its day and
content, so a migration run again after an interruption stores only what is missing; a chunking that differs
between runs (the source was compacted meanwhile) can only repeat rows, which the target's compaction collapses
to one per natural key, never lose any.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa

from dataexport.warehouse.backend import Warehouse
from dataexport.warehouse.batches import content_fingerprint
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

ROWS_PER_CHUNK = 100_000


@dataclass
class DayMigrated:
    day: date
    rows: int  # read from the source
    stored: int  # newly stored in the target (rows of chunks it had already are not counted)


@dataclass
class MigrationSummary:
    project_id: int
    days: list[DayMigrated] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.days)

    @property
    def stored(self) -> int:
        return sum(d.stored for d in self.days)


def migrate_project(
    source: Warehouse,
    target: Warehouse,
    project_id: int,
    *,
    rows_per_chunk: int = ROWS_PER_CHUNK,
    on_day: Callable[[DayMigrated], None] | None = None,
) -> MigrationSummary:
    """Copy every stored row of the project from `source` to `target`, day by day; safe to run again."""
    if rows_per_chunk < 1:
        raise ValueError("rows_per_chunk must be positive")
    summary = MigrationSummary(project_id)
    for day in source.days(project_id):
        done = DayMigrated(day, 0, 0)
        pending: list[pa.RecordBatch] = []
        held = 0
        for batch in source.scan(project_id, day):
            pending.append(batch)
            held += batch.num_rows
            if held >= rows_per_chunk:
                _store_chunk(target, project_id, day, pending, done)
                pending, held = [], 0
        if pending:
            _store_chunk(target, project_id, day, pending, done)
        summary.days.append(done)
        if on_day is not None:
            on_day(done)
    return summary


def _store_chunk(
    target: Warehouse, project_id: int, day: date, batches: list[pa.RecordBatch], done: DayMigrated
) -> None:
    # In the stored schema before hashing: the chunk's key must not depend on how the source's files spell it.
    table = pa.Table.from_batches(batches).select(PAGEVIEW_SCHEMA.names).cast(PAGEVIEW_SCHEMA)
    stored = target.restore(project_id, table, batch_key=f"migrate:{day.isoformat()}:{content_fingerprint(table)}")
    done.rows += table.num_rows
    if not stored.duplicate:
        done.stored += stored.rows

"""What a stored batch is, whatever the backend: its rows as stored, its id, its content fingerprint, the session
days it touches, and the rule that tells a retry from a key reused for other rows.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataexport.errors import DataExportError, FieldError
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

MS_PER_DAY = 86_400_000
# A batch retried within this many UTC days of its commit (today's and yesterday's) is recognised as a retry.
IDEMPOTENCY_DAYS = 2
_PROJECT = PAGEVIEW_SCHEMA.get_field_index("project_id")
_INGESTED = PAGEVIEW_SCHEMA.get_field_index("ingested_at")
_UNFINGERPRINTED = ("project_id", "ingested_at")  # set by the store, not sent: a retry's ingested_at differs


@dataclass(frozen=True)
class StoredBatch:
    batch_id: str
    rows: int
    partitions: int = 0  # session days written
    duplicate: bool = False  # the batch had been stored before: acknowledged, nothing written


class IdempotencyKeyReused(DataExportError):
    """The batch's key was committed before with other rows: a client bug, or a key generator that repeats."""

    status = 422
    error_code = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used for a different batch; nothing was stored.",
            [
                FieldError(
                    "Idempotency-Key",
                    "was already used with other hits: send new hits under a new key "
                    "(a retry must resend the same hits)",
                )
            ],
        )


def as_stored_table(project_id: int, rows: list[dict] | pa.Table, now: datetime | None) -> pa.Table:
    """Validated rows (dicts from `hits`, or a table with the schema's columns) as stored: project_id and
    ingested_at set, the other columns taken as given."""
    if isinstance(rows, pa.Table):
        table = rows.select(PAGEVIEW_SCHEMA.names) if rows.schema.names != PAGEVIEW_SCHEMA.names else rows
        if not table.schema.equals(PAGEVIEW_SCHEMA):  # a cast of every column even when none changes type
            table = table.cast(PAGEVIEW_SCHEMA)
    else:
        table = pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA)
    n = table.num_rows
    ingested_ms = int((now.timestamp() if now else time.time()) * 1000)
    table = table.set_column(_PROJECT, PAGEVIEW_SCHEMA.field(_PROJECT), pa.array(np.full(n, project_id, np.int32)))
    ingested = pa.array(np.full(n, ingested_ms, np.int64)).cast(PAGEVIEW_SCHEMA.field(_INGESTED).type)
    return table.set_column(_INGESTED, PAGEVIEW_SCHEMA.field(_INGESTED), ingested)


def stored_as_given(project_id: int, table: pa.Table) -> pa.Table:
    """A table of stored rows (another warehouse's, being moved) checked to belong to `project_id`, with the stored
    columns in order. Raises ValueError otherwise."""
    table = table.select(PAGEVIEW_SCHEMA.names).cast(PAGEVIEW_SCHEMA)
    projects = pc.unique(table.column("project_id")).to_pylist()
    if any(p != project_id for p in projects):
        raise ValueError(f"rows of projects {sorted(projects)} cannot be restored into project {project_id}")
    return table


def is_retry(committed: str | None, fingerprint: str) -> bool:
    """Whether a batch whose id was `committed` (its fingerprint, or None: not committed) is a retry of it: the
    same key with the same rows, or an unkeyed batch (its id is its rows). Raises when a key comes back with other
    rows. A line without a fingerprint (written before they were kept) cannot tell: taken as a retry, as then."""
    if committed is None:
        return False
    if fingerprint and committed and committed != fingerprint:
        raise IdempotencyKeyReused()
    return True


def content_fingerprint(table: pa.Table) -> str:
    """A digest of a batch's rows as stored (every column but project_id and ingested_at): equal for the same
    rows, whatever request shape brought them (JSON array, {"hits": [...]}, NDJSON, key order, spacing).

    The Arrow IPC bytes of the columns, hashed: about 0.4 µs a pageview (a 1,000-hit batch of demo traffic), a
    twentieth of decoding and validating it. Every validation path builds the same buffers for the same hits (null
    slots zeroed by Arrow's builders: tests/unit/test_hits_columnar.py checks it), and chunks are combined first so
    that chunking cannot change the bytes.
    """
    table = table.drop_columns(list(_UNFINGERPRINTED))
    if any(column.num_chunks > 1 for column in table.columns):
        table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()[:32]


def batch_id_of(project_id: int, table: pa.Table, batch_key: str | None) -> str:
    """The caller's key if any, else a hash of the batch's natural keys: a retried batch hashes the same."""
    h = hashlib.sha256(f"{int(project_id)}\x1e".encode())
    if batch_key is not None:
        h.update(b"key\x1e" + batch_key.encode())
    else:
        users = table.column("user_id_unhashed").to_pylist()
        sessions = table.column("session_number").to_pylist()
        views = table.column("view_number").to_pylist()
        h.update("\x1e".join(f"{u}\x1f{s}\x1f{v}" for u, s, v in zip(users, sessions, views, strict=True)).encode())
    return h.hexdigest()[:32]


def split_by_session_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """The rows of each UTC session day: a session lives in the partition of its first pageview."""
    days = table.column("session_time").cast(pa.int64()).to_numpy() // MS_PER_DAY
    unique = np.unique(days)
    if len(unique) == 1:
        return [(_day(unique[0]), table)]
    return [(_day(d), table.take(np.nonzero(days == d)[0])) for d in unique]


def _day(days_since_epoch: np.int64) -> date:
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(days_since_epoch))

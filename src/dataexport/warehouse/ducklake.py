"""The DuckLake backend: pageviews in a DuckLake lakehouse, its catalog in PostgreSQL and its Parquet files on S3
or in a directory, shared by every process and machine that opens it with the same settings.

One DuckDB database per warehouse (loading the extensions and attaching the lake is slow: done once), one
cursor of it per operation, so threads never share a DuckDB connection. An ingest commit adds Parquet files
written by pyarrow (lake_files.py) in one snapshot. DuckLake has no unique keys, so idempotency rests on a ledger
of batches in a PostgreSQL table beside the catalog, tied to the snapshots by a token (lake_ledger.py), and on
PostgreSQL advisory locks (taken on psycopg connections to the catalog database, released by PostgreSQL if the
process dies):
- the batch lock, on (project, batch id), around the ledger lookup and the commit: two replicas committing the
  same batch at once store it once;
- the write lock, shared by ingest commits (for their whole transaction) and merges, exclusive for DELETEs
  (retention, dedupe): a DuckLake DELETE fails to commit when an insert into its table committed meanwhile, and
  an insert fails to commit when a DELETE committed after its transaction began;
- the maintenance lock, tried: one scheduler of many does the upkeep;
- the bootstrap lock, around the attach and the schema's creation at open.
See docs/warehouse-interface.md, section 3.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import duckdb
import numpy as np
import psycopg
import pyarrow as pa

from dataexport.catalog.sql import Sql, quote_ident, sql_string
from dataexport.errors import DataExportError
from dataexport.warehouse.backend import MaintenanceReport, PreparedBatch, ReadLimits, RowGroup
from dataexport.warehouse.batches import (
    IDEMPOTENCY_DAYS,
    MS_PER_DAY,
    IdempotencyKeyReused,
    StoredBatch,
    as_stored_table,
    batch_id_of,
    content_fingerprint,
    is_retry,
    split_by_session_day,
    stored_as_given,
)
from dataexport.warehouse.duckdb_extensions import LAKE_EXTENSIONS, connect
from dataexport.warehouse.duckdb_read import STREAMING_BUFFER
from dataexport.warehouse.group_commit import GroupCommitter
from dataexport.warehouse.lake_files import LocalTableFiles, S3TableFiles, encode, partition_file
from dataexport.warehouse.lake_ledger import LakeLedger, commit_info
from dataexport.warehouse.relations import empty_source
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

if TYPE_CHECKING:
    from dataexport.config import Settings

ALIAS = "lake"  # the lake's name in our DuckDB database
PAGEVIEWS = f"{ALIAS}.main.pageviews"
UPKEEP = f"{ALIAS}.main.upkeep"
NATURAL_KEY = "user_id_unhashed, session_number, view_number"
# Snapshots, and the files only they still use, are kept this long: longer than any export pinned to one lasts.
SNAPSHOT_RETENTION = timedelta(days=1)
# Options of the pageviews table, each (the value set, as ducklake_options() shows it). Inlining off: an inlined
# commit of an ingest batch is far slower than writing its Parquet file (measured: docs/warehouse-interface.md);
# files are sorted by user_id when merged, not on every insert; the target size bounds a merged file.
PAGEVIEW_OPTIONS: dict[str, tuple[object, str]] = {
    "data_inlining_row_limit": (0, "0"),
    "sort_on_insert": (False, "false"),
    "target_file_size": ("64MB", "64000000"),
}
ROW_BATCH = 64 * 1024  # rows per Arrow batch of a scan
# DuckDB memory the lake's database has when nothing else claims some: catalog queries and ingest commits (which
# only read their new files' footers). Reads and merges each add their own claim, so that a worker's reads get their
# limit and no more (a base of the extraction's limit let every read use twice its own).
CATALOG_MEMORY = 64_000_000
# Memory a merge claims: it holds a row group of the merged file, which for wide rows of
# nested lists is more than an extraction's limit (DATAEXPORT_DUCKDB_MEMORY_LIMIT) by default. Measured on demo
# traffic: the need does not grow with the partition, as the merged file is written one row group at a time.
MERGE_MEMORY = 1_000_000_000
# Rows one lake commit may hold, summed over the callers' batches it groups (see group_commit.py): large enough
# that commits stay few under load, small enough that a group's Arrow tables and files stay a few tens of MB.
MAX_GROUP_ROWS = 100_000
# A reservation this old has lost its writer (a commit holds its locks for seconds at most): maintenance resolves it.
STALE_RESERVATION = timedelta(minutes=10)
# Seconds the committer waits for more batches after a commit of several (group_commit.py): some latency under
# load, for commits that each hold several times more rows. Shorter lingers caught few of the requests still
# being decoded on a busy machine.
COMMIT_LINGER = 0.050
LOCK_TIMEOUT_MS = 60_000  # no advisory lock is held for long: a wait this long means a stuck peer
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CONNINFO_KEYWORD = re.compile(r"[a-z_]+")


class LakeSettingsError(ValueError):
    """The DATAEXPORT_LAKE_* (or S3) settings do not describe a lake."""


class LakeUnavailable(DataExportError):
    """The lake's catalog or data path cannot be reached; the message names the setting to check."""

    status = 503
    error_code = "WAREHOUSE_UNAVAILABLE"
    retryable = True


# -- settings ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Access:
    """What DuckDB's S3 secret for the data path holds."""

    bucket: str
    key_id: str
    secret: str
    region: str
    endpoint: str | None  # host:port; None: AWS
    use_ssl: bool
    endpoint_url: str | None  # the same endpoint as a URL, for boto3 (lake_files.py)


@dataclass(frozen=True)
class DuckLakeSpec:
    """Picklable recipe of a lake: what every process opens it with."""

    catalog: str  # libpq connection string of the catalog database
    catalog_setting: str  # the setting it came from, for error messages
    schema: str  # PostgreSQL schema of the catalog's tables
    data_path: str  # s3://bucket/prefix/ or an absolute directory, ending with "/"
    s3: S3Access | None
    spill_dir: str  # DuckDB's temp_directory
    memory_limit: int  # bytes of DuckDB memory for catalog work; reads and merges each add their own claim

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckLakeSpec:
        url, setting = _catalog_url(settings)
        schema = settings.lake_schema
        if not _IDENTIFIER.fullmatch(schema):
            raise LakeSettingsError(
                f"DATAEXPORT_LAKE_SCHEMA must be a lower-case SQL identifier (letters, digits, _), not {schema!r}"
            )
        data_path, s3 = _data_path(settings)
        return cls(
            catalog=libpq_conninfo(url, setting),
            catalog_setting=setting,
            schema=schema,
            data_path=data_path,
            s3=s3,
            spill_dir=str((settings.data_dir / "work" / "duckdb-spill-lake").resolve()),
            memory_limit=CATALOG_MEMORY,
        )

    def open(self) -> DuckLakeWarehouse:
        return DuckLakeWarehouse(self)


def _catalog_url(settings: Settings) -> tuple[str, str]:
    if settings.lake_catalog_url:
        return settings.lake_catalog_url, "DATAEXPORT_LAKE_CATALOG_URL"
    if settings.database_url and urlsplit(settings.database_url).scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return settings.database_url, "DATAEXPORT_DATABASE_URL"
    raise LakeSettingsError(
        "The DuckLake warehouse keeps its catalog in PostgreSQL: set DATAEXPORT_LAKE_CATALOG_URL "
        "(postgresql://user@host:port/db), or make DATAEXPORT_DATABASE_URL a PostgreSQL URL"
    )


def libpq_conninfo(url: str, setting: str = "DATAEXPORT_LAKE_CATALOG_URL") -> str:
    """The libpq `keyword='value' ...` string of a postgresql:// URL (SQLAlchemy's postgresql+driver:// too):
    each part parsed and percent-decoded, each value quoted, so no part of the URL can add keywords."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LakeSettingsError(f"{setting} is not a valid URL: {exc}") from None
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise LakeSettingsError(f"{setting} must be a postgresql:// URL, not {parts.scheme or 'one without scheme'}://")
    if parts.fragment:
        raise LakeSettingsError(f"{setting} must not have a #fragment")
    keywords: dict[str, str] = {}
    if parts.hostname:
        keywords["host"] = unquote(parts.hostname)  # a percent-encoded path is a Unix socket directory
    if port is not None:
        keywords["port"] = str(port)
    if parts.username:
        keywords["user"] = unquote(parts.username)
    if parts.password is not None:
        keywords["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        keywords["dbname"] = unquote(parts.path.lstrip("/"))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not _CONNINFO_KEYWORD.fullmatch(key):
            raise LakeSettingsError(f"{setting}: {key!r} is not a libpq connection parameter")
        keywords[key] = value
    return " ".join(f"{key}={_libpq_quote(value)}" for key, value in keywords.items())


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _data_path(settings: Settings) -> tuple[str, S3Access | None]:
    path = settings.lake_data_path or str(settings.data_dir / "lake")
    if "://" not in path:
        return str(Path(path).resolve()) + "/", None
    parts = urlsplit(path)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise LakeSettingsError(f"DATAEXPORT_LAKE_DATA_PATH must be s3://bucket/prefix/ or a directory, not {path!r}")
    if not (settings.s3_access_key_id and settings.s3_secret_access_key):
        raise LakeSettingsError("A lake on s3:// needs DATAEXPORT_S3_ACCESS_KEY_ID and DATAEXPORT_S3_SECRET_ACCESS_KEY")
    endpoint, use_ssl = _s3_endpoint(settings.s3_endpoint_url)
    access = S3Access(
        bucket=parts.netloc,
        key_id=settings.s3_access_key_id,
        secret=settings.s3_secret_access_key,
        region=settings.s3_region,
        endpoint=endpoint,
        use_ssl=use_ssl,
        endpoint_url=settings.s3_endpoint_url or None,
    )
    return path.rstrip("/") + "/", access


def _s3_endpoint(url: str | None) -> tuple[str | None, bool]:
    """DuckDB's ENDPOINT (host:port) and USE_SSL for an endpoint URL; (None, True) for AWS."""
    if not url:
        return None, True
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise LakeSettingsError(f"DATAEXPORT_S3_ENDPOINT_URL must be http(s)://host[:port], not {url!r}")
    return parts.netloc.rsplit("@", 1)[-1], parts.scheme == "https"


# -- prepared batches -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LakeBatch:
    """A batch made ready for its commit: its rows as stored, as an Arrow table (which pickles)."""

    batch_id: str
    rows: int
    fingerprint: str  # of a keyed batch's rows; "" for a batch identified by its rows
    table: pa.Table


@dataclass(frozen=True)
class DuckLakeStager:
    """Validation and hashing only: the commit writes the files, inside its transaction, so that a batch that is
    never committed leaves nothing behind."""

    def prepare(
        self, project_id: int, table: pa.Table, *, batch_key: str | None = None, now: datetime | None = None
    ) -> LakeBatch:
        stored = as_stored_table(project_id, table, now)
        if stored.num_rows == 0:
            return LakeBatch("", 0, "", stored)
        fingerprint = content_fingerprint(stored) if batch_key is not None else ""
        return LakeBatch(batch_id_of(project_id, stored, batch_key), stored.num_rows, fingerprint, stored)


def _partitions(tables: Sequence[tuple[int, pa.Table]]) -> list[tuple[int, date, pa.Table]]:
    """(project, session day, rows) of each partition the tables' rows (with their session_day) fall in."""
    by_project: dict[int, list[pa.Table]] = {}
    for project_id, table in tables:
        by_project.setdefault(project_id, []).append(table)
    return [
        (project_id, day, rows)
        for project_id, parts in by_project.items()
        for day, rows in split_by_session_day(pa.concat_tables(parts) if len(parts) > 1 else parts[0])
    ]


def _with_session_day(table: pa.Table) -> tuple[pa.Table, int]:
    """The table with its UTC session day as a column (the partition key), and how many days it holds. Computed
    here rather than in SQL, where a cast of a TIMESTAMPTZ to DATE follows the connection's time zone."""
    days = table.column("session_time").cast(pa.int64()).to_numpy() // MS_PER_DAY
    column = pa.array(days.astype(np.int32)).cast(pa.date32())
    return table.append_column("session_day", column), len(np.unique(days))


# -- the warehouse ----------------------------------------------------------------------------------------------


class DuckLakeWarehouse:
    name = "ducklake"

    def __init__(self, spec: DuckLakeSpec) -> None:
        self._spec = spec
        self._meta = f"{quote_ident('__ducklake_metadata_' + ALIAS)}.{quote_ident(spec.schema)}"
        self._pg = _PgPool(spec)
        self._ledger = LakeLedger(spec.schema)
        self._cursor_lock = threading.Lock()
        self._db = self._open_database()
        self._committer: GroupCommitter[tuple[int, LakeBatch], StoredBatch] = GroupCommitter(
            self._commit_group,
            max_group_size=MAX_GROUP_ROWS,
            size_of=lambda item: item[1].rows,
            linger=COMMIT_LINGER,
            name="lake-commit",
        )
        try:
            self._limits = _SharedLimits(self._cursor, spec.memory_limit)
            with self._pg.connection() as pg, _advisory_lock(pg, self._lock_key("bootstrap")):
                self._attach()
                self._bootstrap()
                self._ledger.create(pg)
            self._table_id, self._user_id_column, table_path = self._pageviews_ids()
            self._files = self._table_files(table_path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckLakeWarehouse:
        return cls(DuckLakeSpec.from_settings(settings))

    @property
    def spec(self) -> DuckLakeSpec:
        return self._spec

    def __enter__(self) -> DuckLakeWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        committer = getattr(self, "_committer", None)
        if committer is not None:
            committer.close()  # what was submitted is committed first
        db = getattr(self, "_db", None)
        if db is not None:
            with self._cursor_lock:
                db.close()
        spill = getattr(self, "_spill", None)
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)
        self._pg.close()

    # -- opening ----------------------------------------------------------------------------------------------

    def _open_database(self) -> duckdb.DuckDBPyConnection:
        # A directory of this opening's own: DuckDB names its temp files alike in every database, and removes the
        # directory it was given when it closes, so processes (serve --processes N, a worker beside) must not share.
        self._spill = Path(self._spec.spill_dir) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._spill.mkdir(parents=True, exist_ok=True)
        config = {"memory_limit": f"{self._spec.memory_limit}B", "temp_directory": str(self._spill)}
        return connect(config=config, extensions=LAKE_EXTENSIONS)

    def _attach(self) -> None:
        spec = self._spec
        if spec.s3 is not None:
            self._db.execute(_s3_secret_sql(spec.s3))
        else:
            try:
                Path(spec.data_path).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LakeUnavailable(
                    f"The lake's data path (DATAEXPORT_LAKE_DATA_PATH) cannot be made: {exc}"
                ) from exc
        attach = (
            f"ATTACH {sql_string('ducklake:postgres:' + spec.catalog)} AS {ALIAS} "
            f"(DATA_PATH {sql_string(spec.data_path)}, METADATA_SCHEMA {sql_string(spec.schema)})"
        )
        try:
            self._db.execute(attach)
        except duckdb.Error as exc:
            raise LakeUnavailable(
                f"The DuckLake catalog ({spec.catalog_setting}, schema DATAEXPORT_LAKE_SCHEMA={spec.schema}) "
                f"cannot be attached: {_redacted(str(exc), spec.catalog)}"
            ) from exc
        if spec.s3 is not None:
            self._check_s3()

    def _check_s3(self) -> None:
        """List the data path once: a wrong endpoint, bucket or key fails here, not at the first append."""
        try:
            self._db.execute("SELECT count(*) FROM glob(?)", [self._spec.data_path + "*"]).fetchall()
        except duckdb.Error as exc:
            raise LakeUnavailable(
                f"The lake's data path {self._spec.data_path} (DATAEXPORT_LAKE_DATA_PATH, with "
                f"DATAEXPORT_S3_ENDPOINT_URL and the DATAEXPORT_S3_* credentials) cannot be listed: {exc}"
            ) from exc

    def _bootstrap(self) -> None:
        """Create the tables if missing, and bring the pageviews table's options to ours. Under the bootstrap lock,
        so that two processes opening a new lake do not both create it; safe to repeat."""
        with self._cursor() as cur:
            tables = {name for (name,) in cur.execute("SHOW TABLES FROM " + ALIAS).fetchall()}
            if "pageviews" not in tables:
                # One transaction: partitioning and sort order come with the table or not at all.
                cur.begin()
                cur.register("pageview_columns", PAGEVIEW_SCHEMA.empty_table())
                cur.execute(
                    f"CREATE TABLE {PAGEVIEWS} AS SELECT *, CAST(NULL AS DATE) AS session_day "
                    "FROM pageview_columns LIMIT 0"
                )
                cur.execute(f"ALTER TABLE {PAGEVIEWS} SET PARTITIONED BY (project_id, session_day)")
                cur.execute(f"ALTER TABLE {PAGEVIEWS} SET SORTED BY (user_id, session_id, view_number)")
                cur.commit()
            if "upkeep" not in tables:
                # One row per kind of upkeep that remembers where it got to (the dedupe pass's snapshot).
                cur.begin()
                cur.execute(f"CREATE TABLE {UPKEEP} (name VARCHAR, snapshot_id BIGINT)")
                cur.commit()
            # Table options cannot be set in the transaction that creates the table: set (again) any that differ.
            current = dict(
                cur.execute(
                    "SELECT option_name, value FROM ducklake_options(?) WHERE scope = 'TABLE' AND scope_entry = ?",
                    [ALIAS, "main.pageviews"],
                ).fetchall()
            )
            for option, (value, shown) in PAGEVIEW_OPTIONS.items():
                if current.get(option) != shown:
                    cur.execute(f"CALL {ALIAS}.set_option(?, ?, table_name => 'pageviews')", [option, value])

    def _pageviews_ids(self) -> tuple[int, int, str]:
        """The catalog ids of the pageviews table and of its user_id column, for the row-group query, and where the
        table's files go."""
        with self._cursor() as cur:
            found = cur.execute(
                f"SELECT t.table_id, c.column_id, s.path, s.path_is_relative, t.path, t.path_is_relative "
                f"FROM {self._meta}.ducklake_table t "
                f"JOIN {self._meta}.ducklake_schema s ON s.schema_id = t.schema_id "
                f"JOIN {self._meta}.ducklake_column c ON c.table_id = t.table_id "
                "WHERE s.schema_name = 'main' AND t.table_name = 'pageviews' AND c.column_name = 'user_id' "
                "AND c.parent_column IS NULL "
                "AND t.end_snapshot IS NULL AND s.end_snapshot IS NULL AND c.end_snapshot IS NULL"
            ).fetchone()
        if found is None:
            raise LakeUnavailable(f"The lake's catalog (schema {self._spec.schema}) has no pageviews.user_id column")
        table_id, column_id, schema_path, schema_relative, table_path, table_relative = found
        schema_dir = self._spec.data_path + schema_path if schema_relative else schema_path
        return int(table_id), int(column_id), schema_dir + table_path if table_relative else table_path

    def _table_files(self, table_path: str) -> LocalTableFiles | S3TableFiles:
        """Where ingest commits put the pageviews table's new files (lake_files.py)."""
        s3 = self._spec.s3
        if s3 is None:
            return LocalTableFiles(table_path)
        from dataexport.storage.s3 import S3Storage  # boto3 is heavy: only lakes on S3 load it

        bucket_url = f"s3://{s3.bucket}/"
        if not table_path.startswith(bucket_url):
            raise LakeUnavailable(f"The lake's pageviews table is at {table_path}, outside its bucket {bucket_url}")
        storage = S3Storage(
            s3.bucket,
            prefix=table_path.removeprefix(bucket_url).strip("/"),
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.key_id,
            secret_access_key=s3.secret,
        )
        return S3TableFiles(table_path, storage)

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of our database for one operation: DuckDB connections are not to be shared by threads."""
        with self._cursor_lock:
            cur = self._db.cursor()
        try:
            yield cur
        finally:
            cur.close()  # rolls back a transaction left open by an error

    def _lock_key(self, *parts: object) -> str:
        # Per catalog schema: two lakes in one PostgreSQL database do not wait on each other.
        return ":".join(["dataexport", "lake", self._spec.schema, *map(str, parts)])

    # -- write side -------------------------------------------------------------------------------------------

    def append(
        self,
        project_id: int,
        rows: list[dict] | pa.Table,
        *,
        batch_key: str | None = None,
        now: datetime | None = None,
    ) -> StoredBatch:
        return self.commit(project_id, self.stager().prepare(project_id, rows, batch_key=batch_key, now=now))

    def restore(self, project_id: int, table: pa.Table, *, batch_key: str) -> StoredBatch:
        rows = stored_as_given(project_id, table)
        if rows.num_rows == 0:
            return StoredBatch("", 0)
        batch = LakeBatch(batch_id_of(project_id, rows, batch_key), rows.num_rows, content_fingerprint(rows), rows)
        return self.commit(project_id, batch)

    def stager(self) -> DuckLakeStager:
        return DuckLakeStager()

    def commit(self, project_id: int, batch: PreparedBatch) -> StoredBatch:
        if not isinstance(batch, LakeBatch):
            raise TypeError(f"the DuckLake warehouse commits LakeBatch, not {type(batch).__name__}")
        if batch.rows == 0:
            return StoredBatch("", 0)
        projects = batch.table.column("project_id").unique().to_pylist()
        if projects != [project_id]:
            raise ValueError(f"the batch was prepared for project {projects}, not {project_id}")
        return self._committer.submit((project_id, batch))

    def _commit_group(self, group: Sequence[tuple[int, LakeBatch]]) -> list[StoredBatch | BaseException]:
        """The batches of several callers in one lake commit: one ledger lookup, one reservation of their ledger
        rows, one snapshot of their files. Each batch's outcome is its own (stored, duplicate, or a key reused
        with other rows); a failure of the commit itself fails them all."""
        # Sorted, so that two replicas committing overlapping groups take the batch locks in the same order.
        keys = sorted({self._lock_key("batch", project_id, batch.batch_id) for project_id, batch in group})
        today = _utc_today()
        with (
            self._pg.connection() as pg,  # no memory claim: DuckDB only reads the new files' footers
            pg.transaction(),
            self._pg.connection() as ledger,  # autocommit: a reservation is durable before the lake commit
            self._cursor() as cur,
        ):
            # Held until the PostgreSQL transaction ends, after the lake commit; taken in the array's order.
            pg.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(%s::text[]) k", [keys])
            # The shared write lock, for the whole transaction: an insert also fails to commit when a DELETE
            # committed after the insert's transaction began.
            pg.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", [self._lock_key("write")])
            # After the batch locks: the lookup sees every commit of these batch ids made before.
            known = self._ledger.committed(ledger, {(project_id, batch.batch_id) for project_id, batch in group}, today)
            outcomes: list[StoredBatch | BaseException] = []
            new: list[tuple[int, LakeBatch, pa.Table]] = []
            for project_id, batch in group:
                try:
                    if is_retry(known.get((project_id, batch.batch_id)), batch.fingerprint):
                        outcomes.append(StoredBatch(batch.batch_id, batch.rows, duplicate=True))
                        continue
                except IdempotencyKeyReused as exc:
                    outcomes.append(exc)
                    continue
                known[(project_id, batch.batch_id)] = batch.fingerprint  # the same batch twice in one group
                table, days = _with_session_day(batch.table)
                new.append((project_id, batch, table))
                outcomes.append(StoredBatch(batch.batch_id, batch.rows, partitions=days))
            if new:
                token = self._ledger.reserve(ledger, [(p, b.batch_id, b.fingerprint) for p, b, _ in new], today)
                written: list[str] = []
                try:
                    cur.begin()
                    self._write(cur, new, written)
                    self._stamp(cur, token)
                except BaseException:  # before the commit point: nothing of it is in the lake
                    self._delete_files(written)
                    with suppress(psycopg.Error):  # left pending, the next lookup resolves it
                        self._ledger.release(ledger, token)
                    raise
                cur.commit()  # the commit point; if it fails it may still have been made: the rows stay pending
                with suppress(psycopg.Error):  # the batches are stored either way; pending, they are resolved later
                    self._ledger.confirm(ledger, token)
        return outcomes

    def _write(
        self, cur: duckdb.DuckDBPyConnection, batches: list[tuple[int, LakeBatch, pa.Table]], written: list[str]
    ) -> None:
        """The batches' rows, a file per project and session day written now (each appended to `written`, for
        the caller to delete if the transaction fails before its commit) and added to the open transaction."""
        for project_id, day, rows in _partitions([(project_id, table) for project_id, _, table in batches]):
            location = self._files.put(partition_file(project_id, day), encode(rows))
            written.append(location)
            cur.execute(f"CALL ducklake_add_data_files({sql_string(ALIAS)}, 'pageviews', ?)", [location])

    def _delete_files(self, locations: list[str]) -> None:
        """Files of a transaction that failed before its commit; what cannot be deleted now, the orphaned-file
        cleanup deletes later (once a commit was tried, it may have been made: its files are never deleted here)."""
        for location in locations:
            with suppress(Exception):
                self._files.delete(location)

    @staticmethod
    def _stamp(cur: duckdb.DuckDBPyConnection, token: str) -> None:
        """Mark the snapshot with the reservation's token: how a pending ledger row is told committed or not."""
        info = sql_string(commit_info(token))
        cur.execute(f"CALL {ALIAS}.set_commit_message('dataexport', 'ingest', extra_info => {info})")

    # -- read side --------------------------------------------------------------------------------------------

    @contextmanager
    def read(self, project_id: int, start: datetime, end: datetime, limits: ReadLimits) -> Iterator[LakeSource]:
        with self._limits.claimed(limits.memory_limit, limits.threads), self._cursor() as cur:
            cur.execute("SET preserve_insertion_order = false")
            cur.execute(f"SET streaming_buffer_size = '{STREAMING_BUFFER}'")
            snapshot = _scalar(cur, "SELECT id FROM ducklake_current_snapshot(?)", [ALIAS])
            days: list[date] = []
            if end > start:
                first, last = start.astimezone(UTC).date(), (end.astimezone(UTC) - timedelta(microseconds=1)).date()
                days = [
                    day
                    for (day,) in cur.execute(
                        f"SELECT DISTINCT session_day FROM {PAGEVIEWS} AT (VERSION => ?) "
                        "WHERE project_id = ? AND session_day BETWEEN ? AND ? ORDER BY 1",
                        [snapshot, project_id, first, last],
                    ).fetchall()
                ]
            yield LakeSource(cur, snapshot, project_id, days, self._meta, self._table_id, self._user_id_column)

    def days(self, project_id: int) -> list[date]:
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT DISTINCT session_day FROM {PAGEVIEWS} WHERE project_id = ? ORDER BY 1", [project_id]
            ).fetchall()
        return [day for (day,) in rows]

    def scan(self, project_id: int, day: date) -> Iterator[pa.RecordBatch]:
        with self._cursor() as cur:
            reader = cur.execute(
                f"SELECT * EXCLUDE (session_day) FROM {PAGEVIEWS} WHERE project_id = ? AND session_day = ?",
                [project_id, day],
            ).to_arrow_reader(ROW_BATCH)
            for batch in reader:
                yield batch.cast(PAGEVIEW_SCHEMA)  # DuckDB's microsecond timestamps back to the stored milliseconds

    # -- upkeep -----------------------------------------------------------------------------------------------

    def delete_before(self, project_id: int, day: date) -> int:
        expired = f"SELECT count(DISTINCT session_day) FROM {PAGEVIEWS} WHERE project_id = ? AND session_day < ?"
        with self._cursor() as cur:
            if not _scalar(cur, expired, [project_id, day]):  # the usual case: no ingest waits on a DELETE's lock
                return 0
        with (
            self._pg.connection() as pg,
            _advisory_lock(pg, self._lock_key("write")),  # exclusive: no insert commits while the DELETE runs
            self._cursor() as cur,
        ):
            cur.begin()
            days = _scalar(cur, expired, [project_id, day])
            if days:  # whole partitions: their files end, no delete file is written
                cur.execute(f"DELETE FROM {PAGEVIEWS} WHERE project_id = ? AND session_day < ?", [project_id, day])
            cur.commit()
        return int(days)

    def maintain(self, now: datetime, *, settled_after: timedelta) -> MaintenanceReport:
        """Collapse copies of a pageview in settled partitions, merge small files (sorted by user_id), flush stray
        inlined rows, prune the ledger, expire old snapshots and delete the files nothing uses any more. Merging
        takes no partition filter in DuckLake (and a merge committing alongside inserts is safe), so
        `settled_after` only delays the dedupe pass, as it delays compaction in the embedded backend."""
        report = MaintenanceReport()
        with self._pg.connection() as pg:
            key = self._lock_key("maintenance")
            tried = pg.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key]).fetchone()
            mine = tried is not None and tried[0]
            if not mine:
                return report  # another scheduler is at it
            try:
                cutoff = now - SNAPSHOT_RETENTION
                report.partitions_deduplicated = self._dedupe(pg, now - settled_after)
                # Shared write lock: a merge commits alongside inserts, but would make a DELETE fail as they do.
                with (
                    _advisory_lock(pg, self._lock_key("write"), shared=True),
                    self._limits.claimed(MERGE_MEMORY),
                    self._cursor() as cur,
                ):
                    cur.execute("SET preserve_insertion_order = false")
                    merged = cur.execute("CALL ducklake_merge_adjacent_files(?, 'pageviews')", [ALIAS]).fetchall()
                    report.partitions_compacted = len(merged)  # a row per partition whose files were merged
                    cur.execute("CALL ducklake_flush_inlined_data(?, table_name => 'pageviews')", [ALIAS])
                report.batch_records_pruned = self._prune_ledger(pg, now)
                with self._cursor() as cur:
                    expired = cur.execute("CALL ducklake_expire_snapshots(?, older_than => ?)", [ALIAS, cutoff])
                    report.snapshots_expired = len(expired.fetchall())
                    old = cur.execute("CALL ducklake_cleanup_old_files(?, older_than => ?)", [ALIAS, cutoff])
                    report.files_deleted = len(old.fetchall())
                    # Files of writers that died before their commit; younger ones may be a commit under way.
                    orphans = cur.execute("CALL ducklake_delete_orphaned_files(?, older_than => ?)", [ALIAS, cutoff])
                    report.files_deleted += len(orphans.fetchall())
            finally:
                pg.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
        return report

    def _dedupe(self, pg: psycopg.Connection, settled_before: datetime) -> int:
        """Keep one copy (the latest ingested) of each pageview in the partitions that received files since the
        last pass and have received none since `settled_before`; how many partitions held copies. Copies come
        from a retry after the ledger's window or the same hits sent under another key: rare, so a partition is
        first counted (a scan of the key columns) and rewritten only when it holds some."""
        with self._cursor() as cur:
            current = _scalar(cur, "SELECT id FROM ducklake_current_snapshot(?)", [ALIAS])
            found = cur.execute(f"SELECT snapshot_id FROM {UPKEEP} WHERE name = 'dedupe'").fetchone()
            mark = -1 if found is None else int(found[0])
            changed = cur.execute(
                f"SELECT p0.partition_value, p1.partition_value, max(s.snapshot_time), min(df.begin_snapshot) "
                f"FROM {self._meta}.ducklake_data_file df "
                f"JOIN {self._meta}.ducklake_file_partition_value p0 "
                "ON p0.data_file_id = df.data_file_id AND p0.partition_key_index = 0 "
                f"JOIN {self._meta}.ducklake_file_partition_value p1 "
                "ON p1.data_file_id = df.data_file_id AND p1.partition_key_index = 1 "
                f"JOIN {self._meta}.ducklake_snapshot s ON s.snapshot_id = df.begin_snapshot "
                "WHERE df.table_id = ? AND df.end_snapshot IS NULL AND df.begin_snapshot > ? "
                "AND df.begin_snapshot <= ? GROUP BY 1, 2",
                [self._table_id, mark, current],
            ).fetchall()
        next_mark, deduplicated = current, 0
        for project, day, newest, first_new in changed:
            if newest > settled_before:  # still receiving: looked at again once it has settled
                next_mark = min(next_mark, int(first_new) - 1)
                continue
            deduplicated += self._dedupe_partition(pg, int(project), date.fromisoformat(day))
        if next_mark != mark:
            with self._cursor() as cur:  # only this pass writes the table, under the maintenance lock
                cur.begin()
                cur.execute(f"DELETE FROM {UPKEEP} WHERE name = 'dedupe'")
                cur.execute(f"INSERT INTO {UPKEEP} VALUES ('dedupe', ?)", [next_mark])
                cur.commit()
        return deduplicated

    def _dedupe_partition(self, pg: psycopg.Connection, project_id: int, day: date) -> int:
        where = "project_id = ? AND session_day = ?"
        with self._cursor() as cur:
            copies = _scalar(
                cur,
                f"SELECT count(*) - count(DISTINCT ({NATURAL_KEY})) FROM {PAGEVIEWS} WHERE {where}",
                [project_id, day],
            )
        if not copies:
            return 0
        with _advisory_lock(pg, self._lock_key("write")), self._cursor() as cur:  # a DELETE: exclusive
            cur.begin()
            cur.execute(
                f"DELETE FROM {PAGEVIEWS} WHERE {where} AND rowid IN (SELECT rowid FROM {PAGEVIEWS} WHERE {where} "
                f"QUALIFY row_number() OVER (PARTITION BY {NATURAL_KEY} ORDER BY ingested_at DESC, rowid DESC) > 1)",
                [project_id, day, project_id, day],
            )
            cur.commit()
        return 1

    def _prune_ledger(self, pg: psycopg.Connection, now: datetime) -> int:
        """Resolve the ledger rows left pending by writers long gone (before the snapshots that tell expire), then
        delete the rows no lookup reads any more (committed before the last IDEMPOTENCY_DAYS UTC days)."""
        today = now.astimezone(UTC).date()
        for project_id, batch_id in self._ledger.stale(pg, now - STALE_RESERVATION):
            with pg.transaction():
                key = self._lock_key("batch", project_id, batch_id)
                held = pg.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [key]).fetchone()
                if held and held[0]:  # else its writer is still at it
                    self._ledger.committed(pg, [(project_id, batch_id)], today)
        return self._ledger.prune(pg, today - timedelta(days=IDEMPOTENCY_DAYS - 1))


class LakeSource:
    """A window of the lake pinned to one snapshot: every relation reads that version, whatever commits since."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        snapshot: int,
        project_id: int,
        days: list[date],
        meta: str,
        table_id: int,
        user_id_column: int,
    ) -> None:
        self.conn = conn
        self.snapshot = snapshot
        self.days = days
        self._project_id = project_id
        self._meta = meta
        self._table_id = table_id
        self._user_id_column = user_id_column

    def relation(self, days: Sequence[date]) -> Sql:
        # The lake table itself, not its files: inlined rows and delete files are only right through it.
        if not days:
            return empty_source()
        placeholders = ", ".join("?" for _ in days)
        return Sql(
            f"(SELECT * EXCLUDE (session_day) FROM {PAGEVIEWS} AT (VERSION => ?) "
            f"WHERE project_id = ? AND session_day IN ({placeholders}))",
            [self.snapshot, self._project_id, *days],
        )

    def row_groups(self, day: date) -> tuple[RowGroup, ...]:
        """One per live data file of the day at the snapshot, from the catalog's user_id statistics (no data read),
        in user_id order. Merged files are sorted and disjoint; fresh ones overlap, and slicing then ignores them."""
        rows = self.conn.execute(
            f"SELECT st.min_value, st.max_value, df.record_count FROM {self._meta}.ducklake_data_file df "
            f"JOIN {self._meta}.ducklake_file_partition_value p0 "
            "ON p0.data_file_id = df.data_file_id AND p0.partition_key_index = 0 "
            f"JOIN {self._meta}.ducklake_file_partition_value p1 "
            "ON p1.data_file_id = df.data_file_id AND p1.partition_key_index = 1 "
            f"LEFT JOIN {self._meta}.ducklake_file_column_stats st "
            "ON st.data_file_id = df.data_file_id AND st.column_id = ? "
            "WHERE df.table_id = ? AND df.begin_snapshot <= ? AND (df.end_snapshot IS NULL OR df.end_snapshot > ?) "
            "AND p0.partition_value = ? AND p1.partition_value = ?",
            [
                self._user_id_column,
                self._table_id,
                self.snapshot,
                self.snapshot,
                str(self._project_id),
                day.isoformat(),
            ],
        ).fetchall()
        groups = [RowGroup(_int_or_none(low), _int_or_none(high), int(n)) for low, high, n in rows]
        return tuple(sorted(groups, key=lambda g: (g.min_user_id is None, g.min_user_id or 0)))


def _scalar(cur: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> Any:
    """The one value of a query that always answers one row (an aggregate, a setting, the current snapshot)."""
    row = cur.execute(sql, list(params)).fetchone()
    if row is None:
        raise LakeUnavailable(f"The lake answered no row to a query that always has one: {sql[:80]}")
    return row[0]


def _int_or_none(value: str | None) -> int | None:
    return None if value is None else int(value)


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _s3_secret_sql(s3: S3Access) -> str:
    options = [
        "TYPE s3",
        f"KEY_ID {sql_string(s3.key_id)}",
        f"SECRET {sql_string(s3.secret)}",
        f"REGION {sql_string(s3.region)}",
        "URL_STYLE 'path'",
        f"USE_SSL {'true' if s3.use_ssl else 'false'}",
        f"SCOPE {sql_string('s3://' + s3.bucket + '/')}",
    ]
    if s3.endpoint:
        options.append(f"ENDPOINT {sql_string(s3.endpoint)}")
    return f"CREATE SECRET dataexport_lake_s3 ({', '.join(options)})"


def _redacted(message: str, conninfo: str) -> str:
    """A DuckDB message with the catalog's password, if it quotes it, masked."""
    match = re.search(r"password='((?:[^'\\]|\\.)*)'", conninfo)
    if match and match.group(1):
        secret = match.group(1).replace("\\'", "'").replace("\\\\", "\\")
        message = message.replace(secret, "***")
    return message


# -- PostgreSQL side --------------------------------------------------------------------------------------------


class _PgPool:
    """psycopg connections to the catalog database, for the advisory locks, reused across operations."""

    def __init__(self, spec: DuckLakeSpec) -> None:
        self._spec = spec
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException as exc:
            # A connection that failed may hold a lock or be broken: closing it releases whatever it held.
            if isinstance(exc, psycopg.Error) or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.close()
            self._give_back(conn)
            if isinstance(exc, psycopg.OperationalError):  # the server went away, or a lock wait timed out
                raise LakeUnavailable(
                    f"The DuckLake catalog database ({self._spec.catalog_setting}) failed: {exc}"
                ) from exc
            raise
        self._give_back(conn)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self._spec.catalog, autocommit=True, connect_timeout=10, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}"
            )
        except psycopg.Error as exc:
            raise LakeUnavailable(
                f"The DuckLake catalog database ({self._spec.catalog_setting}) cannot be reached: {exc}"
            ) from exc

    def _give_back(self, conn: psycopg.Connection) -> None:
        with self._lock:
            if not conn.closed and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@contextmanager
def _advisory_lock(pg: psycopg.Connection, key: str, *, shared: bool = False) -> Iterator[None]:
    """A session-level advisory lock on `key` for the block, exclusive unless `shared` (released by PostgreSQL
    if we die)."""
    kind = "_shared" if shared else ""
    pg.execute(f"SELECT pg_advisory_lock{kind}(hashtextextended(%s, 0))", [key])
    try:
        yield
    finally:
        with suppress(psycopg.Error):  # a broken connection lost its locks anyway, and the pool drops it
            pg.execute(f"SELECT pg_advisory_unlock{kind}(hashtextextended(%s, 0))", [key])


# -- read limits on a shared database ---------------------------------------------------------------------------


class _SharedLimits:
    """DuckDB's threads, memory limit and spill directory are settings of the whole database, which every read and
    write of the process shares (no connection can have its own). So the database gets the sum of the memory claimed
    by the reads and merges under way on top of the writes' own, and the most threads any read asks for (DuckDB's
    default when none runs). The spill directory is the warehouse's own, set at open: reads share it."""

    def __init__(
        self, cursor: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]], base_memory: int
    ) -> None:
        self._cursor = cursor
        self._base_memory = base_memory
        with cursor() as cur:
            self._default_threads = int(_scalar(cur, "SELECT current_setting('threads')"))
        self._claims: list[tuple[int, int | None]] = []  # (bytes, threads or None)
        self._lock = threading.Lock()

    @contextmanager
    def claimed(self, memory: int, threads: int | None = None) -> Iterator[None]:
        claim = (int(memory), None if threads is None else max(1, int(threads)))
        with self._lock:
            self._claims.append(claim)
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._claims.remove(claim)
                with suppress(duckdb.Error):  # the work's own outcome matters more than restoring the settings
                    self._apply()

    def _apply(self) -> None:
        memory = self._base_memory + sum(claimed for claimed, _ in self._claims)
        asked = [threads for _, threads in self._claims if threads is not None]
        with self._cursor() as cur:
            cur.execute(f"SET GLOBAL memory_limit = '{memory}B'")
            cur.execute(f"SET GLOBAL threads = {max(asked, default=self._default_threads)}")

"""Where `pull` delivers: a directory, a DuckDB file, or a PostgreSQL database.

Each destination records a delivered run together with its rows, so a run is either wholly there and recorded,
or not there at all: DuckDB and PostgreSQL in one transaction (a kill -9 rolls it back), a directory by renaming
the run's finished folder into place before the state file names it (a folder the state file does not name is
replaced on the next pull).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import duckdb

from dataexport.catalog.sql import quote_ident, sql_string
from dataexport.pull.columns import RUN_ID_COLUMN, Column, Dialect, read_parts_sql, table_columns_sql
from dataexport.pull.deliveries import Delivery
from dataexport.warehouse.duckdb_extensions import OFFLINE_CONFIG, load_extension
from dataexport.warehouse.embedded.durable import fsync_dir

STATE_TABLE = "_dataexport_deliveries"
STATE_FILE = "_dataexport_deliveries.json"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

LoadProgress = Callable[[float], None]  # the share of the load done, 0..1


class DestinationError(Exception):
    """The destination cannot take the job's rows (another table shape, a bad name)."""


@dataclass(frozen=True)
class Parts:
    """A run's verified parts on local disk, and what to read them as."""

    paths: list[Path]
    format: str  # CSV or JSONL
    columns: list[Column]
    expected_rows: int | None  # the manifest's count, when the server offers one
    manifest: Path | None = None


class Destination(Protocol):
    dialect: Dialect
    label: str

    def delivered(self, project_id: int, job_id: int) -> set[int]: ...

    def deliver(self, delivery: Delivery, parts: Parts, on_progress: LoadProgress | None) -> int: ...

    def close(self) -> None: ...


def check_table_name(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise DestinationError(f"--table {name!r}: a letter or _, then letters, digits or _ (at most 63)")
    return name


class Kind(Enum):
    POSTGRES = "postgres"
    DUCKDB = "duckdb"
    DIRECTORY = "directory"


def kind_of(target: str) -> Kind:
    """`--to` names its kind: a postgres:// URL, a *.duckdb / *.ddb / *.db file, or else a directory."""
    if target.startswith(("postgresql://", "postgres://")):
        return Kind.POSTGRES
    if target.endswith((".duckdb", ".ddb", ".db")):
        return Kind.DUCKDB
    return Kind.DIRECTORY


def open_destination(target: str, *, table: str | None, job_id: int, parquet: bool, schema: str) -> Destination:
    table_name = check_table_name(table or f"job_{job_id}")
    kind = kind_of(target)
    if kind is Kind.POSTGRES:
        return SqlDestination.postgres(target, table_name, check_table_name(schema))
    if kind is Kind.DUCKDB:
        return SqlDestination.duckdb_file(Path(target), table_name)
    return DirectoryDestination(Path(target), parquet=parquet)


@contextmanager
def watching_progress(conn: duckdb.DuckDBPyConnection, on_progress: LoadProgress | None) -> Iterator[None]:
    """For the block, a thread polls DuckDB's own progress of the query running on `conn`."""
    if on_progress is None:
        yield
        return
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.25):
            with suppress(duckdb.Error):
                share = conn.query_progress()
                if share >= 0:
                    on_progress(min(share, 100.0) / 100.0)

    watcher = threading.Thread(target=poll, name="pull-load-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


class SqlDestination:
    """A DuckDB file, or PostgreSQL through DuckDB's postgres extension (which writes with COPY): in both, DuckDB
    reads the gzip parts with the catalog's types."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, *, prefix: str, table: str, dialect: Dialect, label: str):
        self.conn = conn
        self.prefix = prefix  # the catalog and schema the tables live in, quoted
        self.table = table
        self.dialect = dialect
        self.label = label
        self._ensured: set[str] = set()

    @classmethod
    def duckdb_file(cls, path: Path, table: str) -> SqlDestination:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(path), config=dict(OFFLINE_CONFIG))
        return cls(conn, prefix="", table=table, dialect=Dialect.DUCKDB, label=f"DuckDB {path} table {table}")

    @classmethod
    def postgres(cls, url: str, table: str, schema: str) -> SqlDestination:
        conn = duckdb.connect(config=dict(OFFLINE_CONFIG))
        load_extension(conn, "postgres_scanner")
        try:
            conn.execute(f"ATTACH {sql_string(url)} AS dest (TYPE postgres)")
        except duckdb.Error as error:
            conn.close()
            raise DestinationError(f"PostgreSQL: {str(error).splitlines()[0]}") from None
        # COPY in PostgreSQL's text format: its binary format made DuckDB spend 2.9x PostgreSQL's own COPY time
        # converting UBIGINT ids to numeric (bench/pull.py); the text one round-trips every type we write.
        conn.execute("SET pg_use_binary_copy = false")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS dest.{quote_ident(schema)}")
        label = f"PostgreSQL table {schema}.{table}"
        return cls(conn, prefix=f"dest.{quote_ident(schema)}.", table=table, dialect=Dialect.POSTGRES, label=label)

    def _name(self, table: str) -> str:
        return self.prefix + quote_ident(table)

    def _ensure_state(self) -> None:
        if STATE_TABLE in self._ensured:
            return
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self._name(STATE_TABLE)} (project_id BIGINT, job_id BIGINT, run_id BIGINT, "
            "table_name VARCHAR, window_from TIMESTAMPTZ, window_to TIMESTAMPTZ, rows BIGINT, parts INTEGER, "
            # The key makes a run delivered twice at once (two pulls from two machines) fail the second commit,
            # rows included, rather than land twice.
            "delivered_at TIMESTAMPTZ, PRIMARY KEY (project_id, job_id, run_id))"
        )
        self._ensured.add(STATE_TABLE)

    def _ensure_table(self, columns: Sequence[Column]) -> None:
        wanted = [*columns, Column(RUN_ID_COLUMN, "BIGINT")]
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self._name(self.table)} ({table_columns_sql(wanted)})")
        have = [row[0] for row in self.conn.execute(f"DESCRIBE {self._name(self.table)}").fetchall()]
        if have != [c.name for c in wanted]:
            raise DestinationError(
                f"table {self.table} has the columns {have}, not this job's {[c.name for c in wanted]}: "
                "pull into another --table"
            )

    def delivered(self, project_id: int, job_id: int) -> set[int]:
        self._ensure_state()
        rows = self.conn.execute(
            f"SELECT run_id FROM {self._name(STATE_TABLE)} WHERE project_id = ? AND job_id = ?", [project_id, job_id]
        ).fetchall()
        return {int(r[0]) for r in rows}

    def deliver(self, delivery: Delivery, parts: Parts, on_progress: LoadProgress | None) -> int:
        self._ensure_state()
        self._ensure_table(parts.columns)
        select = read_parts_sql(parts.format, parts.columns, len(parts.paths))
        names = ", ".join(quote_ident(c.name) for c in [*parts.columns, Column(RUN_ID_COLUMN, "BIGINT")])
        self.conn.execute("BEGIN TRANSACTION")
        try:
            with watching_progress(self.conn, on_progress):
                # One statement over every part: DuckDB reads the files in parallel.
                inserted = self.conn.execute(
                    f"INSERT INTO {self._name(self.table)} ({names}) SELECT *, ? FROM ({select})",
                    [delivery.run_id, [str(p) for p in parts.paths]],
                ).fetchone()
            rows = int(inserted[0]) if inserted else 0
            if parts.expected_rows is not None and rows != parts.expected_rows:
                raise DestinationError(
                    f"run {delivery.run_id}: {rows} rows read from its parts, the manifest says {parts.expected_rows}"
                )
            self.conn.execute(
                f"INSERT INTO {self._name(STATE_TABLE)} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    delivery.project_id,
                    delivery.job_id,
                    delivery.run_id,
                    self.table,
                    delivery.window_from,
                    delivery.window_to,
                    rows,
                    delivery.parts,
                    delivery.delivered_at,
                ],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            with suppress(duckdb.Error):
                self.conn.execute("ROLLBACK")
            raise
        return rows

    def close(self) -> None:
        self.conn.close()


class DirectoryDestination:
    """`<dir>/job-<id>/<window start>_run-<id>/`: the parts as downloaded (and the manifest), or one Parquet file
    typed from the catalog. `<dir>/_dataexport_deliveries.json` lists the delivered runs."""

    dialect = Dialect.DUCKDB

    def __init__(self, root: Path, *, parquet: bool) -> None:
        self.root = root
        self.parquet = parquet
        self.label = f"directory {root}" + (" (Parquet)" if parquet else "")
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / STATE_FILE

    def _state(self) -> list[dict[str, object]]:
        if not self.state_path.exists():
            return []
        loaded = json.loads(self.state_path.read_text())
        deliveries: list[dict[str, object]] = loaded.get("deliveries", [])
        return deliveries

    def delivered(self, project_id: int, job_id: int) -> set[int]:
        return {int(str(d["run_id"])) for d in self._state() if d["project_id"] == project_id and d["job_id"] == job_id}

    def run_dir(self, delivery: Delivery) -> Path:
        start = delivery.window_from.strftime("%Y-%m-%dT%H%M%SZ")
        return self.root / f"job-{delivery.job_id}" / f"{start}_run-{delivery.run_id}"

    def deliver(self, delivery: Delivery, parts: Parts, on_progress: LoadProgress | None) -> int:
        final = self.run_dir(delivery)
        staging = final.with_name(f".staging-{final.name}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        rows = self._fill(staging, parts, on_progress)
        if parts.expected_rows is not None and rows != parts.expected_rows:
            raise DestinationError(f"run {delivery.run_id}: {rows} rows, the manifest says {parts.expected_rows}")
        _fsync_tree(staging)
        shutil.rmtree(final, ignore_errors=True)  # a folder left by a pull that died before recording it
        os.replace(staging, final)
        fsync_dir(final.parent)
        state = [*self._state(), {**asdict(delivery), "rows": rows, "path": str(final.relative_to(self.root))}]
        _write_atomically(self.state_path, json.dumps({"deliveries": state}, indent=1, default=str))
        return rows

    def _fill(self, staging: Path, parts: Parts, on_progress: LoadProgress | None) -> int:
        if parts.manifest is not None:
            shutil.copyfile(parts.manifest, staging / "manifest.json")
        conn = duckdb.connect(config=dict(OFFLINE_CONFIG))
        try:
            select = read_parts_sql(parts.format, parts.columns, len(parts.paths))
            paths = [str(p) for p in parts.paths]
            if self.parquet:
                target = staging / "data.parquet"
                with watching_progress(conn, on_progress):
                    # COPY answers the number of rows it wrote.
                    counted = conn.execute(
                        f"COPY ({select}) TO {sql_string(str(target))} (FORMAT parquet, COMPRESSION zstd)", [paths]
                    ).fetchone()
            else:
                for path in parts.paths:
                    # Moved, not copied: the work folder lives in the destination, so this is a rename.
                    shutil.move(path, staging / path.name)
                paths = [str(staging / path.name) for path in parts.paths]
                # Rows are known from the manifest when there is one; else counted, which also proves the parts
                # parse with the job's columns.
                counted = (
                    (parts.expected_rows,)
                    if parts.expected_rows is not None
                    else conn.execute(f"SELECT count(*) FROM ({select})", [paths]).fetchone()
                )
            return int(counted[0]) if counted and counted[0] is not None else 0
        finally:
            conn.close()

    def close(self) -> None:
        pass


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def _fsync_tree(path: Path) -> None:
    for file in path.iterdir():
        with file.open("rb") as f:
            os.fsync(f.fileno())
    fsync_dir(path)

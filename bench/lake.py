"""The DuckLake side of the benchmarks: a lake (catalog in a PostgreSQL database on 127.0.0.1:5432, Parquet on a
SeaweedFS S3 server this process starts) and the settings every bench process is given to use it.

    with running_lake(root, keep=False) as lake:   # fresh: a new catalog database, dropped at the end
        env = {**os.environ, **lake.env()}         # DATAEXPORT_WAREHOUSE=ducklake and the lake's settings

With keep=True the lake outlives the bench: SeaweedFS's data stays in root/seaweedfs/data (restarted on it next
time) and the catalog database is named after `root` (database_for(root)), so a later run finds the same lake.

SeaweedFS is started by the tests' launcher (tests/support.py), so the bench's S3 server is the one the tests use;
only its start is changed here, to keep the data of a previous start.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import (  # noqa: E402  (the tests directory is not a package: its path is added above)
    PG_ADMIN_URL,
    S3Server,
    SeaweedFS,
)

BUCKET = "bench"
LAKE_PREFIX = "lake"  # DATAEXPORT_LAKE_DATA_PATH = s3://bench/lake/
LAKE_SCHEMA = "dataexport_lake"  # the application's default DATAEXPORT_LAKE_SCHEMA


@dataclass(frozen=True)
class Lake:
    """Where one lake is: its catalog (database and schema) and its data path on the S3 server."""

    catalog_url: str
    s3: S3Server
    bucket: str = BUCKET
    schema: str = LAKE_SCHEMA
    prefix: str = LAKE_PREFIX

    @property
    def data_path(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"

    def another(self, name: str) -> Lake:
        """A separate lake on the same servers: its own catalog schema and data prefix (a fresh, empty lake).
        A prefix of its own matters: a lake's orphaned-file cleanup deletes the files of any other lake that
        shares its data path."""
        return replace(self, schema=f"{self.schema}_{name}", prefix=f"{self.prefix}-{name}")

    def env(self) -> dict[str, str]:
        """The DATAEXPORT_* variables that make a dataexport process use this lake. The export files stay on the
        process's own storage setting (local by default): only the warehouse moves to S3."""
        return {
            "DATAEXPORT_WAREHOUSE": "ducklake",
            "DATAEXPORT_LAKE_CATALOG_URL": self.catalog_url,
            "DATAEXPORT_LAKE_SCHEMA": self.schema,
            "DATAEXPORT_LAKE_DATA_PATH": self.data_path,
            "DATAEXPORT_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "DATAEXPORT_S3_REGION": self.s3.region,
            "DATAEXPORT_S3_ACCESS_KEY_ID": self.s3.access_key_id,
            "DATAEXPORT_S3_SECRET_ACCESS_KEY": self.s3.secret_access_key,
        }

    def settings(self, data_dir: Path, **overrides):
        """Settings of a process of this bench that uses the lake (`open_warehouse(lake.settings(dir))`)."""
        from dataexport.config import Settings

        return Settings(
            data_dir=data_dir,
            warehouse="ducklake",
            lake_catalog_url=self.catalog_url,
            lake_schema=self.schema,
            lake_data_path=self.data_path,
            s3_endpoint_url=self.s3.endpoint_url,
            s3_region=self.s3.region,
            s3_access_key_id=self.s3.access_key_id,
            s3_secret_access_key=self.s3.secret_access_key,
            **overrides,
        )


# ---------------------------------------------------------------- the servers


def database_for(root: Path) -> str:
    """The catalog database of the lake kept under `root`: the same name for the same directory."""
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return f"dataexport_bench_{digest}"


def _database_url(name: str) -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def database_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(name: str) -> str:
    """The URL of database `name`, created if missing."""
    if not database_exists(name):
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    return _database_url(name)


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database(tag: str) -> str:
    """A new, empty database of a name of its own, for the caller to drop."""
    return create_database(_fresh_name(tag))


def _fresh_name(tag: str) -> str:
    return f"dataexport_bench_{tag}_{uuid.uuid4().hex[:10]}"


@contextmanager
def running_lake(root: Path, *, keep: bool) -> Iterator[Lake]:
    """SeaweedFS on root/seaweedfs with the bucket, and the lake's catalog database; see the module's docstring.
    The server is stopped at the end; a fresh (keep=False) database is dropped and the server's data deleted."""
    root = Path(root)
    name = database_for(root) if keep else _fresh_name("lake")
    weed = SeaweedFS(root / "seaweedfs", keep_data=keep)
    url = create_database(name)
    try:
        s3 = weed.start()
        client = s3.client()
        if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=BUCKET)
        print(f"lake: catalog database {name}, SeaweedFS on {s3.endpoint_url} ({weed.startup_seconds:.1f} s to start)")
        yield Lake(url, s3)
    finally:
        weed.stop()
        if not keep:
            drop_database(name)
            shutil.rmtree(root / "seaweedfs", ignore_errors=True)


# ---------------------------------------------------------------- filling a lake


@dataclass
class LakeCopy:
    rows: int
    migrate_seconds: float
    maintain_seconds: float
    files_before: int
    files_after: int


def copy_into_lake(source_dir: Path, lake: Lake, data_dir: Path, project_id: int) -> LakeCopy:
    """Copy the project's pageviews from the embedded warehouse at `source_dir` into the lake
    (`migrate.migrate_project`), then run the lake's maintenance, as a scheduler would once they settled, so its
    files are merged and sorted by user_id as compaction leaves the embedded ones."""
    from dataexport.warehouse.backend import open_warehouse
    from dataexport.warehouse.embedded import EmbeddedWarehouse
    from dataexport.warehouse.migrate import migrate_project

    start = time.perf_counter()
    with closing(EmbeddedWarehouse(source_dir)) as source, closing(open_warehouse(lake.settings(data_dir))) as target:
        summary = migrate_project(source, target, project_id)
        migrated = time.perf_counter()
        files_before = data_objects(lake)
        # As if a day had passed: the lake keeps the files a merge replaced for its snapshot retention (a day),
        # and the bench has no use for them but to fill the disk.
        report = target.maintain(datetime.now(UTC) + timedelta(days=2), settled_after=timedelta(0))
        files_after = data_objects(lake)
    done = time.perf_counter()
    print(
        f"copied {summary.rows:,} pageviews into the lake in {migrated - start:.1f} s, maintained in "
        f"{done - migrated:.1f} s ({report.partitions_compacted} partition(s) merged, {files_before} -> "
        f"{files_after} Parquet files) (not part of the figures)"
    )
    return LakeCopy(summary.rows, migrated - start, done - migrated, files_before, files_after)


def data_objects(lake: Lake) -> int:
    """Parquet files under the lake's data path, counted on the S3 server (no interface gives a lake's files)."""
    pages = lake.s3.client().get_paginator("list_objects_v2").paginate(Bucket=lake.bucket, Prefix=lake.prefix + "/")
    return sum(1 for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".parquet"))


def lake_rows(lake: Lake, data_dir: Path, project_id: int, start: datetime, end: datetime) -> int:
    """Pageviews the lake holds for the project's sessions started in [start, end): a check that a kept lake
    still holds the data it was copied from."""
    from dataexport.warehouse.backend import ReadLimits, open_warehouse

    limits = ReadLimits(threads=2, memory_limit=500_000_000, spill_dir=data_dir / "work" / "bench-spill")
    with (
        closing(open_warehouse(lake.settings(data_dir))) as warehouse,
        warehouse.read(project_id, start, end, limits) as source,
    ):
        relation = source.relation(source.days)
        sql = f"SELECT count(*) FROM {relation.text} WHERE session_time >= ? AND session_time < ?"
        return int(source.conn.execute(sql, [*relation.params, start, end]).fetchone()[0])


def timed_open(lake: Lake, data_dir: Path) -> float:
    """Seconds to open the lake (extensions, ATTACH, bootstrap check): what each process pays once."""
    from dataexport.warehouse.backend import open_warehouse

    start = time.perf_counter()
    open_warehouse(lake.settings(data_dir)).close()
    return time.perf_counter() - start


def empty_lake(lake: Lake) -> None:
    """Remove everything the lake holds: its catalog schema and its files (a copy of other data must go before
    the new one comes in; migration would add to it)."""
    with psycopg.connect(lake.catalog_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{lake.schema}" CASCADE')
    client = lake.s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=lake.bucket, Prefix=lake.prefix + "/"):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=lake.bucket, Delete={"Objects": keys})

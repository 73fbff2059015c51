"""One Settings object, built at each entry point and passed down; nothing reads the environment at import."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATAEXPORT_", extra="ignore")

    # Where everything lives on the embedded default.
    data_dir: Path = Field(Path("var"), description="Root of the embedded default: metadata DB, warehouse, files")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the metadata DB; default SQLite in data_dir")
    warehouse_dir: Path | None = Field(None, description="Parquet warehouse root; default data_dir/warehouse")

    # The warehouse of pageviews: embedded (Parquet under warehouse_dir) or a DuckLake lakehouse.
    warehouse: Literal["embedded", "ducklake"] = Field(
        "embedded", description="embedded: Parquet files under warehouse_dir, one machine; ducklake: many machines"
    )
    lake_catalog_url: str | None = Field(
        None,
        description="PostgreSQL URL of the DuckLake catalog (postgresql://user@host:port/db); default database_url "
        "when that is PostgreSQL",
    )
    lake_schema: str = Field("dataexport_lake", description="PostgreSQL schema the DuckLake catalog lives in")
    lake_data_path: str | None = Field(
        None,
        description="Where the lake's Parquet files go: s3://bucket/prefix/ (with the s3_* settings) or a directory; "
        "default data_dir/lake",
    )

    # HTTP
    host: str = Field("127.0.0.1", description="Address `serve` listens on")
    port: int = Field(8000, description="Port `serve` listens on")
    public_base_url: str | None = Field(
        None,
        description="Externally reachable base URL returned as `endpoint` and in file URLs; default derived "
        "from the request's Host, which must then be one of allowed_hosts",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (optionally host:port) requests may carry besides localhost, "
        '127.0.0.1, ::1 and public_base_url\'s host; any other Host gets 400. A JSON list: ["a.example"]',
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto "
        "are honoured (uvicorn's forwarded_allow_ips), a JSON list; none by default",
    )
    metrics_token: str | None = Field(
        None, description="Bearer token `/metrics` requires; without it `/metrics` answers loopback clients only"
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection must send a request's complete headers within this time"
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request must send its complete body within this time (else 408)"
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections one API process serves at once; more are answered 503"
    )

    # Auth
    jwt_secret: str | None = Field(
        None, description="HMAC key for access tokens; default generated and kept in data_dir"
    )
    token_ttl_seconds: int = Field(3600, description="Lifetime of an access token (the vendor: 1 hour)")
    auth_free_failures: int = Field(
        5,
        ge=0,
        description="Failed token requests per (client_id, source address) before each further one must "
        "wait; the wait doubles with each failure",
    )
    auth_max_delay_seconds: float = Field(
        300.0, gt=0, description="Longest wait imposed on a (client_id, address) after repeated failures"
    )
    auth_global_failures_per_minute: int = Field(
        600,
        ge=1,
        description="Failed token requests per minute and API process beyond which addresses that "
        "already failed are refused at once (429) without checking their secret",
    )
    auth_hash_concurrency: int = Field(
        2, ge=1, description="Secret hashes (argon2) one API process checks at once; others wait their turn"
    )

    # Limits
    max_concurrent_requests_per_project: int = Field(
        10, description="In-flight API requests per project and API process; more get 429"
    )
    max_active_jobs_per_project: int = Field(
        100,
        ge=1,
        description="Export jobs that will still run (ACTIVE, or a once job COMPUTING) a project may have; "
        "creating or resuming one more gets 429",
    )
    ingest_max_future_seconds: int = Field(
        300, ge=0, description="How far in the future (clock skew) an ingested hit's time may be"
    )
    ingest_max_partitions_per_batch: int = Field(
        31, ge=1, description="Distinct session days one ingest batch may touch (one partition each)"
    )

    # The tracking tag's collection (GET /tag/<tagId>.js, POST /collect/v1/<tagId>)
    collect_beacons_per_minute: int = Field(
        600,
        ge=1,
        description="Beacons a minute one client address may send for one tag id, on average (a visitor sends one "
        "per pageview; offices and mobile carriers put many visitors behind one address)",
    )
    collect_burst: int = Field(120, ge=1, description="Beacons one client address may send at once")
    geoip_dir: Path | None = Field(
        Path(".cache/geoip"),
        description="Directory of the DB-IP City Lite .mmdb files (`make geoip` fetches them); without them "
        "city and country_code stay empty",
    )

    # Engine
    api_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes `serve` answers requests with (uvicorn workers), each with its own in-process "
        "scheduler and worker when those are on; more than one uses more cores",
    )
    run_scheduler: bool = Field(True, description="`serve` also runs the scheduler loop in-process")
    run_worker: bool = Field(True, description="`serve` also runs a worker loop in-process")
    hourly_lag_minutes: int = Field(45, description="Wait after an hourly window ends before its run")
    daily_lag_minutes: int = Field(120, description="Wait after a daily window ends before its run")
    session_timeout_minutes: int = Field(30, description="Session inactivity timeout: the smallest lag of any window")
    lease_seconds: int = Field(
        60, description="A worker's lease on a run; renewed every third of it, taken over when it runs out"
    )
    max_attempts: int = Field(3, description="Attempts of a run before it ends FAILURE")
    retry_backoff_seconds: float = Field(5.0, description="First retry delay; doubles with each attempt")
    poll_interval_seconds: float = Field(
        1.0, description="Idle wait of workers and the scheduler between looks for work"
    )
    part_max_bytes: int = Field(256 * 1024 * 1024, description="Upper bound of one uncompressed part, in bytes")
    gzip_level: int = Field(1, description="ISA-L gzip level (0-3); 1 is fast with a good ratio")
    sort_exports: bool = Field(
        False, description="Sort export rows by session and view (slower); by default rows leave in no set order"
    )
    duckdb_memory_limit: ByteSize = Field(
        ByteSize(192_000_000),
        description="DuckDB memory limit of one extraction (`192MB`, `1GiB`); the slices of "
        "a per-session aggregate are sized to fit it",
    )
    export_slice_rows: int | None = Field(
        None,
        gt=0,
        description="Pageviews per slice of a per-session aggregate; default derived from the memory "
        "limit and the export's width",
    )
    file_ttl_days: int = Field(7, description="Days a run's files can be downloaded (expirationDate), then deleted")

    # Storage
    storage: str = Field("local", description="`local` or `s3`")
    files_dir: Path | None = Field(None, description="Local storage root; default data_dir/files")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, SeaweedFS...); default AWS")
    s3_bucket: str = Field("dataexport", description="Bucket of the export files (created if missing)")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(None, description="S3 credentials; default boto3's own chain")
    s3_secret_access_key: str | None = Field(None, description="S3 credentials; default boto3's own chain")
    s3_prefix: str = Field(
        "",
        description="Key prefix in the bucket put before the export files' own keys (exports/P/J/R/...); empty: none",
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable console lines)")

    @property
    def local_host(self) -> str:
        """The address a client on this machine reaches `serve` at (loopback when it listens on every address)."""
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    @property
    def served_url(self) -> str:
        """The base URL clients reach this server at: public_base_url, else the address `serve` listens on."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.local_host}:{self.port}"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    @property
    def resolved_warehouse_dir(self) -> Path:
        return self.warehouse_dir or self.data_dir / "warehouse"

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir or self.data_dir / "files"

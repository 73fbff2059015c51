"""One Settings object, built at each entry point and passed down; nothing reads the environment at import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DATAEXPORT_", extra="ignore")

    # Where everything lives on the embedded default.
    data_dir: Path = Field(Path("var"), description="Root of the embedded default: metadata DB, warehouse, files")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the metadata DB; default SQLite in data_dir")
    warehouse_dir: Path | None = Field(None, description="Parquet warehouse root; default data_dir/warehouse")

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str | None = Field(
        None, description="Externally reachable base URL returned as `endpoint`; default derived from the request"
    )

    # Auth
    jwt_secret: str | None = Field(None, description="HMAC key for access tokens; default generated and kept in data_dir")
    token_ttl_seconds: int = 3600
    max_clients_per_owner: int = 10
    token_rate_limit_per_minute: int = Field(30, description="Token requests per client_id and minute")

    # Limits
    max_concurrent_requests_per_project: int = 10

    # Engine
    run_scheduler: bool = Field(True, description="`serve` also runs the scheduler loop in-process")
    run_worker: bool = Field(True, description="`serve` also runs a worker loop in-process")
    hourly_lag_minutes: int = 45
    daily_lag_minutes: int = 120
    session_timeout_minutes: int = 30
    lease_seconds: int = 60
    max_attempts: int = 3
    retry_backoff_seconds: float = 5.0
    poll_interval_seconds: float = 1.0
    part_max_bytes: int = Field(256 * 1024 * 1024, description="Upper bound of one uncompressed part, in bytes")
    gzip_level: int = Field(1, description="ISA-L gzip level (0-3); 1 is fast with a good ratio")
    file_ttl_days: int = 7

    # Storage
    storage: str = Field("local", description="`local` or `s3`")
    files_dir: Path | None = Field(None, description="Local storage root; default data_dir/files")
    s3_endpoint_url: str | None = None
    s3_bucket: str = "dataexport"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = "exports"

    log_level: str = "INFO"
    log_json: bool = True

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'metadata.db').resolve()}"

    @property
    def resolved_warehouse_dir(self) -> Path:
        return self.warehouse_dir or self.data_dir / "warehouse"

    @property
    def resolved_files_dir(self) -> Path:
        return self.files_dir or self.data_dir / "files"

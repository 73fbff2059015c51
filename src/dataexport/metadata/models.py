"""The metadata schema. Every query against it lives in `repositories/`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dataexport.metadata.types import UTCDateTime

# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    retention_days: Mapped[int] = mapped_column(Integer, default=395)
    # Ingest keys are secrets: only a fast hash (SHA-256 of a 256-bit random key) is kept.
    ingest_key_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    # The tracking tag's id: public (it is in every instrumented page), so kept as is; rotating it cuts off the
    # pages that still use the old one. Unique, so a collected beacon finds its project with one indexed read.
    tag_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    # Origins ("https://shop.example") whose pages may send beacons for this project; none until one is allowed.
    allowed_origins: Mapped[list | None] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CollectedBeacon(Base):
    """The tag's beacons stored lately, by the id the tag gave each: a resent beacon is stored once, whichever API
    replica it reaches, while many beacons share one warehouse batch (collect/combiner.py). Pruned after
    repositories.beacons.BEACON_MEMORY_DAYS by the scheduler's upkeep."""

    __tablename__ = "collected_beacons"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    beacon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OAuthClient(Base):
    __tablename__ = "oauth_clients"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    # Set for a project-level client; NULL for an account-level client (may reach every project of its account).
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set by `dataexport clients revoke`: no more tokens, and the unexpired ones stop working. Indexed: every API
    # process reads the recently revoked ones once a second (api.deps).
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)


class Segment(Base):
    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32), default="dataexport")
    filter: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ExportJob(Base):
    __tablename__ = "export_jobs"
    __table_args__ = (Index("ix_export_jobs_project_state", "project_id", "state"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    owner_id: Mapped[int] = mapped_column(Id)
    last_updator_id: Mapped[int] = mapped_column(Id)
    name: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(8))
    scope: Mapped[str] = mapped_column(String(16))
    frequency: Mapped[str] = mapped_column(String(8))
    device_label: Mapped[str] = mapped_column(String(16))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id"))
    fields: Mapped[list] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    range_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    range_to: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The first window to extract is the one containing this instant: creation time, moved on resume so that
    # the windows of a suspension are skipped rather than caught up.
    windows_from: Mapped[datetime] = mapped_column(UTCDateTime())
    # Start of the newest window that has a run: the scheduler's cursor (catch-up resumes after it).
    last_window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        # Idempotence by constraint: a second scheduler tick for the same window is a no-op.
        UniqueConstraint("job_id", "window_start", name="uq_job_runs_job_window"),
        Index("ix_job_runs_claim", "state", "runnable_at"),
        # A fair claim orders projects by their latest start (repositories.work): one index lookup each.
        Index("ix_job_runs_project_started", "project_id", "started_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("export_jobs.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())
    window_end: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    runnable_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completion_rate: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    manifest_key: Mapped[str | None] = mapped_column(String(512))


class RunFile(Base):
    __tablename__ = "run_files"
    __table_args__ = (UniqueConstraint("run_id", "part_id", name="uq_run_files_run_part"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("job_runs.id"), index=True)
    part_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    expiration_date: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    deleted: Mapped[bool] = mapped_column(default=False)


class Operator(Base):
    """A person signing in to the web console (`dataexport users create`). Sees only the projects it is a member of;
    a viewer changes nothing."""

    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased: one account per address
    # argon2, as the client secrets (security/secrets.py).
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OperatorProject(Base):
    __tablename__ = "operator_projects"
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True, index=True)


class ConsoleSession(Base):
    """A signed-in browser. Kept in the metadata database, so any API replica serves it (no shared disk, no sticky
    sessions). Only a hash of the cookie's token is kept: a leaked table signs nobody in."""

    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

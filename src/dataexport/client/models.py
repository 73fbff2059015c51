"""Typed answers of the Data Export API, as the vendor's reference shows them.

Every model accepts fields it does not know (`extra="allow"`) and treats as optional what the vendor may leave
out, so an answer of the vendor's own API parses as well as one of dataexport. Fields that only dataexport sends
(extensions) default to None: code reading them must work without them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Token(Model):
    """The answer of `POST /v1/oauth/token`."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int = 3600
    scope: str | None = None
    project_id: int | None = None
    # Clients build every later URL from it; absent, the server they asked is used.
    endpoint: str | None = None


class JobField(Model):
    fieldName: str
    aliasName: str | None = None
    customVarPosition: int | None = None
    dynamicVarKey: str | None = None


class Filters(Model):
    deviceId: int | None = None


class Job(Model):
    jobId: int
    name: str
    state: str
    format: str
    frequency: str
    fields: list[JobField] = []
    scope: str | None = None
    ownerId: int | None = None
    lastUpdatorId: int | None = None
    accountId: int | None = None
    projectIds: list[int] = []
    nextFrom: datetime | None = None
    nextTo: datetime | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None
    lastRunTime: datetime | None = None
    nextRunTime: datetime | None = None
    filters: Filters | None = None
    segmentId: int | None = None


class JobCreated(Model):
    jobId: int


class Run(Model):
    jobRunId: int
    state: str
    startDate: datetime | None = None
    endDate: datetime | None = None
    completionRate: float | None = None


class RunFile(Model):
    partId: int
    url: str
    fileSize: int | None = None
    expirationDate: datetime | None = None


class RunDetail(Run):
    files: list[RunFile] = []
    # Extensions of dataexport: the extracted window, the row count, the manifest and a failure reason.
    from_: datetime | None = Field(None, alias="from")
    to: datetime | None = None
    rows: int | None = None
    manifestUrl: str | None = None
    errorMessage: str | None = None


class SuccessfulRun(Model):
    jobId: int
    jobRunId: int
    name: str | None = None
    projectIds: list[int] = []
    from_: datetime = Field(alias="from")
    to: datetime
    completionTime: datetime | None = None
    format: str | None = None
    scope: str | None = None
    frequency: str | None = None
    nbOfFiles: int | None = None


class ExportableField(Model):
    name: str
    description: str | None = None
    example: str | None = None
    aliases: list[str] = []
    parameters: list[str] = []
    # Extension: the vendor's ClickHouse-style type name (String, UInt16, DateTime, Array(String), ...).
    type: str | None = None


class CustomVar(Model):
    position: int
    key: str
    values: list[str] = []


class DynamicVarKey(Model):
    key: str
    type: str


class Segment(Model):
    id: int
    name: str
    source: str | None = None
    createdAt: datetime | None = None
    updatedAt: datetime | None = None


class HitError(Model):
    index: int
    field: str
    message: str


class IngestResult(Model):
    """The answer of `POST /ingest/v1/pageviews` (extension)."""

    batchId: str
    stored: int
    rejected: int
    duplicate: bool
    errors: list[HitError] = []


class ManifestPart(Model):
    partId: int
    rows: int
    fileSize: int
    sha256: str
    key: str | None = None


class Manifest(Model):
    """A run's `manifest.json` (extension, at `RunDetail.manifestUrl`): what each part must hold."""

    jobId: int
    jobRunId: int
    from_: datetime = Field(alias="from")
    to: datetime
    format: str
    totalRows: int
    parts: list[ManifestPart]
    scope: str | None = None
    attempt: int | None = None
    fields: list[dict[str, Any]] = []

    def part(self, part_id: int) -> ManifestPart | None:
        return next((p for p in self.parts if p.partId == part_id), None)

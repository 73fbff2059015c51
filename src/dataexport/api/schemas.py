"""Response shapes, as the vendor's reference shows them; used for OpenAPI and to keep answers exact."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    payload: T
    success: bool = True


class FieldErrorOut(BaseModel):
    field: str
    message: str


class ErrorEnvelope(BaseModel):
    success: bool = False
    errorCode: str
    errorMessage: str
    errors: list[FieldErrorOut] | None = None


class JobCreated(BaseModel):
    jobId: int


class JobFieldOut(BaseModel):
    fieldName: str
    aliasName: str | None = None
    customVarPosition: int | None = None
    dynamicVarKey: str | None = None


class Filters(BaseModel):
    deviceId: int


class JobOut(BaseModel):
    jobId: int
    name: str
    ownerId: int
    lastUpdatorId: int
    accountId: int
    nextFrom: str | None
    nextTo: str | None
    projectIds: list[int]
    state: str
    createdAt: str
    format: str
    scope: str
    frequency: str
    fields: list[JobFieldOut]
    lastRunTime: str | None
    nextRunTime: str | None
    updatedAt: str
    filters: Filters
    segmentId: int | None = None


class SuccessfulRunOut(BaseModel):
    jobId: int
    jobRunId: int
    name: str
    projectIds: list[int]
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    completionTime: str | None
    format: str
    scope: str
    frequency: str
    nbOfFiles: int

    model_config = {"populate_by_name": True}


class RunOut(BaseModel):
    jobRunId: int
    startDate: str | None
    state: str
    endDate: str | None
    completionRate: float


class RunFileOut(BaseModel):
    partId: int
    fileSize: int
    url: str
    expirationDate: str


class RunDetailOut(RunOut):
    files: list[RunFileOut]
    # Extensions beyond the vendor: the extracted window, the row count, the manifest and a failure reason.
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    rows: int | None = None
    manifestUrl: str | None = None
    errorMessage: str | None = None

    model_config = {"populate_by_name": True}


class ExportableFieldOut(BaseModel):
    name: str
    description: str
    example: str
    aliases: list[str]
    parameters: list[str]
    type: str  # extension: the vendor's ClickHouse-style type name (String, UInt16, Array(DateTime), ...)


class CustomVarOut(BaseModel):
    position: int
    key: str
    values: list[str]


class DynamicVarKeyOut(BaseModel):
    key: str
    type: str


class SegmentOut(BaseModel):
    id: int
    name: str
    source: str
    createdAt: str
    updatedAt: str


class HitErrorOut(BaseModel):
    index: int
    field: str
    message: str


class IngestResultOut(BaseModel):
    batchId: str
    stored: int
    rejected: int
    duplicate: bool
    errors: list[HitErrorOut]


ERROR_RESPONSES = {code: {"model": ErrorEnvelope} for code in (400, 401, 403, 404, 429)}

"""Every endpoint as a `Call`: what to send and how to read the answer. Shared by the sync and async clients,
which only differ in how they do the I/O (sans-I/O: nothing here touches the network)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from dataexport.client import models

T = TypeVar("T")

MAX_LIMIT = 100  # the API's largest page


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    answer: TypeAdapter[T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None
    # Safe to send again after a broken connection: the server may have done it already.
    idempotent: bool = True

    def read(self, body: Any) -> T:
        """The envelope's payload as the answer's model."""
        payload = body.get("payload") if isinstance(body, dict) else None
        return self.answer.validate_python(payload)


def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


_JOB = _adapter(models.Job)
_JOBS = _adapter(list[models.Job])
_CREATED = _adapter(models.JobCreated)
_RUN = _adapter(models.RunDetail)
_RUNS = _adapter(list[models.Run])
_SUCCESSFUL = _adapter(list[models.SuccessfulRun])
_FIELDS = _adapter(list[models.ExportableField])
_CUSTOM_VARS = _adapter(list[models.CustomVar])
_DYNAMIC_KEYS = _adapter(list[models.DynamicVarKey])
_SEGMENTS = _adapter(list[models.Segment])


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {k: v for k, v in values.items() if v is not None}


def _instant(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def page_params(page: int, limit: int, order: str | None) -> dict[str, str | int]:
    return _params(page=page, limit=limit, order=order)


def create_export(spec: Mapping[str, Any]) -> Call[models.JobCreated]:
    # Not idempotent: a create whose answer was lost may have made the job.
    return Call("POST", "/v1/exports", _CREATED, json=dict(spec), idempotent=False)


def list_exports(
    *,
    page: int = 1,
    limit: int = 25,
    order: str | None = None,
    format: str | None = None,
    frequency: str | None = None,
    scope: str | None = None,
    state: str | None = None,
) -> Call[list[models.Job]]:
    filters = _params(format=format, frequency=frequency, scope=scope, state=state)
    return Call("GET", "/v1/exports", _JOBS, params={**page_params(page, limit, order), **filters})


def get_export(job_id: int) -> Call[models.Job]:
    return Call("GET", f"/v1/exports/{int(job_id)}", _JOB)


def list_successful_runs(
    *, page: int = 1, limit: int = 25, order: str | None = None
) -> Call[list[models.SuccessfulRun]]:
    return Call("GET", "/v1/exports/successful-runs", _SUCCESSFUL, params=page_params(page, limit, order))


def list_runs(
    job_id: int, *, page: int = 1, limit: int = 25, order: str | None = None, state: str | None = None
) -> Call[list[models.Run]]:
    params = {**page_params(page, limit, order), **_params(state=state)}
    return Call("GET", f"/v1/exports/{int(job_id)}/runs", _RUNS, params=params)


def get_run(job_id: int, run_id: int) -> Call[models.RunDetail]:
    return Call("GET", f"/v1/exports/{int(job_id)}/runs/{int(run_id)}", _RUN)


def exportable_fields(scope: str) -> Call[list[models.ExportableField]]:
    return Call("GET", "/v1/exportable-fields", _FIELDS, params={"scope": scope})


def custom_vars() -> Call[list[models.CustomVar]]:
    return Call("GET", "/v1/custom-vars", _CUSTOM_VARS)


def dynamic_var_keys(
    start: datetime | str | None = None, end: datetime | str | None = None
) -> Call[list[models.DynamicVarKey]]:
    params = _params(**{"from": _instant(start), "to": _instant(end)})
    return Call("GET", "/v1/dynamic-var-keys", _DYNAMIC_KEYS, params=params)


def segments(ids: Sequence[int] | None = None) -> Call[list[models.Segment]]:
    params = {} if ids is None else {"ids": ",".join(str(int(i)) for i in ids)}
    return Call("GET", "/v1/segments", _SEGMENTS, params=params)


# Extensions of dataexport: job lifecycle (the vendor's API has no route for them).
def delete_export(job_id: int) -> Call[models.Job]:
    return Call("DELETE", f"/v1/exports/{int(job_id)}", _JOB)


def suspend_export(job_id: int) -> Call[models.Job]:
    return Call("POST", f"/v1/exports/{int(job_id)}/suspend", _JOB)


def resume_export(job_id: int) -> Call[models.Job]:
    return Call("POST", f"/v1/exports/{int(job_id)}/resume", _JOB)

"""The reference's request examples and small helpers shared by the API, engine and acceptance suites."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dataexport import admin
from dataexport.metadata.db import transaction

# The keys the vendor's reference shows in a job and in a run: what a client may rely on from the vendor.
VENDOR_JOB_KEYS = frozenset(
    {
        "jobId",
        "name",
        "ownerId",
        "lastUpdatorId",
        "accountId",
        "nextFrom",
        "nextTo",
        "projectIds",
        "state",
        "createdAt",
        "format",
        "scope",
        "frequency",
        "fields",
        "lastRunTime",
        "nextRunTime",
        "updatedAt",
        "filters",
    }
)
VENDOR_RUN_KEYS = frozenset({"jobRunId", "startDate", "state", "endDate", "completionRate"})
VENDOR_FIELD_KEYS = frozenset({"name", "description", "example", "aliases", "parameters"})


def example_daily(segment_id=None) -> dict:
    """Request example 1 of the reference (with its trailing commas removed)."""
    body = {
        "name": "Test API POST",
        "format": "JSONL",
        "scope": "sessions",
        "frequency": {"value": "daily"},
        "fields": [{"fieldName": "project_id"}, {"fieldName": "session_id"}],
        "deviceLabel": "all",
    }
    if segment_id is not None:
        body["segmentId"] = segment_id
    return body


def two_closed_days(now: datetime) -> datetime:
    """Midnight starting a two-day window that closed over an hour before `now` (so its once run is RUNNABLE
    at creation) and that holds the last three days' seeded traffic: two days back, or three just after
    midnight, when the window ending at the last midnight has not waited its session timeout yet."""
    return (now - timedelta(days=2, hours=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def example_once(segment_id=None, day: datetime | None = None) -> dict:
    """Request example 2 of the reference, over two recent days."""
    start = (day or datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=2) - timedelta(milliseconds=1)
    body = {
        "name": "Test API POST",
        "format": "CSV",
        "scope": "views",
        "frequency": {
            "value": "once",
            "dateRange": {
                "from": start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "to": end.strftime("%Y-%m-%dT%H:%M:%S.999Z"),
            },
        },
        "fields": [
            {"fieldName": "session_id", "aliasName": "Session ID"},
            {"fieldName": "view_number", "aliasName": "View number in session"},
            {"fieldName": "custom_var", "customVarPosition": 2, "aliasName": "My Custom Variable of index 2"},
            {"fieldName": "dynamic_var", "dynamicVarKey": "AB Test", "aliasName": "Experiment"},
        ],
        "deviceLabel": "desktop",
    }
    if segment_id is not None:
        body["segmentId"] = segment_id
    return body


def make_segment(api, tenant) -> int:
    with transaction(api.context.sessions) as session:
        return admin.create_segment(
            session,
            project_id=tenant.project_id,
            name="France",
            filter={"field": "country_code", "op": "eq", "value": "FR"},
            now=api.clock(),
        ).id


def create(http, tenant, body) -> int:
    answer = http.post("/v1/exports", json=body, headers=tenant.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["success"] is True and set(answer.json()["payload"]) == {"jobId"}
    return answer.json()["payload"]["jobId"]

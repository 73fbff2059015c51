"""The job form of the console <-> the body of `POST /v1/exports`. Pure.

Each input is named by the JSON path the API's validator reports its errors under (`name`, `frequency.value`,
`fields[2].aliasName`, ...): the form becomes the body by reading the names as paths, and an error of the validator
lands next to the input of the same name. The body then goes through the API's own validator and job creation,
so a job made in the console is one the API would have made from that body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dataexport.domain.enums import Frequency
from dataexport.domain.timeparse import format_instant
from dataexport.errors import FieldError

_FIELD_INPUT = re.compile(r"fields\[(\d{1,3})\]\.(fieldName|aliasName|customVarPosition|dynamicVarKey)")
_PATH_PUNCTUATION = re.compile(r"[\[\].]+")
FIELD_PARTS = ("fieldName", "aliasName", "customVarPosition", "dynamicVarKey")
JOB_INPUTS = (
    "name",
    "format",
    "scope",
    "frequency.value",
    "frequency.dateRange.from",
    "frequency.dateRange.to",
    "deviceLabel",
    "segmentId",
)


def input_id(path: str) -> str:
    """The HTML id of the input named `path`: `fields[2].aliasName` -> `fields-2-aliasName`."""
    return _PATH_PUNCTUATION.sub("-", path).strip("-")


def _int_or_text(raw: str) -> int | str:
    # Digits become the number the API's clients send; anything else goes as typed, for the validator to name.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 15 else raw


def body_from_form(form: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The API body the posted form describes. Empty optional inputs are left out, as a client would leave them."""
    values: dict[str, str] = {}
    rows: dict[int, dict[str, str]] = {}
    for name, value in form:
        if (match := _FIELD_INPUT.fullmatch(name)) is not None:
            rows.setdefault(int(match.group(1)), {})[match.group(2)] = value.strip()
        else:
            values.setdefault(name, value.strip())
    body: dict[str, Any] = {}
    for key in ("name", "format", "scope", "deviceLabel"):
        if values.get(key):
            body[key] = values[key]
    frequency: dict[str, Any] = {"value": values.get("frequency.value", "")}
    if frequency["value"] == Frequency.ONCE.value:
        bounds = {
            k: values[f"frequency.dateRange.{k}"] for k in ("from", "to") if values.get(f"frequency.dateRange.{k}")
        }
        frequency["dateRange"] = bounds
    body["frequency"] = frequency
    fields: list[dict[str, Any]] = []
    for _, row in sorted(rows.items()):
        entry: dict[str, Any] = {"fieldName": row.get("fieldName", "")}
        if row.get("aliasName"):
            entry["aliasName"] = row["aliasName"]
        if row.get("customVarPosition"):
            entry["customVarPosition"] = _int_or_text(row["customVarPosition"])
        if row.get("dynamicVarKey"):
            entry["dynamicVarKey"] = row["dynamicVarKey"]
        fields.append(entry)
    body["fields"] = fields
    if values.get("segmentId"):
        body["segmentId"] = _int_or_text(values["segmentId"])
    return body


@dataclass
class FormState:
    """What the form shows: the values (a new form's defaults, or what was posted) and the validator's errors by
    input name; errors naming no input of the form (`body`, `fields`) are shown above it."""

    values: dict[str, str]
    fields: list[dict[str, str]]
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def general_errors(self) -> list[tuple[str, str]]:
        known = set(self.values) | {f"fields[{i}].{part}" for i in range(len(self.fields)) for part in FIELD_PARTS}
        return [(name, msg) for name, messages in self.errors.items() if name not in known for msg in messages]


def new_form(now: datetime, scope: str = "sessions") -> FormState:
    """Defaults: a daily CSV job; a once job would export yesterday (UTC), written as the vendor's example writes it."""
    day = (now - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    values = {
        "name": "",
        "format": "CSV",
        "scope": scope if scope in ("sessions", "views") else "sessions",
        "frequency.value": "daily",
        "frequency.dateRange.from": format_instant(day) or "",
        "frequency.dateRange.to": format_instant(day + timedelta(days=1) - timedelta(milliseconds=1)) or "",
        "deviceLabel": "all",
        "segmentId": "",
    }
    return FormState(values=values, fields=[])


def posted_form(body: Mapping[str, Any], posted: Iterable[tuple[str, str]], errors: list[FieldError]) -> FormState:
    """The form again as it was posted, with the validator's errors, its rows numbered as the body numbered them."""
    raw = dict(posted)
    values = {key: raw.get(key, "") for key in JOB_INPUTS}
    fields = [{part: str(entry.get(part, "")) for part in FIELD_PARTS} for entry in body.get("fields", [])]
    by_name: dict[str, list[str]] = {}
    for error in errors:
        by_name.setdefault(error.field, []).append(error.message)
    return FormState(values=values, fields=fields, errors=by_name)

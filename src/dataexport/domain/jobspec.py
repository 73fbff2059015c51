"""Validation of a `POST /v1/exports` body into a JobSpec (contract.md section 4). Pure: `now` is passed in.

Every rule reports the JSON path of the offending value (`fields[2].customVarPosition`), and all problems
of a request are reported at once, so a client can fix its request in one go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from dataexport import catalog
from dataexport.domain.enums import DeviceLabel, Format, Frequency, Scope, parse_enum
from dataexport.domain.fieldspec import CUSTOM_VAR, DYNAMIC_VAR, FieldSpec
from dataexport.domain.schedule import validate_once_range
from dataexport.domain.timeparse import parse_instant
from dataexport.errors import FieldError, ValidationFailed

MAX_NAME = 255
MAX_SCOPE = 255
MAX_ALIAS = 255
MAX_DYNAMIC_VAR_KEY = 512
MAX_FIELDS = 200
CUSTOM_VAR_POSITIONS = range(1, 21)
MAX_INT_LIKE = 2**53
# Problems reported per request: enough to fix a request in one go, never a reply bigger than the body.
MAX_ERRORS = 50

# Text no column can hold (PostgreSQL refuses NUL; a lone surrogate is not encodable as UTF-8), and control
# characters, which have no place in a job's name or in a column header (a line break splits a CSV header).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

TOP_LEVEL_KEYS = {"name", "format", "scope", "frequency", "fields", "deviceLabel", "segmentId"}
FREQUENCY_KEYS = {"value", "dateRange"}
DATE_RANGE_KEYS = {"from", "to"}
FIELD_KEYS = {"fieldName", "aliasName", "customVarPosition", "dynamicVarKey"}

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class JobSpec:
    name: str
    format: Format
    scope: Scope
    frequency: Frequency
    fields: tuple[FieldSpec, ...]
    device_label: DeviceLabel
    segment_id: int | None
    range_from: datetime | None = None
    range_to: datetime | None = None


class _Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.more = False

    def add(self, field: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(FieldError(field, message))
        else:
            self.more = True

    def extend(self, errors: list[FieldError]) -> None:
        for e in errors:
            self.add(e.field, e.message)

    def listed(self) -> list[FieldError]:
        if self.more:
            return [*self.errors, FieldError("body", f"has more problems: only the first {MAX_ERRORS} are listed")]
        return self.errors

    def unknown_keys(self, obj: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in obj:
            if key not in allowed:
                shown = key if len(key) <= 64 else key[:64] + "..."
                self.add(f"{prefix}{shown}", "is not a known field")


def _enum(
    c: _Collector, raw: Any, enum_cls: type[_E], field: str, *, required: bool = True, max_len: int = 64
) -> _E | None:
    if raw is None:
        if required:
            c.add(field, "is required")
        return None
    if not isinstance(raw, str):
        c.add(field, "must be a string")
        return None
    if len(raw) > max_len:
        c.add(field, f"must be at most {max_len} characters")
        return None
    member = parse_enum(enum_cls, raw)
    if member is None:
        c.add(field, "must be one of " + ", ".join(m.value for m in enum_cls))
    return member


def parse_int_like(raw: Any) -> int | None:
    """A number or a numeric string (clients send both); never a bool, a float with decimals, or text."""
    if isinstance(raw, bool):
        return None
    value = None
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str) and raw.strip().lstrip("-").isascii() and raw.strip().lstrip("-").isdigit():
        value = int(raw.strip()) if len(raw.strip()) <= 18 else None
    # Ids beyond 2**53 exist nowhere (JSON numbers, database keys): refuse them rather than overflow later.
    return value if value is not None and abs(value) <= MAX_INT_LIKE else None


def _text_problem(raw: str, max_len: int, *, controls_allowed: bool) -> str | None:
    if not raw.strip():
        return "must not be empty"
    if len(raw) > max_len:
        return f"must be at most {max_len} characters"
    if _UNSTORABLE.search(raw):
        return "must not contain NUL characters or unpaired surrogates (\\u0000, \\ud800...)"
    if not controls_allowed and _CONTROL.search(raw):
        return "must not contain control characters (line breaks, tabs...)"
    return None


def _optional_text(c: _Collector, raw: Any, field: str, max_len: int, *, controls_allowed: bool) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        c.add(field, "must be a string")
        return None
    problem = _text_problem(raw, max_len, controls_allowed=controls_allowed)
    if problem:
        c.add(field, problem)
        return None
    return raw


def _field(c: _Collector, raw: Any, i: int, scope: Scope | None) -> FieldSpec | None:
    at = f"fields[{i}]"
    if not isinstance(raw, dict):
        c.add(at, "must be an object")
        return None
    c.unknown_keys(raw, FIELD_KEYS, f"{at}.")
    name = raw.get("fieldName")
    if name is None:
        c.add(f"{at}.fieldName", "is required")
        return None
    if not isinstance(name, str):
        c.add(f"{at}.fieldName", "must be a string")
        return None
    if scope is not None and catalog.lookup(scope, name) is None:
        shown = name if len(name) <= 64 else name[:64] + "..."
        c.add(f"{at}.fieldName", f"'{shown}' is not an exportable field of scope {scope.value}")
        return None
    alias = _optional_text(c, raw.get("aliasName"), f"{at}.aliasName", MAX_ALIAS, controls_allowed=False)

    position = None
    raw_position = raw.get("customVarPosition")
    if name == CUSTOM_VAR:
        if raw_position is None:
            c.add(f"{at}.customVarPosition", "is required when fieldName is custom_var")
        else:
            position = parse_int_like(raw_position)
            if position is None or position not in CUSTOM_VAR_POSITIONS:
                c.add(f"{at}.customVarPosition", "must be between 1 and 20")
                position = None
    elif raw_position is not None:
        c.add(f"{at}.customVarPosition", "is only allowed when fieldName is custom_var")

    key = None
    raw_key = raw.get("dynamicVarKey")
    if name == DYNAMIC_VAR:
        if raw_key is None:
            c.add(f"{at}.dynamicVarKey", "is required when fieldName is dynamic_var")
        else:
            # Keys are matched against the ingested data's, whatever they hold: only unstorable text is refused.
            key = _optional_text(c, raw_key, f"{at}.dynamicVarKey", MAX_DYNAMIC_VAR_KEY, controls_allowed=True)
    elif raw_key is not None:
        c.add(f"{at}.dynamicVarKey", "is only allowed when fieldName is dynamic_var")

    if (name == CUSTOM_VAR and position is None) or (name == DYNAMIC_VAR and key is None):
        return None
    return FieldSpec(field_name=name, alias_name=alias, custom_var_position=position, dynamic_var_key=key)


def _fields(c: _Collector, raw: Any, scope: Scope | None) -> tuple[FieldSpec, ...]:
    if raw is None:
        c.add("fields", "is required")
        return ()
    if not isinstance(raw, list):
        c.add("fields", "must be an array of field objects")
        return ()
    if not raw:
        c.add("fields", "must not be empty")
        return ()
    if len(raw) > MAX_FIELDS:
        c.add("fields", f"must have at most {MAX_FIELDS} items")
        return ()
    specs: list[FieldSpec] = []
    seen_names: set[str] = set()
    seen_outputs: set[str] = set()
    for i, item in enumerate(raw):
        spec = _field(c, item, i, scope)
        if spec is None:
            continue
        if spec.field_name not in (CUSTOM_VAR, DYNAMIC_VAR):
            if spec.field_name in seen_names:
                c.add(f"fields[{i}].fieldName", f"'{spec.field_name}' is given more than once")
                continue
            seen_names.add(spec.field_name)
        if spec.output_name in seen_outputs:
            where = "aliasName" if spec.alias_name else "fieldName"
            c.add(f"fields[{i}].{where}", f"output column name '{spec.output_name[:64]}' is used twice")
            continue
        seen_outputs.add(spec.output_name)
        specs.append(spec)
    return tuple(specs)


def _frequency(
    c: _Collector, raw: Any, now: datetime, retention_days: int
) -> tuple[Frequency | None, datetime | None, datetime | None]:
    if raw is None:
        c.add("frequency", "is required")
        return None, None, None
    if not isinstance(raw, dict):
        c.add("frequency", "must be an object")
        return None, None, None
    c.unknown_keys(raw, FREQUENCY_KEYS, "frequency.")
    freq = _enum(c, raw.get("value"), Frequency, "frequency.value")
    if freq is not Frequency.ONCE:
        # dateRange is only read for once jobs; recurring jobs compute their own windows.
        return freq, None, None
    date_range = raw.get("dateRange")
    if date_range is None:
        c.add("frequency.dateRange", "is required when frequency.value is once")
        return freq, None, None
    if not isinstance(date_range, dict):
        c.add("frequency.dateRange", "must be an object with from and to")
        return freq, None, None
    c.unknown_keys(date_range, DATE_RANGE_KEYS, "frequency.dateRange.")
    bounds: dict[str, datetime] = {}
    for key in ("from", "to"):
        field = f"frequency.dateRange.{key}"
        value = date_range.get(key)
        if value is None:
            c.add(field, "is required when frequency.value is once")
            continue
        try:
            bounds[key] = parse_instant(value, field)
        except ValidationFailed as exc:
            c.extend(exc.errors)
    if len(bounds) == 2:
        c.extend(validate_once_range(bounds["from"], bounds["to"], now=now, retention_days=retention_days))
    return freq, bounds.get("from"), bounds.get("to")


def parse_job_spec(raw: Any, *, now: datetime, retention_days: int) -> JobSpec:
    """Validate a create-job body. Raises ValidationFailed listing every problem; never anything else."""
    c = _Collector()
    if not isinstance(raw, dict):
        raise ValidationFailed("The request body must be a JSON object.", [FieldError("body", "must be an object")])
    c.unknown_keys(raw, TOP_LEVEL_KEYS, "")

    name = raw.get("name")
    if name is None:
        c.add("name", "is required")
    elif not isinstance(name, str):
        c.add("name", "must be a string")
    elif problem := _text_problem(name, MAX_NAME, controls_allowed=False):
        c.add("name", problem)

    fmt = _enum(c, raw.get("format"), Format, "format")
    scope = Scope.SESSIONS if raw.get("scope") is None else _enum(c, raw["scope"], Scope, "scope", max_len=MAX_SCOPE)
    freq, range_from, range_to = _frequency(c, raw.get("frequency"), now, retention_days)
    fields = _fields(c, raw.get("fields"), scope)
    device = _enum(c, raw.get("deviceLabel"), DeviceLabel, "deviceLabel")

    segment_id = None
    if raw.get("segmentId") is not None:
        segment_id = parse_int_like(raw["segmentId"])
        if segment_id is None or segment_id <= 0:
            c.add("segmentId", "must be a positive integer id of a segment of this project")
            segment_id = None

    if c.errors:
        first = c.errors[0]
        raise ValidationFailed(f"Invalid export job: {first.field} {first.message}.", c.listed())
    # Each required value that is missing or invalid added an error above, so none is None here.
    assert isinstance(name, str) and fmt is not None and scope is not None and freq is not None and device is not None
    return JobSpec(
        name=name,
        format=fmt,
        scope=scope,
        frequency=freq,
        fields=fields,
        device_label=device,
        segment_id=segment_id,
        range_from=range_from,
        range_to=range_to,
    )

"""A columnar fast path for whole batches of hits. Pure: no I/O.

`hits.validate_hit` checks one hit at a time and words every error; it costs tens of microseconds per
hit. Here a batch is checked column by column (type sets, Arrow min/max and lengths), which is several
times faster. This path only ever *proves a batch valid*: anything it is not sure about (a bad value,
a repeated custom-var position, more than 40 dynamic keys, mixed time formats...) makes it answer
None, and the caller runs the per-hit validator, which decides and explains. So the rules live in
`hits`; this module must accept nothing that `hits` rejects and build exactly the rows `hits` builds,
which a property test checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataexport.domain.retention import expired_before
from dataexport.ingest.hits import HitBatch, HitError, ids_of, validate_hits
from dataexport.ingest.hits_rules import (
    CUSTOM_VAR_SCOPES,
    FLOAT,
    INT,
    MAX_CUSTOM_VAR_KEY,
    MAX_DYNAMIC_KEY,
    MAX_DYNAMIC_KEYS,
    MAX_DYNAMIC_NUMBER,
    MAX_EPOCH_MS,
    MAX_LIST,
    MAX_VAR_VALUE,
    NESTED,
    NESTED_REQUIRED,
    REQUIRED,
    SCALARS,
    STR,
    TS,
)
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

ALLOWED = frozenset(SCALARS) | frozenset(NESTED) | {"custom_vars", "dynamic_vars"}
_NONE = type(None)
_TS_TYPE = pa.timestamp("ms", tz="UTC")
_TS_US = pa.timestamp("us", tz="UTC")


_LIST_COLUMNS = frozenset(f.name for f in PAGEVIEW_SCHEMA if pa.types.is_list(f.type))
_EMPTY = {name: pa.array([], PAGEVIEW_SCHEMA.field(name).type.value_type) for name in _LIST_COLUMNS}


class _Doubt(Exception):
    """Something this path does not prove valid: hand the batch to the per-hit validator."""


def validate_to_table(hits: list, start_index: int = 0) -> tuple[pa.Table, HitBatch]:
    """Validated hits as a table, and the rejections (with every error) from the per-hit validator.

    The returned HitBatch carries errors and the rejected count only; its rows are in the table.
    """
    table = validate_batch(hits)
    if table is not None:
        return table, HitBatch()
    batch = validate_hits(hits, start_index)
    table = pa.Table.from_pylist(batch.rows, schema=PAGEVIEW_SCHEMA)
    return table, HitBatch(errors=batch.errors, rejected=batch.rejected)


def validate_batch(hits: list) -> pa.Table | None:
    """The batch as a table of PAGEVIEW_SCHEMA (project_id and ingested_at null), or None when in doubt."""
    if not hits or not all(type(h) is dict for h in hits):
        return None
    keys = set().union(*hits)
    if not keys <= ALLOWED:
        return None
    try:
        return _build(hits, keys)
    except (_Doubt, pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


def _transpose(hits: list, keys: set) -> dict[str, list]:
    """Columns by key. When every hit has every key (one client, one shape) itemgetter + zip do it in C."""
    names = sorted(keys)
    if all(len(h) == len(names) for h in hits):
        if len(names) == 1:
            return {names[0]: [h[names[0]] for h in hits]}
        return dict(zip(names, map(list, zip(*map(itemgetter(*names), hits), strict=True)), strict=True))
    return {name: [h.get(name) for h in hits] for name in names}


def _build(hits: list, keys: set) -> pa.Table:
    n = len(hits)
    for name in REQUIRED:
        if name not in keys:
            raise _Doubt
    raw = _transpose(hits, keys)
    columns: dict[str, pa.Array] = {}
    for name, values in raw.items():
        check = SCALARS.get(name)
        if check is not None:
            columns[name] = _scalar(values, check, required=name in REQUIRED)
    if pc.any(pc.less(columns["view_time"], columns["session_time"])).as_py():
        raise _Doubt
    for name, checks in NESTED.items():
        if name in raw:
            columns[name] = _nested(raw[name], checks, NESTED_REQUIRED.get(name, ()), n)
    if "custom_vars" in raw:
        columns["custom_vars"] = _custom_vars(raw["custom_vars"], n)
    if "dynamic_vars" in raw:
        columns["dynamic_vars"] = _dynamic_vars(raw["dynamic_vars"], n)
    user_ids, session_ids = ids_of(raw["user_id_unhashed"], raw["session_number"])
    columns["user_id"] = pa.array(user_ids, pa.uint64())
    computed = pa.array(session_ids, pa.uint64())
    given = columns.get("session_id")
    columns["session_id"] = computed if given is None else pc.coalesce(given.cast(pa.uint64()), computed)
    arrays = []
    for field in PAGEVIEW_SCHEMA:
        col = columns.get(field.name)
        if col is not None:
            arrays.append(col.cast(field.type))
        elif field.name in _LIST_COLUMNS:  # absent lists are [] (as in `hits`), not null
            arrays.append(pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), _EMPTY[field.name]))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=PAGEVIEW_SCHEMA)


def _types(values: list) -> set:
    return set(map(type, values))


def _scalar(values: list, check: tuple[int, float, float], required: bool = False) -> pa.Array:
    kind, lo, hi = check
    types = _types(values)
    if required and _NONE in types:
        raise _Doubt
    types.discard(_NONE)
    if not types:
        return pa.nulls(len(values))
    if kind == STR:
        if types != {str}:
            raise _Doubt
        arr = pa.array(values, pa.string())
        lengths = pc.min_max(pc.utf8_length(arr)).as_py()
        if lengths["max"] > hi or lengths["min"] < lo:
            raise _Doubt
        return arr
    if kind == INT:
        if types != {int}:
            raise _Doubt
        arr = pa.array(values, pa.uint64() if hi >= 2**63 else pa.int64())
        _within(arr, lo, hi)
        return arr
    if kind == FLOAT:
        if not types <= {float, int}:
            raise _Doubt
        if not all(math.isfinite(v) for v in values if v is not None):
            raise _Doubt
        arr = pa.array(values, pa.float64())
        _within(arr, lo, hi)
        return arr
    assert kind == TS
    return _times(values, types)


def _within(arr: pa.Array, lo: float, hi: float) -> None:
    bounds = pc.min_max(arr).as_py()
    if bounds["min"] is not None and (bounds["min"] < lo or bounds["max"] > hi):
        raise _Doubt


_fromiso = datetime.fromisoformat


def _times(values: list, types: set) -> pa.Array:
    if types == {int}:
        arr = pa.array(values, pa.int64())
        _within(arr, 0, MAX_EPOCH_MS)
        return arr.cast(_TS_TYPE)
    if types == {str}:
        parsed = [None if v is None else _fromiso(v) for v in values]  # ValueError -> doubt
    elif types == {datetime}:  # file inputs (Parquet)
        parsed = values
    else:
        raise _Doubt  # mixed formats: rare, left to the per-hit path
    if any(d is not None and d.tzinfo is None for d in parsed):
        raise _Doubt
    arr = pa.array(parsed, _TS_US).cast(_TS_TYPE, safe=False)  # floor to the millisecond, as `hits` does
    _within(arr.cast(pa.int64()), 0, MAX_EPOCH_MS)
    return arr


def _lengths(values: list, n: int) -> tuple[np.ndarray, list]:
    """Offsets of a list column and its flattened entries; None/absent become []."""
    if not _types(values) <= {list, _NONE}:
        raise _Doubt
    lengths = np.fromiter((len(v) if v else 0 for v in values), dtype=np.int32, count=n)
    if n and lengths.max() > MAX_LIST:
        raise _Doubt
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, [e for v in values if v for e in v]


def _entries_of(entries: list, allowed: set) -> set:
    if not all(type(e) is dict for e in entries):
        raise _Doubt
    keys = set().union(*entries)
    if not keys <= allowed:
        raise _Doubt
    return keys


def _struct_list(offsets: np.ndarray, struct: pa.DataType, children: dict[str, pa.Array], total: int) -> pa.Array:
    arrays = [children[f.name].cast(f.type) if f.name in children else pa.nulls(total, f.type) for f in struct]
    values = pa.StructArray.from_arrays(arrays, fields=list(struct))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _nested(values: list, checks: dict, required: tuple, n: int) -> pa.Array:
    offsets, entries = _lengths(values, n)
    struct = PAGEVIEW_SCHEMA.field(_column_of(checks)).type.value_type
    if not entries:
        return _struct_list(offsets, struct, {}, 0)
    keys = _entries_of(entries, set(checks))
    children = {}
    for key in keys:
        children[key] = _scalar([e.get(key) for e in entries], checks[key], required=key in required)
    for key in required:
        if key not in keys:
            raise _Doubt
    return _struct_list(offsets, struct, children, len(entries))


_NESTED_BY_CHECKS = {id(checks): name for name, checks in NESTED.items()}


def _column_of(checks: dict) -> str:
    return _NESTED_BY_CHECKS[id(checks)]


_CUSTOM_VAR = PAGEVIEW_SCHEMA.field("custom_vars").type.value_type
_DYNAMIC_VAR = PAGEVIEW_SCHEMA.field("dynamic_vars").type.value_type


def _custom_vars(values: list, n: int) -> pa.Array:
    offsets, entries = _lengths(values, n)
    if not entries:
        return _struct_list(offsets, _CUSTOM_VAR, {}, 0)
    _entries_of(entries, {"position", "key", "value", "scope"})
    positions = [e.get("position") for e in entries]
    if _types(positions) != {int}:
        raise _Doubt
    position = np.array(positions, dtype=np.int64)
    if position.min() < 1 or position.max() > 20:
        raise _Doubt
    # A position set twice in one hit keeps the last value in `hits`: leave that case to it.
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    if len(np.unique(owner * 32 + position)) != len(position):
        raise _Doubt
    scopes = [e.get("scope", "page") for e in entries]
    if not set(scopes) <= set(CUSTOM_VAR_SCOPES):
        raise _Doubt
    children = {
        "position": pa.array(position),
        "key": _scalar([e.get("key") for e in entries], (STR, 1, MAX_CUSTOM_VAR_KEY), required=True),
        "value": _scalar([e.get("value") for e in entries], (STR, 0, MAX_VAR_VALUE), required=True),
        "scope": pa.array(scopes, pa.string()),
    }
    return _struct_list(offsets, _CUSTOM_VAR, children, len(entries))


def _dynamic_vars(values: list, n: int) -> pa.Array:
    types = _types(values)
    if not types <= {list, dict, _NONE}:
        raise _Doubt
    keys: list = []
    vals: list = []
    lengths = np.zeros(n, dtype=np.int32)
    for i, v in enumerate(values):
        if not v:
            continue
        if type(v) is dict:
            keys.extend(v)
            vals.extend(v.values())
        else:
            for e in v:
                if type(e) is not dict or len(e) != 2 or "key" not in e or "value" not in e:
                    raise _Doubt
                keys.append(e["key"])
                vals.append(e["value"])
        lengths[i] = len(v)
    # Up to 40 entries there can be no 41st distinct key: the cap (first 40 kept) is left to `hits`.
    if n and lengths.max() > MAX_DYNAMIC_KEYS:
        raise _Doubt
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if not keys:
        return _struct_list(offsets, _DYNAMIC_VAR, {}, 0)
    value_types = _types(vals)
    if not value_types <= {str, int}:
        raise _Doubt
    strings = [v if type(v) is str else None for v in vals]
    numbers = [v if type(v) is int else None for v in vals]
    children = {
        "key": _scalar(keys, (STR, 1, MAX_DYNAMIC_KEY), required=True),
        "string_value": _scalar(strings, (STR, 0, MAX_VAR_VALUE)) if str in value_types else None,
        "number_value": _scalar(numbers, (INT, 0, MAX_DYNAMIC_NUMBER)) if int in value_types else None,
    }
    return _struct_list(offsets, _DYNAMIC_VAR, {k: v for k, v in children.items() if v is not None}, len(keys))


# -- when a hit may have happened ------------------------------------------------------------------------------

MS_PER_DAY = 86_400_000
DEFAULT_MAX_FUTURE_SECONDS = 300  # the default of Settings.ingest_max_future_seconds, for callers without settings


@dataclass(frozen=True)
class HitWindow:
    """The times a stored hit may carry, checked on whole tables after validation (the rules of `hits` hold
    whatever the time; this depends on `now` and on the project).

    A hit must not be later than `now` plus some clock skew: a tracker's clock may run a little fast, but a
    timestamp of 9999 would make a partition no export ever reads. With a retention, its session must not start
    before the first day the project keeps: the retention sweep would delete it, and until then it only makes
    partitions (3,000 hits on 3,000 days once made 3,000 files in one batch).
    """

    now_ms: int
    max_future_seconds: int
    retention_days: int | None = None
    first_kept_day_ms: int | None = None  # the first instant of the first session day kept; None: no bound

    @classmethod
    def at(
        cls, now: datetime, *, max_future_seconds: int = DEFAULT_MAX_FUTURE_SECONDS, retention_days: int | None = None
    ) -> HitWindow:
        first = None
        if retention_days is not None:
            day = expired_before(retention_days, now)  # the retention sweep's own bound
            first = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        return cls(int(now.timestamp() * 1000), max_future_seconds, retention_days, first)

    @property
    def latest_ms(self) -> int:
        return self.now_ms + self.max_future_seconds * 1000

    def too_late(self) -> str:
        latest = _iso(self.latest_ms)
        return f"must not be after {latest} (the server's time plus {self.max_future_seconds} s of clock skew)"

    def too_early(self) -> str:
        return (
            f"must not be before {_iso(self.first_kept_day_ms or 0)}: the project keeps {self.retention_days} "
            "days of data, older sessions are deleted"
        )


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _epoch_ms(table: pa.Table, column: str) -> np.ndarray:
    return pc.cast(table.column(column), pa.int64()).to_numpy()


def refuse_outside(
    table: pa.Table, window: HitWindow, numbers: Sequence[int] | np.ndarray | None = None
) -> tuple[pa.Table, list[HitError], int]:
    """The rows of `table` (validated hits) within `window`, the errors of the others and their count.

    `numbers[i]` is the index the errors give row i (its position among the request's hits, or its record number in
    a file); None: row i is hit i. Vectorised: two comparisons a column; Python only for the refused rows.
    """
    if table.num_rows == 0:
        return table, [], 0
    session = _epoch_ms(table, "session_time")
    view = _epoch_ms(table, "view_time")
    late_session = session > window.latest_ms
    late_view = view > window.latest_ms  # view_time >= session_time: also every late session's
    early = session < window.first_kept_day_ms if window.first_kept_day_ms is not None else None
    bad = late_view if early is None else late_view | early
    if not bad.any():
        return table, [], 0
    errors = []
    late_message = window.too_late()
    early_message = window.too_early() if early is not None else ""
    for i in np.flatnonzero(bad).tolist():
        number = int(numbers[i]) if numbers is not None else i
        if early is not None and early[i]:
            errors.append(HitError(number, "session_time", early_message))
        if late_session[i]:
            errors.append(HitError(number, "session_time", late_message))
        if late_view[i]:
            errors.append(HitError(number, "view_time", late_message))
    return table.filter(pa.array(~bad)), errors, int(bad.sum())


def session_days(table: pa.Table) -> int:
    """How many UTC session days (partitions of the store) the rows touch."""
    return len(np.unique(_epoch_ms(table, "session_time") // MS_PER_DAY)) if table.num_rows else 0

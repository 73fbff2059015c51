"""Build the DuckDB extraction query of one export window.

Shape (the CTEs are inlined by DuckDB, so projections and filters reach the Parquet scan):

    pv    pageviews of the project, of sessions started in [start, end), of the devices, of the slice
    sess  one row per session, GROUP BY session, with the needed primitives (+ HAVING <segment filter>)
    src   sessions: sess
          views:    one row per pageview, joined to its session's row in sess (an inner join: a segment
                    drops the views of the sessions outside it); just pv when no session column is needed
    SELECT formatted columns FROM (SELECT values, sort keys FROM src) _q [ORDER BY sort keys]

Views get their session's columns from a GROUP BY and a hash join rather than from window aggregates:
a window partitions and sorts every pageview by session, a GROUP BY keeps one small state per session
(measured: the every-field views export ran several times faster, in less memory).

A slice (query/slices.py) narrows pv to the sessions of one key range, so that the aggregate of a
large window is computed a bounded part at a time; every session lies wholly in one slice.

Field values are computed under internal names (_c0, _c1...) and renamed only in the outermost select,
with references qualified by `_q.`, so an alias can never capture or shadow another column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dataexport.catalog.fields import DATE, DYNAMIC, FLOAT, LIST, LIST_TIMESTAMP, SCALAR, TIMESTAMP, lookup
from dataexport.catalog.primitives import column_name, primitive_sql
from dataexport.catalog.sql import Sql, join, quote_ident, render
from dataexport.domain.enums import Scope
from dataexport.domain.fieldspec import CUSTOM_VAR, DYNAMIC_VAR, FieldSpec
from dataexport.domain.segment_filter import SegmentFilter
from dataexport.errors import FieldError, ValidationFailed, validation_error
from dataexport.query.segments_sql import compile_segment_filter
from dataexport.query.slices import SessionSlice
from dataexport.warehouse.batches import MS_PER_DAY

Output = Literal["typed", "csv", "jsonl"]
OUTPUTS = ("typed", "csv", "jsonl")
JSONL_COLUMN = "line"

_SESSION_KEY = "user_id_unhashed, session_number"
_ISO_MS = "'%Y-%m-%dT%H:%M:%S.%gZ'"


@dataclass(frozen=True)
class ExportQuery:
    sql: str  # DuckDB SQL with `?` placeholders
    params: list  # parameter values, in order
    columns: list[str]  # output column names, in order (FieldSpec.output_name)
    # Aggregates computed per session (0: no GROUP BY at all); what a slice's memory grows with.
    session_aggregates: int = 0


@dataclass
class _Column:
    value: Sql  # over the columns of src
    kind: str
    session_extra: Sql | None = None  # an aggregate this field adds to sess (named _v{i}), e.g. a custom var


# ---------------------------------------------------------------- validation


def _check_inputs(source, project_id, scope, fields, window_start, window_end, timezone, device_ids, output):
    if not isinstance(source, Sql):
        raise validation_error("source", "must be a relation (Sql)")
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        raise validation_error("projectId", "must be an integer")
    if not isinstance(scope, Scope):
        raise validation_error("scope", "must be sessions or views")
    if output not in OUTPUTS:
        raise validation_error("output", f"must be one of {', '.join(OUTPUTS)}")
    for name, value in (("startDate", window_start), ("endDate", window_end)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise validation_error(name, "must be a timezone-aware datetime")
    if window_end < window_start:
        raise validation_error("endDate", "must not be before startDate")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise validation_error("timezone", "must be an IANA time zone name") from exc
    if device_ids is not None and not all(isinstance(d, int) and not isinstance(d, bool) for d in device_ids):
        raise validation_error("deviceLabel", "device ids must be integers")
    if not fields:
        raise validation_error("fields", "must not be empty")
    seen: set[str] = set()
    errors: list[FieldError] = []
    for i, spec in enumerate(fields):
        errors.extend(_check_field(i, spec, scope))
        name = spec.output_name
        if name in seen:
            errors.append(FieldError(f"fields[{i}].aliasName", "output column name already used"))
        if "\x00" in name:
            errors.append(FieldError(f"fields[{i}].aliasName", "must not contain NUL characters"))
        seen.add(name)
    if errors:
        raise ValidationFailed(f"Invalid value for {errors[0].field}: {errors[0].message}.", errors)


def _check_field(i: int, spec: FieldSpec, scope: Scope) -> list[FieldError]:
    if lookup(scope, spec.field_name) is None:
        return [FieldError(f"fields[{i}].fieldName", f"unknown field for scope {scope.value}")]
    pos = spec.custom_var_position
    if spec.field_name == CUSTOM_VAR and (not isinstance(pos, int) or isinstance(pos, bool) or not 1 <= pos <= 20):
        return [FieldError(f"fields[{i}].customVarPosition", "must be between 1 and 20")]
    key = spec.dynamic_var_key
    if spec.field_name == DYNAMIC_VAR and (not isinstance(key, str) or not key):
        return [FieldError(f"fields[{i}].dynamicVarKey", "must be a non-empty string")]
    return []


# ---------------------------------------------------------------- per-field plans


def _custom_var(i: int, position: int, scope: Scope) -> _Column:
    at_position = "list_filter(custom_vars, lambda _c: _c.position = ?)[-1].value"
    if scope is Scope.SESSIONS:
        # The last value set in the session (arg_max skips views that did not set it).
        return _Column(Sql(f"_v{i}"), SCALAR, Sql(f"arg_max({at_position}, view_number)", [position]))
    # The view's own value, else the session's last session-scoped value. (The latest one "so far" would
    # need a growing-frame window over every pageview, at several times the cost of this.)
    session_scoped = "list_filter(custom_vars, lambda _c: _c.position = ? AND _c.scope = 'session')[-1].value"
    carried = Sql(f"arg_max({session_scoped}, view_number)", [position])
    return _Column(Sql(f"coalesce({at_position}, _v{i})", [position]), SCALAR, carried)


def _dynamic_var(i: int, key: str, scope: Scope) -> _Column:
    entry = "list_filter(dynamic_vars, lambda _d: _d.key = ?)[1]"
    if scope is Scope.SESSIONS:  # the last value set in the session
        return _Column(Sql(f"_v{i}"), DYNAMIC, Sql(f"arg_max({entry}, view_number)", [key]))
    return _Column(Sql(entry, [key]), DYNAMIC)  # the view's own


def _plan(i: int, spec: FieldSpec, scope: Scope, timezone: str, needed: set[str]) -> _Column:
    if spec.field_name == CUSTOM_VAR:
        return _custom_var(i, spec.custom_var_position, scope)
    if spec.field_name == DYNAMIC_VAR:
        return _dynamic_var(i, spec.dynamic_var_key, scope)
    field = lookup(scope, spec.field_name)
    return _Column(render(field.sql_for(scope), tz=timezone, needed=needed), field.kind)


def _iso(ref: str) -> str:
    # UTC wall time from the epoch: independent of the connection's TimeZone and 2x faster than timezone().
    return f"strftime(make_timestamp(epoch_us({ref})), {_ISO_MS})"


def _format(kind: str, ref: str, output: Output) -> str:
    """The output cell of a value: natural type (typed), CSV-ready, or a JSON-ready value (jsonl)."""
    if kind == DYNAMIC:
        if output == "jsonl":  # numbers stay JSON numbers
            string, number = f"{ref}.string_value", f"{ref}.number_value"
            return f"CASE WHEN {string} IS NOT NULL THEN to_json({string}) ELSE to_json({number}) END"
        return f"coalesce({ref}.string_value, CAST({ref}.number_value AS VARCHAR))"
    if output == "typed":
        return ref
    if kind == FLOAT:
        # FLOAT -> DOUBLE directly gives 0.10000000149011612; via its shortest text it stays 0.1.
        return f"CAST(CAST({ref} AS VARCHAR) AS DOUBLE)"
    if kind == TIMESTAMP:
        return _iso(ref)
    if kind == DATE:
        return f"strftime({ref}, '%Y-%m-%d')"
    if kind == LIST_TIMESTAMP:
        ref = f"list_transform({ref}, lambda _t: {_iso('_t')})"
    if kind in (LIST, LIST_TIMESTAMP) and output == "csv":
        return f"CAST(to_json({ref}) AS VARCHAR)"
    return ref


def _pageviews(source: Sql, project_id, window_start, window_end, device_ids, session_slice) -> Sql:
    conditions = [
        Sql("project_id = ? AND session_time >= ? AND session_time < ?", [project_id, window_start, window_end])
    ]
    if device_ids is not None:
        placeholders = ", ".join("?" for _ in device_ids)
        conditions.append(Sql(f"device_id IN ({placeholders})", list(device_ids)) if device_ids else Sql("false"))
    if session_slice is not None:
        conditions.append(_slice_predicate(session_slice))
    where = join(conditions, " AND ")
    return Sql(f"SELECT * FROM {source.text} WHERE {where.text}", source.params + where.params)


def _slice_predicate(s: SessionSlice) -> Sql:
    # A typed parameter keeps the comparison on the column's own type, so DuckDB prunes row groups by their
    # statistics (a user_id bound above 2^63 would otherwise widen the comparison to HUGEINT).
    kind = "UBIGINT" if s.column == "user_id" else "TIMESTAMPTZ"
    parts = [Sql(f"{s.column} >= CAST(? AS {kind})", [s.low])]
    if s.high is not None:
        parts.append(Sql(f"{s.column} < CAST(? AS {kind})", [s.high]))
    return join(parts, " AND ")


def _sessions(plans: list[_Column], needed: set[str], segment: Sql | None) -> Sql:
    """One row per session of pv: its key and the aggregates the fields need (HAVING the segment filter)."""
    cols = [Sql(f"{primitive_sql(p)} AS {column_name(p)}") for p in sorted(needed)]
    cols += [
        Sql(f"{c.session_extra.text} AS _v{i}", c.session_extra.params) for i, c in enumerate(plans) if c.session_extra
    ]
    body = join([Sql(_SESSION_KEY), *cols], ", ")
    having = Sql(f" HAVING {segment.text}", segment.params) if segment else Sql("")
    return Sql(f"SELECT {body.text} FROM pv GROUP BY {_SESSION_KEY}{having.text}", body.params + having.params)


def _session_columns(plans: list[_Column], needed: set[str]) -> list[str]:
    return [column_name(p) for p in sorted(needed)] + [f"_v{i}" for i, c in enumerate(plans) if c.session_extra]


def _views_src(plans: list[_Column], needed: set[str], segment: Sql | None) -> Sql:
    carried = _session_columns(plans, needed)
    if not carried and segment is None:
        return Sql("SELECT * FROM pv")
    picked = "".join(f", sess.{c}" for c in carried)
    return Sql(f"SELECT pv.*{picked} FROM pv JOIN sess USING ({_SESSION_KEY})")


# ---------------------------------------------------------------- entry point


def build_export_query(
    *,
    source: Sql,
    project_id: int,
    scope: Scope,
    fields: list[FieldSpec],
    window_start: datetime,
    window_end: datetime,
    timezone: str,
    device_ids: tuple[int, ...] | None,
    segment_filter: SegmentFilter | None,
    output: Output,
    ordered: bool = True,
    session_slice: SessionSlice | None = None,
) -> ExportQuery:
    """The query of the rows of one export window (of one slice of its sessions, when given), read from
    `source`, a relation with the stored pageview columns (`parquet_source`, or a backend's table). Raises
    ValidationFailed on bad input.

    `ordered=False` drops the sort: rows then leave in the order DuckDB produces them. A sort must see every
    row before the first one leaves, so unordered exports run in flat memory and much faster.
    """
    _check_inputs(source, project_id, scope, fields, window_start, window_end, timezone, device_ids, output)
    needed: set[str] = set()
    plans = [_plan(i, spec, scope, timezone, needed) for i, spec in enumerate(fields)]
    segment = compile_segment_filter(segment_filter) if segment_filter else None

    pageviews = _pageviews(source, project_id, window_start, window_end, device_ids, session_slice)
    parts = [Sql("pv AS NOT MATERIALIZED ("), pageviews, Sql(")")]
    if scope is Scope.SESSIONS:
        if ordered:
            needed.add("session_time")  # sort key
        parts += [Sql(", src AS NOT MATERIALIZED ("), _sessions(plans, needed, segment), Sql(")")]
        keys = [column_name("session_time"), "user_id_unhashed", "session_number"]
    else:
        if segment is not None or _session_columns(plans, needed):
            parts += [Sql(", sess AS NOT MATERIALIZED ("), _sessions(plans, needed, segment), Sql(")")]
        parts += [Sql(", src AS NOT MATERIALIZED ("), _views_src(plans, needed, segment), Sql(")")]
        keys = ["session_time", "user_id_unhashed", "session_number", "view_number"]

    values = [Sql(f"{p.value.text} AS _c{i}", p.value.params) for i, p in enumerate(plans)]
    if ordered:
        values += [Sql(f"{k} AS _k{j}") for j, k in enumerate(keys)]
    inner = join(values, ", ")
    columns = [spec.output_name for spec in fields]
    cells = [_format(p.kind, f"_q._c{i}", output) for i, p in enumerate(plans)]
    if output == "jsonl":
        pairs = ", ".join(f"?, {cell}" for cell in cells)
        # Each line ends with its newline here, so the renderer writes the column's bytes as they are: appending
        # it afterwards with Arrow compute cost more than building the objects.
        outer = Sql(f"SELECT CAST(json_object({pairs}) AS VARCHAR) || chr(10) AS {JSONL_COLUMN}", list(columns))
    else:
        named = (f"{cell} AS {quote_ident(name)}" for cell, name in zip(cells, columns, strict=True))
        outer = Sql("SELECT " + ", ".join(named))
    order = ", ".join(f"_q._k{j}" for j in range(len(keys)))
    tail = Sql(f" FROM src) AS _q ORDER BY {order}" if ordered else " FROM src) AS _q")
    body = join([Sql("WITH "), *parts, Sql(" "), outer, Sql(" FROM (SELECT "), inner, tail], "")
    carried = _session_columns(plans, needed)
    grouped = scope is Scope.SESSIONS or segment is not None or bool(carried)
    # The key counts as one: a GROUP BY of keys alone still holds a state per session.
    aggregates = 1 + len(carried) + (segment is not None) if grouped else 0
    # For jsonl the result has the single column `line`; `columns` still lists the keys of each object.
    return ExportQuery(body.text, body.params, columns, aggregates)


def build_pageview_count_query(
    *,
    source: Sql,
    project_id: int,
    window_start: datetime,
    window_end: datetime,
    device_ids: tuple[int, ...] | None,
) -> tuple[str, list]:
    """(session day as days since 1970, pageviews) of each UTC session day an export of the window reads (before
    any segment): what slices are sized by. By epoch arithmetic, not a cast to DATE, which would follow the
    connection's time zone."""
    pageviews = _pageviews(source, project_id, window_start, window_end, device_ids, None)
    return (
        f"SELECT epoch_ms(session_time) // {MS_PER_DAY} AS day, count(*) FROM ({pageviews.text}) GROUP BY day",
        pageviews.params,
    )

"""The fastest path for JSON hits: msgspec decodes and checks types, ranges and lengths in C, in one pass
over the bytes; the decoded objects are then turned into Arrow columns. Pure: no I/O.

Like `hits_columnar`, this path only ever proves a batch valid: on any doubt (a decoding or validation
error, a repeated custom-var position, more than 40 dynamic keys, a view before its session...) it
answers None and the caller takes the per-hit path, which decides and words the errors. The msgspec
types are generated from the `hits_rules` tables. Timestamps are decoded as int | str and the strings
parsed with `datetime.fromisoformat`, exactly as `hits` does, because msgspec's RFC 3339 parser
accepts a few forms Python's does not.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Union

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import Meta
from msgspec.structs import astuple

from dataexport.ingest.hits import ids_of
from dataexport.ingest.hits_rules import (
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
    to_epoch_ms,
)
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA

_TS_MS = pa.timestamp("ms", tz="UTC")
_TS_US = pa.timestamp("us", tz="UTC")
_fromiso = datetime.fromisoformat


def _type(check: tuple[int, float, float]) -> object:
    kind, lo, hi = check
    if kind == STR:
        return Annotated[str, Meta(min_length=int(lo), max_length=int(hi))]
    if kind == INT:  # msgspec bounds must fit int64; uint64 overflow is caught when building the array
        return Annotated[int, Meta(ge=int(lo), le=int(hi))] if hi < 2**63 else Annotated[int, Meta(ge=int(lo))]
    if kind == FLOAT:
        return Annotated[float, Meta(ge=lo, le=hi)]
    return Union[Annotated[int, Meta(ge=0, le=MAX_EPOCH_MS)], str]  # noqa: UP007 - msgspec needs a Union


def _struct(name: str, checks: dict, required: tuple = ()) -> type:
    # Keyword-only, so the fields keep the order of `checks` (the Arrow struct's): `astuple` of an entry is then
    # a struct value Arrow converts as is.
    fields: list = [(k, _type(c)) if k in required else (k, _type(c) | None, None) for k, c in checks.items()]
    return msgspec.defstruct(name, fields, forbid_unknown_fields=True, gc=False, kw_only=True)


_DynValue = Union[  # noqa: UP007 - msgspec needs a Union
    Annotated[str, Meta(max_length=MAX_VAR_VALUE)], Annotated[int, Meta(ge=0, le=MAX_DYNAMIC_NUMBER)]
]
_DynKey = Annotated[str, Meta(min_length=1, max_length=MAX_DYNAMIC_KEY)]
CustomVar = msgspec.defstruct(
    "CustomVar",
    [
        ("position", Annotated[int, Meta(ge=1, le=20)]),
        ("key", Annotated[str, Meta(min_length=1, max_length=MAX_CUSTOM_VAR_KEY)]),
        ("value", Annotated[str, Meta(max_length=MAX_VAR_VALUE)]),
        ("scope", Literal["page", "session"], "page"),
    ],
    forbid_unknown_fields=True,
    gc=False,
)
DynamicVar = msgspec.defstruct(
    "DynamicVar", [("key", _DynKey), ("value", _DynValue)], forbid_unknown_fields=True, gc=False
)


def _list_of(item: object) -> object:
    return Annotated[list[item], Meta(max_length=MAX_LIST)] | None  # type: ignore[valid-type]


_NESTED_STRUCTS = {name: _struct(name, checks, NESTED_REQUIRED.get(name, ())) for name, checks in NESTED.items()}
# Where each nested struct carries instants (int | str, to turn into epoch ms), by field index.
_TIME_FIELDS = {name: tuple(i for i, c in enumerate(checks.values()) if c[0] == TS) for name, checks in NESTED.items()}
_HIT_FIELDS: list = [(k, _type(c)) for k, c in SCALARS.items() if k in REQUIRED]
_HIT_FIELDS += [(k, _type(c) | None, None) for k, c in SCALARS.items() if k not in REQUIRED]
_HIT_FIELDS += [(name, _list_of(s), None) for name, s in _NESTED_STRUCTS.items()]
_HIT_FIELDS += [
    ("custom_vars", _list_of(CustomVar), None),
    (
        "dynamic_vars",
        Union[dict[_DynKey, _DynValue], Annotated[list[DynamicVar], Meta(max_length=MAX_LIST)], None],  # noqa: UP007
        None,
    ),
]
Hit = msgspec.defstruct("Hit", _HIT_FIELDS, forbid_unknown_fields=True, gc=False)
Envelope = msgspec.defstruct("Envelope", [("hits", list[Hit])], forbid_unknown_fields=True, gc=False)
_DECODER = msgspec.json.Decoder(Union[list[Hit], Envelope])  # noqa: UP007
_LINES_DECODER = msgspec.json.Decoder(list[tuple[Hit]])  # JSON Lines, each line wrapped in its own array
_DOUBTS = (msgspec.DecodeError, pa.ArrowException, OverflowError, ValueError, TypeError)


def _check_field_order() -> None:
    """`_nested` and `_custom_vars` hand Arrow the decoded entries as tuples: their fields must be in Arrow's order."""
    for name, struct in {**_NESTED_STRUCTS, "custom_vars": CustomVar}.items():
        if list(struct.__struct_fields__) != PAGEVIEW_SCHEMA.field(name).type.value_type.names:
            raise RuntimeError(f"the fields of {name} are not in the order of the pageview schema")


_check_field_order()


class _Doubt(Exception):
    pass


def decode_batch(body: bytes) -> pa.Table | None:
    """A JSON array of hits (or {"hits": [...]}) as a table of PAGEVIEW_SCHEMA, or None when in doubt.

    project_id and ingested_at are left null for the store to set.
    """
    try:
        decoded = _DECODER.decode(body)
        return _table(decoded.hits if isinstance(decoded, Envelope) else decoded)
    except (_Doubt, *_DOUBTS):
        return None


def decode_lines(lines: list[bytes]) -> pa.Table | None:
    """JSON Lines that hold one hit each, as a table (as `decode_batch`), or None when in doubt.

    Each line goes in its own array, `[[line],[line]...]`, and each array must hold exactly one hit. Joined by
    bare commas into one array, `{hit},{hit}` on one line, or a hit whose custom vars run on into the next line,
    would read as valid hits where the file's lines are not JSON records. A hit has no list of lists, so no
    `],[` can join two lines' pieces into one valid hit.
    """
    try:
        wrapped = _LINES_DECODER.decode(b"[[" + b"],[".join(lines) + b"]]")
        if len(wrapped) != len(lines):  # a line holding `],[` between two hits
            return None
        return _table([one for (one,) in wrapped])
    except (_Doubt, *_DOUBTS):
        return None


def _transpose(objs: list, struct: type) -> dict[str, list]:
    """Decoded structs of one type (at least one) as columns: {field name: [value of each struct]}."""
    names = struct.__struct_fields__
    # astuple yields the fields in declaration order, in C: about twice as fast as attrgetter over the names.
    return dict(zip(names, map(list, zip(*map(astuple, objs), strict=True)), strict=True))


def _table(hits: list) -> pa.Table:
    n = len(hits)
    if n == 0:
        return PAGEVIEW_SCHEMA.empty_table()
    raw = _transpose(hits, Hit)
    columns: dict[str, pa.Array] = {}
    for name, check in SCALARS.items():
        columns[name] = _scalar(raw[name], check, PAGEVIEW_SCHEMA.field(name).type)
    if pc.any(pc.less(columns["view_time"], columns["session_time"])).as_py():
        raise _Doubt
    for name in _NESTED_STRUCTS:
        columns[name] = _nested(raw[name], name, n)
    columns["custom_vars"] = _custom_vars(raw["custom_vars"], n)
    columns["dynamic_vars"] = _dynamic_vars(raw["dynamic_vars"], n)
    columns["user_id"], computed = _ids(raw["user_id_unhashed"], raw["session_number"])
    given = columns["session_id"]
    columns["session_id"] = computed if given.null_count == n else pc.coalesce(given, computed)
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in PAGEVIEW_SCHEMA]
    casts = [a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, PAGEVIEW_SCHEMA, strict=True)]
    return pa.Table.from_arrays(casts, schema=PAGEVIEW_SCHEMA)


def _scalar(values: list, check: tuple, arrow_type: pa.DataType) -> pa.Array:
    kind = check[0]
    if kind in (STR, INT):  # msgspec checked type and range already
        return pa.array(values, arrow_type)
    if kind == FLOAT:
        return pa.array(values, pa.float64())  # then cast, as `hits` rows are
    return _times(values)


# The common shape of ISO 8601 instants, with an explicit zone. Arrow's own parser reads these exactly as
# datetime.fromisoformat does (the same instant, the same refusals of impossible dates and times: see
# tests/unit/test_hits_columnar.py), in C, for the whole column at once; any other shape takes the per-value path.
_ISO_WITH_ZONE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?(Z|[+-]\d{2}:\d{2})$"


def _times(values: list) -> pa.Array:
    types = set(map(type, values))
    types.discard(type(None))
    if types <= {int}:
        return pa.array(values, pa.int64()).cast(_TS_MS)
    if types != {str}:
        raise _Doubt  # epoch ms and strings mixed in one column: rare, left to the per-hit path
    strings = pa.array(values, pa.string())
    if pc.all(pc.match_substring_regex(strings, _ISO_WITH_ZONE)).as_py() is not False:
        arr = strings.cast(_TS_US).cast(_TS_MS, safe=False)  # ArrowInvalid (Feb 30...) -> doubt
    else:
        arr = _times_one_by_one(values)
    bounds = pc.min_max(arr.cast(pa.int64())).as_py()
    if bounds["min"] is not None and (bounds["min"] < 0 or bounds["max"] > MAX_EPOCH_MS):
        raise _Doubt
    return arr


def _times_one_by_one(values: list) -> pa.Array:
    parsed = [None if v is None else _fromiso(v) for v in values]  # ValueError -> doubt
    if any(d is not None and d.tzinfo is None for d in parsed):
        raise _Doubt
    return pa.array(parsed, _TS_US).cast(_TS_MS, safe=False)  # floor to the millisecond, as `hits` does


def _ids(users: list, sessions: list) -> tuple[pa.Array, pa.Array]:
    user_ids, session_ids = ids_of(users, sessions)
    return pa.array(user_ids, pa.uint64()), pa.array(session_ids, pa.uint64())


def _struct_list(offsets: np.ndarray, column: str, children: dict[str, pa.Array], total: int) -> pa.Array:
    struct = PAGEVIEW_SCHEMA.field(column).type.value_type
    arrays = [children[f.name].cast(f.type) if f.name in children else pa.nulls(total, f.type) for f in struct]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.StructArray.from_arrays(arrays, fields=list(struct)))


def _nested(values: list, column: str, n: int) -> pa.Array:
    if not any(values):  # the usual case of errors, transactions, app events...: no entry in the whole batch
        return _struct_list(np.zeros(n + 1, dtype=np.int32), column, {}, 0)
    times = _TIME_FIELDS[column]
    # Few entries in a batch: one conversion by Arrow of entry tuples costs less than a column at a time.
    rows = [[_entry(e, times) for e in v] if v else () for v in values]
    return pa.array(rows, PAGEVIEW_SCHEMA.field(column).type)  # a uint overflow raises: a doubt


def _entry(entry: object, times: tuple[int, ...]) -> tuple:
    """A nested entry as a tuple in Arrow's field order, its instants as epoch ms (as `hits` reads them)."""
    values = astuple(entry)
    if not any(type(values[i]) is str for i in times):
        return values
    values = list(values)
    for i in times:
        if type(values[i]) is str:
            ms = to_epoch_ms(values[i])
            if type(ms) is not int:
                raise _Doubt
            values[i] = ms
    return tuple(values)


def _custom_vars(values: list, n: int) -> pa.Array:
    array = pa.array([list(map(astuple, v)) if v else () for v in values], PAGEVIEW_SCHEMA.field("custom_vars").type)
    # A position set twice in one hit keeps the last value in `hits`: leave that case to it.
    offsets = array.offsets.to_numpy()
    position = array.flatten().field("position").to_numpy().astype(np.int64)
    owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    if len(np.unique(owner * 32 + position)) != len(position):
        raise _Doubt
    return array


def _dynamic_vars(values: list, n: int) -> pa.Array:
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
            keys.extend(e.key for e in v)
            vals.extend(e.value for e in v)
        lengths[i] = len(v)
    # Up to 40 entries there can be no 41st distinct key: the cap (first 40 kept) is left to `hits`.
    if n and lengths.max() > MAX_DYNAMIC_KEYS:
        raise _Doubt
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    if not keys:
        return _struct_list(offsets, "dynamic_vars", {}, 0)
    children = {
        "key": pa.array(keys, pa.string()),
        "string_value": pa.array([v if type(v) is str else None for v in vals], pa.string()),
        "number_value": pa.array([v if type(v) is int else None for v in vals], pa.int64()),
    }
    return _struct_list(offsets, "dynamic_vars", children, len(keys))

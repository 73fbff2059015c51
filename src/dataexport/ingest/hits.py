"""Validation of incoming hits (one pageview each) into stored rows. Pure: no I/O.

A hit is a JSON object whose keys are the columns of PAGEVIEW_SCHEMA, minus the ones the server derives
(project_id from the caller, user_id and ingested_at always; session_id unless given). Every rule is a
hand-written check in tight code because the ingest path must validate tens of thousands of hits per
second per core; a hit with any error is rejected whole, with every error it has. The rules themselves
are tables in `hits_rules`; whole batches first try the faster `hits_columnar`, which falls back here.

Rows are dicts ready for `pa.Table.from_pylist(rows, schema=PAGEVIEW_SCHEMA)`: timestamps as epoch
milliseconds (ints), absent nested lists as [] so readers never meet NULL lists.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from dataexport.ingest.hits_rules import (
    CUSTOM_VAR_SCOPES,
    DERIVED,
    EPOCH,
    INT,
    LIST_COLUMNS,
    MAX_CUSTOM_VAR_KEY,
    MAX_DYNAMIC_KEY,
    MAX_DYNAMIC_KEYS,
    MAX_DYNAMIC_NUMBER,
    MAX_EPOCH_MS,
    MAX_LIST,
    MAX_VAR_VALUE,
    NESTED,
    NESTED_REQUIRED,
    ONE_MS,
    OTHER_LISTS,
    REQUIRED,
    SCALARS,
    STR,
    TS,
    check_value,
)

# Lookup tables of the fast path, derived from SCALARS so the rules live in one place.
_STR_MAX = {k: c[2] for k, c in SCALARS.items() if c[0] == STR}
_NON_EMPTY = frozenset(k for k, c in SCALARS.items() if c[0] == STR and c[1] > 0)
_INT_RANGE = {k: (c[1], c[2]) for k, c in SCALARS.items() if c[0] == INT}
_TS_FIELDS = frozenset(k for k, c in SCALARS.items() if c[0] == TS)
_fromiso = datetime.fromisoformat


@dataclass(frozen=True, slots=True)
class HitError:
    index: int
    field: str
    message: str

    @property
    def reason(self) -> tuple[str, str]:
        """(field without list indexes, message): the key under which rejections are counted."""
        return _INDEX.sub("", self.field), self.message


@dataclass
class HitBatch:
    rows: list[dict] = field(default_factory=list)
    errors: list[HitError] = field(default_factory=list)
    rejected: int = 0


_INDEX = re.compile(r"\[\d+\]")


def user_id_of(user_id_unhashed: str) -> int:
    """First 8 bytes of sha256 as an unsigned 64-bit integer: stable across processes and releases."""
    return int.from_bytes(hashlib.sha256(user_id_unhashed.encode()).digest()[:8], "big")


# A batch repeats the same visitors and sessions; hashing costs as much as validating ten fields, so
# recent results are remembered (bounded: the cache is dropped whole when it fills).
_ID_CACHE: dict[object, int] = {}
_ID_CACHE_MAX = 200_000


def _cached_ids(uid: str, session_number: int) -> tuple[int, int]:
    user_id = _ID_CACHE.get(uid)
    if user_id is None:
        if len(_ID_CACHE) >= _ID_CACHE_MAX:
            _ID_CACHE.clear()
        user_id = _ID_CACHE[uid] = user_id_of(uid)
    key = (uid, session_number)
    session_id = _ID_CACHE.get(key)
    if session_id is None:
        session_id = _ID_CACHE[key] = session_id_of(uid, session_number)
    return user_id, session_id


def ids_of(users: list, sessions: list) -> tuple[list, list]:
    """(user ids, session ids) of a batch's columns of unhashed user ids and session numbers.

    Hashes each distinct miss once: a new visit's views all miss the cache at first, and going back to it for
    each of them cost as much as the hashing (bench/ingest.py's bulk load of new traffic).
    """
    cache = _ID_CACHE
    pairs = list(zip(users, sessions, strict=True))
    user_ids = list(map(cache.get, users))
    session_ids = list(map(cache.get, pairs))
    if None in user_ids or None in session_ids:
        fresh: dict = {}  # this batch's misses (the cache itself may be dropped while they are filled)
        for i, pair in enumerate(pairs):
            if user_ids[i] is None or session_ids[i] is None:
                ids = fresh.get(pair)
                if ids is None:
                    ids = fresh[pair] = _cached_ids(*pair)
                user_ids[i], session_ids[i] = ids
    return user_ids, session_ids


def session_id_of(user_id_unhashed: str, session_number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{user_id_unhashed}\x1f{session_number}".encode()).digest()[:8], "big")


# Stands for a line of JSON Lines that does not parse, so that its number is kept and its error worded.
NOT_JSON = object()


def validate_hit(raw: object, index: int) -> tuple[dict | None, list[HitError]]:
    """One hit -> (row, []) or (None, errors). `index` is the hit's position, echoed in each error."""
    if type(raw) is not dict:
        return None, [HitError(index, "hit", "is not valid JSON" if raw is NOT_JSON else "must be a JSON object")]
    row: dict = {}
    errors: list[HitError] = []
    # Fast path inline (this loop runs ~30 times per hit); anything unusual goes to `check_value`, which
    # also words the error.
    for key, value in raw.items():
        t = type(value)
        if t is str:
            limit = _STR_MAX.get(key)
            if limit is not None and len(value) <= limit and (value or key not in _NON_EMPTY):
                row[key] = value
                continue
            if key in _TS_FIELDS:
                try:
                    dt = _fromiso(value)
                    if dt.tzinfo is not None:
                        ms = (dt - EPOCH) // ONE_MS
                        if 0 <= ms <= MAX_EPOCH_MS:
                            row[key] = ms
                            continue
                except ValueError:
                    pass
        elif t is int:
            bounds = _INT_RANGE.get(key)
            if bounds is not None and bounds[0] <= value <= bounds[1]:
                row[key] = value
                continue
        elif t is list or t is dict:
            if key in NESTED:
                row[key] = _nested(value, key, NESTED[key], NESTED_REQUIRED.get(key, ()), index, errors)
                continue
            if key == "custom_vars":
                row[key] = _custom_vars(value, index, errors)
                continue
            if key == "dynamic_vars":
                row[key] = _dynamic_vars(value, index, errors)
                continue
        elif value is None and (key in SCALARS or key in NESTED or key in OTHER_LISTS):
            row[key] = None
            continue
        check = SCALARS.get(key)
        if check is not None:
            converted, message = check_value(value, check)
            if message is None:
                row[key] = converted
            else:
                errors.append(HitError(index, key, message))
        elif key in NESTED or key in OTHER_LISTS:
            errors.append(HitError(index, key, "must be a list"))
        elif key in DERIVED:
            errors.append(HitError(index, key, "is derived by the server and must not be sent"))
        else:
            errors.append(HitError(index, key, "unknown field"))
    for key in REQUIRED:
        if row.get(key) is None and not any(e.field == key for e in errors):
            errors.append(HitError(index, key, "is required"))
    if errors:
        return None, errors
    if row["view_time"] < row["session_time"]:
        return None, [HitError(index, "view_time", "must not be before session_time")]
    for key in LIST_COLUMNS:
        if row.get(key) is None:
            row[key] = []
    user_id, session_id = _cached_ids(row["user_id_unhashed"], row["session_number"])
    row["user_id"] = user_id
    if row.get("session_id") is None:
        row["session_id"] = session_id
    return row, errors


def _list(value: object, name: str, index: int, errors: list[HitError]) -> list | None:
    if value is None:
        return None
    if type(value) is not list:
        errors.append(HitError(index, name, "must be a list"))
        return None
    if len(value) > MAX_LIST:
        errors.append(HitError(index, name, f"must have at most {MAX_LIST} entries"))
        return None
    return value


def _nested(value, name, checks, required, index, errors) -> list:
    items = _list(value, name, index, errors)
    out: list[dict] = []
    if not items:
        return out
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if type(item) is not dict:
            errors.append(HitError(index, where, "must be an object"))
            continue
        entry: dict = {}
        for key, sub in item.items():
            check = checks.get(key)
            if check is None:
                errors.append(HitError(index, f"{where}.{key}", "unknown field"))
            elif sub is not None:
                converted, message = check_value(sub, check)
                if message is None:
                    entry[key] = converted
                else:
                    errors.append(HitError(index, f"{where}.{key}", message))
        for key in required:
            if item.get(key) is None:
                errors.append(HitError(index, f"{where}.{key}", "is required"))
        out.append(entry)
    return out


def _custom_vars(value, index, errors) -> list:
    items = _list(value, "custom_vars", index, errors)
    if not items:
        return []
    by_position: dict[int, dict] = {}  # the tag's behaviour: a position set twice keeps the last value
    for i, item in enumerate(items):
        where = f"custom_vars[{i}]"
        if type(item) is not dict:
            errors.append(HitError(index, where, "must be an object"))
            continue
        for key in item:
            if key not in ("position", "key", "value", "scope"):
                errors.append(HitError(index, f"{where}.{key}", "unknown field"))
        position = item.get("position")
        if type(position) is not int or not 1 <= position <= 20:
            errors.append(HitError(index, f"{where}.position", "must be an integer between 1 and 20"))
        key, message = check_value(item.get("key"), (STR, 1, MAX_CUSTOM_VAR_KEY))
        if message:
            errors.append(HitError(index, f"{where}.key", message))
        val, message = check_value(item.get("value"), (STR, 0, MAX_VAR_VALUE))
        if message:
            errors.append(HitError(index, f"{where}.value", message))
        scope = item.get("scope", "page")
        if scope not in CUSTOM_VAR_SCOPES:
            errors.append(HitError(index, f"{where}.scope", 'must be "page" or "session"'))
        if type(position) is int:
            by_position[position] = {"position": position, "key": key, "value": val, "scope": scope}
    return list(by_position.values())


def _dynamic_vars(value, index, errors) -> list:
    if type(value) is dict:
        pairs = list(value.items())
    else:
        items = _list(value, "dynamic_vars", index, errors)
        if not items:
            return []
        pairs = []
        for i, item in enumerate(items):
            if type(item) is not dict:
                errors.append(HitError(index, f"dynamic_vars[{i}]", "must be an object with key and value"))
                continue
            for k in item:
                if k not in ("key", "value"):
                    errors.append(HitError(index, f"dynamic_vars[{i}].{k}", "unknown field"))
            pairs.append((item.get("key"), item.get("value")))
    out: list[dict] = []
    kept: set[str] = set()
    for i, (key, val) in enumerate(pairs):
        where = f"dynamic_vars[{i}]"
        _, message = check_value(key, (STR, 1, MAX_DYNAMIC_KEY))
        if message:
            errors.append(HitError(index, f"{where}.key", message))
            continue
        t = type(val)
        if t is str:
            if len(val) > MAX_VAR_VALUE:
                errors.append(HitError(index, f"{where}.value", f"must be at most {MAX_VAR_VALUE} characters"))
                continue
            entry = {"key": key, "string_value": val, "number_value": None}
        elif t is int:
            if not 0 <= val <= MAX_DYNAMIC_NUMBER:
                errors.append(HitError(index, f"{where}.value", f"must be between 0 and {MAX_DYNAMIC_NUMBER}"))
                continue
            entry = {"key": key, "string_value": None, "number_value": val}
        else:
            errors.append(HitError(index, f"{where}.value", "must be a string or an integer"))
            continue
        # The vendor keeps the first 40 distinct keys of a pageview and silently drops the rest.
        if key not in kept:
            if len(kept) >= MAX_DYNAMIC_KEYS:
                continue
            kept.add(key)
        out.append(entry)
    return out


def validate_hits(raws: Iterable[object], start_index: int = 0) -> HitBatch:
    """Validate many hits: good rows in order, and every error of the rejected ones."""
    batch = HitBatch()
    rows = batch.rows
    for i, raw in enumerate(raws, start_index):
        row, errors = validate_hit(raw, i)
        if row is not None:
            rows.append(row)
        else:
            batch.errors.extend(errors)
            batch.rejected += 1
    return batch

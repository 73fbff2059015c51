"""Segments: saved filters on sessions, stored as JSON. Parsing and validation only (pure, no I/O).

The language (a session matches when its root node is true):

    node      := {"all": [node, ...]}            every child matches (1..50 children)
               | {"any": [node, ...]}            at least one child matches
               | {"not": node}                   the child does not match
               | condition
    condition := {"field": NAME, "op": OP, "value": V}          a session-level field (catalog.segment_fields)
               | {"customVar": 1..20, "op": OP, "value": V}    some view of the session has that custom var
               | {"dynamicVar": "key", "op": OP, "value": V}   some view of the session has that dynamic var

    OP: eq, neq, in, not_in, gt, gte, lt, lte, contains, exists
      eq/neq     V is a scalar of the field's kind (number or string)
      in/not_in  V is a non-empty list (max 1000) of scalars of one kind
      gt..lte    V is a number; numeric fields and dynamic vars only
      contains   V is a string; substring match (case-sensitive); string fields and variables only
      exists     V is absent, true or false: the field / variable is (not) set

Negations (neq, not_in, exists false, not) are exact complements of the positive form: a session whose
country is unknown matches `country_code neq "FR"`. For variables, `eq` means "some view has the
value" and `neq` means "no view has the value".
Limits: nesting depth 8, 200 nodes in all, 10,000 list values in all, strings 1024 characters, dynamic var
keys 512 characters; no string may hold NUL or an unpaired surrogate (no database column can store them).
Errors name the JSON path of the culprit: `filter.all[1].any[0].value`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dataexport.catalog.fields import segment_fields
from dataexport.errors import FieldError, ValidationFailed

OPS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")
ORDERING_OPS = ("gt", "gte", "lt", "lte")
LIST_OPS = ("in", "not_in")
MAX_DEPTH = 8
MAX_NODES = 200
MAX_LIST = 1000
# Every value is bound into the export's SQL: the sum over all lists is bounded, not only each list.
MAX_VALUES = 10_000
MAX_CHILDREN = 50
MAX_STRING = 1024
MAX_DYNAMIC_KEY = 512
CUSTOM_VAR_POSITIONS = range(1, 21)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

Scalar = str | int | float


@dataclass(frozen=True)
class FieldCondition:
    field: str
    op: str
    value: Any  # Scalar, tuple[Scalar, ...] for in/not_in, bool for exists


@dataclass(frozen=True)
class CustomVarCondition:
    position: int
    op: str
    value: Any


@dataclass(frozen=True)
class DynamicVarCondition:
    key: str
    op: str
    value: Any


@dataclass(frozen=True)
class AllOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class NotOf:
    child: Node


Node = AllOf | AnyOf | NotOf | FieldCondition | CustomVarCondition | DynamicVarCondition


@dataclass(frozen=True)
class SegmentFilter:
    root: Node


def _fail(path: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid segment filter at {path}: {message}.", [FieldError(path, message)])


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and v not in (float("inf"), -float("inf"))


def _kind_of(v: Any) -> str | None:
    if isinstance(v, str):
        return "string"
    if _is_number(v):
        return "number"
    return None


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0
        self.values = 0
        self.fields = segment_fields()

    def node(self, raw: Any, path: str, depth: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _fail(path, f"too many conditions (at most {MAX_NODES})")
        if depth > MAX_DEPTH:
            raise _fail(path, f"nested too deeply (at most {MAX_DEPTH} levels)")
        if not isinstance(raw, dict):
            raise _fail(path, "must be an object")
        for combinator in ("all", "any"):
            if combinator in raw:
                return self.group(raw, combinator, path, depth)
        if "not" in raw:
            self.only(raw, {"not"}, path)
            return NotOf(self.node(raw["not"], f"{path}.not", depth + 1))
        return self.condition(raw, path)

    def only(self, raw: dict[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            raise _fail(f"{path}.{extra[0]}", "unknown key")

    def group(self, raw: dict[str, Any], combinator: str, path: str, depth: int) -> Node:
        self.only(raw, {combinator}, path)
        children = raw[combinator]
        here = f"{path}.{combinator}"
        if not isinstance(children, list) or not children:
            raise _fail(here, "must be a non-empty list")
        if len(children) > MAX_CHILDREN:
            raise _fail(here, f"at most {MAX_CHILDREN} children")
        parsed = tuple(self.node(c, f"{here}[{i}]", depth + 1) for i, c in enumerate(children))
        return AllOf(parsed) if combinator == "all" else AnyOf(parsed)

    def condition(self, raw: dict[str, Any], path: str) -> Node:
        subjects = [k for k in ("field", "customVar", "dynamicVar") if k in raw]
        if len(subjects) != 1:
            raise _fail(path, "needs exactly one of all, any, not, field, customVar, dynamicVar")
        subject = subjects[0]
        self.only(raw, {subject, "op", "value"}, path)
        op = raw.get("op")
        if op not in OPS:
            raise _fail(f"{path}.op", f"must be one of {', '.join(OPS)}")
        if subject == "field":
            name = raw["field"]
            if not isinstance(name, str) or name not in self.fields:
                raise _fail(f"{path}.field", "unknown or non-filterable session field")
            kind = self.fields[name]
            return FieldCondition(name, op, self.value(raw, op, kind, f"{path}.value"))
        if subject == "customVar":
            position = raw["customVar"]
            if not isinstance(position, int) or isinstance(position, bool) or position not in CUSTOM_VAR_POSITIONS:
                raise _fail(f"{path}.customVar", "must be an integer position between 1 and 20")
            return CustomVarCondition(position, op, self.value(raw, op, "string", f"{path}.value"))
        key = raw["dynamicVar"]
        if not isinstance(key, str) or not key or len(key) > MAX_DYNAMIC_KEY:
            raise _fail(f"{path}.dynamicVar", f"must be a non-empty string of at most {MAX_DYNAMIC_KEY} characters")
        if _UNSTORABLE.search(key):
            raise _fail(f"{path}.dynamicVar", "must not contain NUL characters or unpaired surrogates")
        return DynamicVarCondition(key, op, self.value(raw, op, None, f"{path}.value"))

    def value(self, raw: dict[str, Any], op: str, kind: str | None, path: str) -> Any:
        """Check the value against the op and the subject's kind (None = either, as for dynamic vars)."""
        if op in ORDERING_OPS and kind == "string":
            raise _fail(path.removesuffix(".value") + ".op", f"{op} applies to numbers only")
        if op == "contains" and kind == "number":
            raise _fail(path.removesuffix(".value") + ".op", "contains applies to strings only")
        if op == "exists":
            v = raw.get("value", True)
            if not isinstance(v, bool):
                raise _fail(path, "must be true or false (or absent) for exists")
            return v
        if "value" not in raw:
            raise _fail(path, "is required")
        v = raw["value"]
        if op in LIST_OPS:
            if not isinstance(v, list) or not v:
                raise _fail(path, f"must be a non-empty list for {op}")
            if len(v) > MAX_LIST:
                raise _fail(path, f"at most {MAX_LIST} values")
            self.values += len(v)
            if self.values > MAX_VALUES:
                raise _fail(path, f"too many values in all (at most {MAX_VALUES} in the whole filter)")
            kinds = {self.scalar(item, kind, f"{path}[{i}]") for i, item in enumerate(v)}
            if len(kinds) > 1:
                raise _fail(path, "values must be all numbers or all strings")
            return tuple(v)
        actual = self.scalar(v, kind, path)
        if op in ORDERING_OPS and actual != "number":
            raise _fail(path, f"must be a number for {op}")
        if op == "contains" and actual != "string":
            raise _fail(path, "must be a string for contains")
        return v

    def scalar(self, v: Any, kind: str | None, path: str) -> str:
        actual = _kind_of(v)
        if actual is None:
            raise _fail(path, "must be a string or a number")
        if kind is not None and actual != kind:
            raise _fail(path, f"must be a {kind}")
        if actual == "string" and len(v) > MAX_STRING:
            raise _fail(path, f"at most {MAX_STRING} characters")
        if actual == "string" and _UNSTORABLE.search(v):
            raise _fail(path, "must not contain NUL characters or unpaired surrogates")
        return actual


def parse_segment_filter(raw: Any, path: str = "filter") -> SegmentFilter:
    """Validate a segment filter (a parsed JSON object, or JSON text) into a SegmentFilter."""
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise _fail(path, "is not valid JSON") from exc
    return SegmentFilter(_Parser().node(raw, path, 1))


def to_json(node: Node | SegmentFilter) -> dict[str, Any]:
    """The JSON form of a parsed filter (parse_segment_filter(to_json(f)) == f)."""
    if isinstance(node, SegmentFilter):
        return to_json(node.root)
    if isinstance(node, AllOf):
        return {"all": [to_json(c) for c in node.children]}
    if isinstance(node, AnyOf):
        return {"any": [to_json(c) for c in node.children]}
    if isinstance(node, NotOf):
        return {"not": to_json(node.child)}
    subject = {
        FieldCondition: ("field", "field"),
        CustomVarCondition: ("customVar", "position"),
        DynamicVarCondition: ("dynamicVar", "key"),
    }[type(node)]
    value = list(node.value) if isinstance(node.value, tuple) else node.value
    return {subject[0]: getattr(node, subject[1]), "op": node.op, "value": value}

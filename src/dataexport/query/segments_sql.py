"""Compile a SegmentFilter into ONE boolean aggregate over a session's pageviews (for HAVING).

Every user value is a bound parameter; field names come from the catalog, never from the filter text.
Each condition is made two-valued (coalesce(.., false)) so negations are exact complements.
"""

from __future__ import annotations

from dataexport.catalog.fields import lookup
from dataexport.catalog.sql import Sql, join, render
from dataexport.domain.enums import Scope
from dataexport.domain.segment_filter import (
    AllOf,
    AnyOf,
    CustomVarCondition,
    DynamicVarCondition,
    FieldCondition,
    Node,
    NotOf,
    SegmentFilter,
)

_COMPARE = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Each negative op is the complement of a positive one.
_NEGATION = {"neq": "eq", "not_in": "in"}


def _predicate(subject: str, op: str, value) -> Sql:
    """`subject OP value` for a positive op (never exists-false / neq / not_in)."""
    if op in _COMPARE:
        return Sql(f"{subject} {_COMPARE[op]} ?", [value])
    if op == "in":
        return Sql(f"{subject} IN ({', '.join('?' for _ in value)})", list(value))
    if op == "contains":
        return Sql(f"contains({subject}, ?)", [value])
    if op == "exists":
        return Sql(f"{subject} IS NOT NULL")
    raise ValueError(f"not a positive op: {op}")


def _split(op: str, value) -> tuple[str, object, bool]:
    """(positive op, value, negate?)"""
    if op in _NEGATION:
        return _NEGATION[op], value, True
    if op == "exists" and value is False:
        return "exists", True, True
    return op, value, False


def _field(cond: FieldCondition) -> Sql:
    template = lookup(Scope.SESSIONS, cond.field).session_sql
    subject = render(template)  # primitives inlined as aggregates; segment fields take no parameter
    op, value, negate = _split(cond.op, cond.value)
    pred = _predicate(f"({subject.text})", op, value)
    out = Sql(f"coalesce({pred.text}, false)", pred.params)
    return Sql(f"(NOT {out.text})", out.params) if negate else out


def _any_view_has(list_filter: Sql) -> Sql:
    """True when some view of the session has an element passing the list filter."""
    return Sql(f"coalesce(bool_or(coalesce(len({list_filter.text}) > 0, false)), false)", list_filter.params)


def _custom_var(cond: CustomVarCondition) -> Sql:
    op, value, negate = _split(cond.op, cond.value)
    pred = _predicate("_cv.value", op, value)
    inner = Sql(
        f"list_filter(custom_vars, lambda _cv: _cv.position = ? AND ({pred.text}))", [cond.position, *pred.params]
    )
    out = _any_view_has(inner)
    return Sql(f"(NOT {out.text})", out.params) if negate else out


def _dynamic_var(cond: DynamicVarCondition) -> Sql:
    op, value, negate = _split(cond.op, cond.value)
    sample = value[0] if isinstance(value, tuple) else value
    if op == "exists":
        column = "_dv.key"  # any entry with the key
    elif isinstance(sample, str):
        column = "_dv.string_value"
    else:
        column = "_dv.number_value"
    pred = _predicate(column, op, value)
    inner = Sql(f"list_filter(dynamic_vars, lambda _dv: _dv.key = ? AND ({pred.text}))", [cond.key, *pred.params])
    out = _any_view_has(inner)
    return Sql(f"(NOT {out.text})", out.params) if negate else out


def _node(node: Node) -> Sql:
    if isinstance(node, AllOf | AnyOf):
        sep = " AND " if isinstance(node, AllOf) else " OR "
        inner = join([_node(c) for c in node.children], sep)
        return Sql(f"({inner.text})", inner.params)
    if isinstance(node, NotOf):
        inner = _node(node.child)
        return Sql(f"(NOT {inner.text})", inner.params)
    if isinstance(node, FieldCondition):
        return _field(node)
    if isinstance(node, CustomVarCondition):
        return _custom_var(node)
    return _dynamic_var(node)


def compile_segment_filter(segment: SegmentFilter) -> Sql:
    """A boolean aggregate over the pageviews of one session, true when the session is in the segment."""
    return _node(segment.root)

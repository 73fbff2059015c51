"""Rendering catalog expression templates into SQL text plus bound parameters (pure string work)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dataexport.catalog.primitives import PRIMITIVES, column_name, primitive_sql

_PLACEHOLDER = re.compile(r"\{(p:[a-z_]+|tz)\}")


@dataclass
class Sql:
    """A piece of SQL and the values of its `?` placeholders, in text order."""

    text: str
    params: list = field(default_factory=list)


def quote_ident(name: str) -> str:
    """A DuckDB identifier for any text: wrapped in double quotes, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def sql_string(value: str) -> str:
    """A DuckDB string literal, for statements that take no bound parameter (ATTACH, COPY ... TO, table options)."""
    return "'" + value.replace("'", "''") + "'"


def join(parts: list[Sql], sep: str) -> Sql:
    return Sql(sep.join(p.text for p in parts), [v for p in parts for v in p.params])


def render(template: str, *, tz: str | None = None, needed: set[str] | None = None) -> Sql:
    """Render a field template.

    With `needed` given, `{p:x}` becomes the column of primitive x (computed elsewhere) and x is added to
    `needed`; without it, the primitive's aggregate is inlined (for HAVING clauses).
    `{tz}` becomes a bound parameter holding `tz`.
    """
    params: list = []

    def sub(m: re.Match) -> str:
        token = m.group(1)
        if token == "tz":
            if tz is None:
                raise ValueError("template needs a time zone")
            params.append(tz)
            return "?"
        name = token[2:]
        if name not in PRIMITIVES:
            raise KeyError(f"unknown primitive {name}")
        if needed is None:
            return f"({primitive_sql(name)})"
        needed.add(name)
        return column_name(name)

    return Sql(_PLACEHOLDER.sub(sub, template), params)

"""A job's output columns and their types, from the exportable-field catalog; and the DuckDB SQL that reads its
parts with those types (pure: no I/O).

Types come from the catalog's `type` (dataexport's extension: the vendor's ClickHouse-style names, as in its
field reference). A field the catalog does not type (the vendor's API, custom and dynamic variables) is text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from dataexport.catalog.sql import quote_ident, sql_string
from dataexport.client.models import ExportableField, JobField

RUN_ID_COLUMN = "_dataexport_run_id"  # which run each row came from, beside the job's own columns


class Dialect(Enum):
    DUCKDB = "duckdb"
    # PostgreSQL through DuckDB's postgres extension: no unsigned or 1-byte integers, so each takes the next
    # signed type that holds all its values (UInt64 becomes numeric(20,0)).
    POSTGRES = "postgres"


_SCALARS = {
    "String": "VARCHAR",
    "UInt8": "UTINYINT",
    "UInt16": "USMALLINT",
    "UInt32": "UINTEGER",
    "UInt64": "UBIGINT",
    "Int8": "TINYINT",
    "Int16": "SMALLINT",
    "Int32": "INTEGER",
    "Integer": "INTEGER",
    "Int64": "BIGINT",
    "Float32": "FLOAT",
    "Float64": "DOUBLE",
    "Bool": "BOOLEAN",
    "Boolean": "BOOLEAN",
    "Date": "DATE",
    "DateTime": "TIMESTAMPTZ",
    "DateTime64": "TIMESTAMPTZ",
}
_POSTGRES_WIDER = {"UTINYINT": "SMALLINT", "TINYINT": "SMALLINT", "USMALLINT": "INTEGER", "UINTEGER": "BIGINT"}
_ARRAY = re.compile(r"^Array\((?P<inner>[A-Za-z0-9]+)\)$")
_NULLABLE = re.compile(r"^(?:Nullable|LowCardinality)\((?P<inner>.+)\)$")


def duckdb_type(catalog_type: str | None, dialect: Dialect) -> str:
    """The column type for a catalog type name; VARCHAR for a type this table does not know."""
    text = (catalog_type or "String").strip()
    while match := _NULLABLE.match(text):
        text = match["inner"]
    array = _ARRAY.match(text)
    base = _SCALARS.get(array["inner"] if array else text, "VARCHAR")
    if dialect is Dialect.POSTGRES:
        base = _POSTGRES_WIDER.get(base, base)
    return base + "[]" if array else base


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type

    @property
    def is_array(self) -> bool:
        return self.type.endswith("[]")


def output_name(field: JobField) -> str:
    """The column a job field is written under (contract: alias, else custom_var_<n> / dynamic_var_<key>)."""
    if field.aliasName:
        return field.aliasName
    if field.fieldName == "custom_var":
        return f"custom_var_{field.customVarPosition}"
    if field.fieldName == "dynamic_var":
        return f"dynamic_var_{field.dynamicVarKey}"
    return field.fieldName


def catalog_types(catalog: Iterable[ExportableField]) -> dict[str, str | None]:
    """Field name and each alias -> its catalog type."""
    types: dict[str, str | None] = {}
    for entry in catalog:
        types[entry.name] = entry.type
        for alias in entry.aliases:
            types.setdefault(alias, entry.type)
    return types


def job_columns(fields: Sequence[JobField], types: Mapping[str, str | None], dialect: Dialect) -> list[Column]:
    columns = []
    for field in fields:
        # Variables hold text (a dynamic var may be a string in one row and a number in the next).
        typed = None if field.fieldName in ("custom_var", "dynamic_var") else types.get(field.fieldName)
        columns.append(Column(output_name(field), duckdb_type(typed, dialect)))
    return columns


def named_as_in_file(columns: Sequence[Column], header: Sequence[str]) -> list[Column]:
    """The job's columns under the names the part itself uses (its CSV header or first JSON object), matched by
    position: the file is the truth about its names, the catalog about their types."""
    if len(header) != len(columns):
        raise ValueError(f"the part has {len(header)} columns ({', '.join(header[:5])}...), the job {len(columns)}")
    return [Column(name, c.type) for name, c in zip(header, columns, strict=True)]


def _struct(mapping: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in mapping.items()) + "}"


def read_parts_sql(fmt: str, columns: Sequence[Column], path_count: int) -> str:
    """A SELECT of the typed columns over the parts, which are bound as `?` (a list of `path_count` paths).

    CSV cells are read with their scalar type directly; an array cell is JSON text, parsed by from_json. A
    quoted empty cell is an empty string and an unquoted one a null, as the writer wrote them."""
    if path_count < 1:
        raise ValueError("no part to read")
    if fmt.upper() == "CSV":
        read_as = {c.name: ("VARCHAR" if c.is_array else c.type) for c in columns}
        source = (
            f"read_csv(?, header = true, auto_detect = false, allow_quoted_nulls = false, delim = ',', "
            f"quote = '\"', escape = '\"', compression = 'gzip', columns = {_struct(read_as)})"
        )
        select = [
            f"from_json({quote_ident(c.name)}, {sql_string(_json_shape(c.type))})"
            if c.is_array
            else quote_ident(c.name)
            for c in columns
        ]
    else:
        source = (
            "read_json(?, format = 'newline_delimited', compression = 'gzip', "
            f"columns = {_struct({c.name: c.type for c in columns})})"
        )
        select = [quote_ident(c.name) for c in columns]
    return f"SELECT {', '.join(select)} FROM {source}"


def _json_shape(array_type: str) -> str:
    return f'["{array_type.removesuffix("[]")}"]'


def table_columns_sql(columns: Sequence[Column]) -> str:
    return ", ".join(f"{quote_ident(c.name)} {c.type}" for c in columns)

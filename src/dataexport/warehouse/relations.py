"""The relations a backend reads stored pageviews from: Parquet files, or none. Pure string work."""

from __future__ import annotations

import pyarrow as pa

from dataexport.catalog.sql import Sql, quote_ident
from dataexport.errors import validation_error
from dataexport.warehouse.schema import PAGEVIEW_SCHEMA


def _duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{quote_ident(f.name)} {_duckdb_type(f.type)}" for f in t) + ")"
    if pa.types.is_list(t):
        return _duckdb_type(t.value_type) + "[]"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"
    return {
        pa.int8(): "TINYINT",
        pa.int16(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint8(): "UTINYINT",
        pa.uint16(): "USMALLINT",
        pa.uint32(): "UINTEGER",
        pa.uint64(): "UBIGINT",
        pa.float32(): "FLOAT",
        pa.float64(): "DOUBLE",
        pa.string(): "VARCHAR",
    }[t]


def parquet_source(files: list[str]) -> Sql:
    """The relation of stored pageviews in these Parquet files (none: an empty relation with their columns)."""
    if not all(isinstance(f, str) for f in files):
        raise validation_error("files", "must be a list of paths")
    if not files:
        return empty_source()
    # Hive partitioning off: project_id is a real column of the files, not to be replaced from the path.
    return Sql("read_parquet(?, hive_partitioning = false)", [list(files)])


def empty_source() -> Sql:
    """A zero-row relation with the stored pageview columns, for windows without any data."""
    cols = ", ".join(f"CAST(NULL AS {_duckdb_type(f.type)}) AS {quote_ident(f.name)}" for f in PAGEVIEW_SCHEMA)
    return Sql(f"(SELECT {cols} WHERE false)")

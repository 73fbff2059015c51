"""Which custom and dynamic variables a project's data holds (GET /v1/custom-vars, /v1/dynamic-var-keys)."""

from __future__ import annotations

from datetime import datetime

import duckdb

from dataexport.errors import validation_error

_CUSTOM_VARS = """
WITH cv AS (
    SELECT unnest(custom_vars, recursive := true)
    FROM read_parquet(?, hive_partitioning = false)
    WHERE project_id = ? AND len(custom_vars) > 0
),
keys AS (
    -- the most frequent key at each position; ties go to the smallest key so answers are stable
    SELECT position, first(key ORDER BY n DESC, key) AS key
    FROM (SELECT position, key, count(*) AS n FROM cv WHERE key IS NOT NULL GROUP BY position, key)
    GROUP BY position
),
vals AS (
    SELECT position, list_slice(list(DISTINCT value ORDER BY value), 1, ?) AS values
    FROM cv WHERE value IS NOT NULL GROUP BY position
)
SELECT position, keys.key, coalesce(vals.values, []) AS values
FROM keys FULL JOIN vals USING (position)
WHERE position IS NOT NULL
ORDER BY position
"""

_DYNAMIC_KEYS = """
SELECT dv.key AS key,
       CASE WHEN bool_and(dv.string_value IS NULL AND dv.number_value IS NOT NULL) THEN 'number' ELSE 'string' END
FROM (
    SELECT unnest(dynamic_vars) AS dv
    FROM read_parquet(?, hive_partitioning = false)
    WHERE project_id = ? AND view_time >= ? AND view_time < ? AND len(dynamic_vars) > 0
)
WHERE dv.key IS NOT NULL
GROUP BY dv.key
ORDER BY dv.key
"""


def _check_files(files: list[str]) -> None:
    if not all(isinstance(f, str) for f in files):
        raise validation_error("files", "must be a list of paths")


def list_custom_vars(files: list[str], project_id: int, max_values: int = 100) -> list[dict]:
    """[{"position", "key", "values"}] by position; values distinct, sorted, at most max_values of them."""
    _check_files(files)
    if not isinstance(max_values, int) or isinstance(max_values, bool) or max_values < 0:
        raise validation_error("maxValues", "must be a non-negative integer")
    if not files:
        return []
    with duckdb.connect() as con:
        rows = con.execute(_CUSTOM_VARS, [list(files), project_id, max_values]).fetchall()
    return [{"position": pos, "key": key, "values": list(values)} for pos, key, values in rows]


def list_dynamic_var_keys(files: list[str], project_id: int, start: datetime, end: datetime) -> list[dict]:
    """[{"key", "type"}] of the keys seen on pageviews with view_time in [start, end), sorted by key.

    type is "number" when the key only ever carried numbers, else "string".
    """
    _check_files(files)
    for name, value in (("from", start), ("to", end)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise validation_error(name, "must be a timezone-aware datetime")
    if not files:
        return []
    with duckdb.connect() as con:
        rows = con.execute(_DYNAMIC_KEYS, [list(files), project_id, start, end]).fetchall()
    return [{"key": key, "type": kind} for key, kind in rows]

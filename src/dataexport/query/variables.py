"""Which custom and dynamic variables a project's data holds (GET /v1/custom-vars, /v1/dynamic-var-keys)."""

from __future__ import annotations

from datetime import datetime, timedelta

from dataexport.errors import validation_error
from dataexport.warehouse.backend import ReadLimits, Warehouse

_CUSTOM_VARS = """
WITH cv AS (
    SELECT unnest(custom_vars, recursive := true)
    FROM {source}
    WHERE project_id = ? AND session_time >= ? AND session_time < ? AND len(custom_vars) > 0
),
-- The unnested variables (several per pageview) are aggregated once, and both answers below read that small
-- result: aggregating them once per answer was most of a busy month's listing (bench/console.py).
triples AS (SELECT position, key, value, count(*) AS n FROM cv GROUP BY position, key, value),
keys AS (
    -- the most frequent key at each position; ties go to the smallest key so answers are stable
    SELECT position, first(key ORDER BY n DESC, key) AS key
    FROM (SELECT position, key, sum(n) AS n FROM triples WHERE key IS NOT NULL GROUP BY position, key)
    GROUP BY position
),
vals AS (
    SELECT position, list_slice(list(DISTINCT value ORDER BY value), 1, ?) AS values
    FROM triples WHERE value IS NOT NULL GROUP BY position
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
    FROM {source}
    WHERE project_id = ? AND session_time >= ? AND view_time >= ? AND view_time < ? AND len(dynamic_vars) > 0
)
WHERE dv.key IS NOT NULL
GROUP BY dv.key
ORDER BY dv.key
"""


# A view's session started at most this long before it (sessions end after 30 minutes of inactivity; a day is
# what the store's partitions and the previous listing allowed for).
SESSION_LOOKBACK = timedelta(days=1)


def list_custom_vars(
    warehouse: Warehouse, project_id: int, start: datetime, end: datetime, limits: ReadLimits, max_values: int = 100
) -> list[dict]:
    """[{"position", "key", "values"}] by position, of sessions started in [start, end); values distinct, sorted, at
    most max_values of them."""
    _check_range(start, end)
    if not isinstance(max_values, int) or isinstance(max_values, bool) or max_values < 0:
        raise validation_error("maxValues", "must be a non-negative integer")
    with warehouse.read(project_id, start, end, limits) as source:
        if not source.days:
            return []
        relation = source.relation(source.days)
        sql = _CUSTOM_VARS.replace("{source}", relation.text)
        rows = source.conn.execute(sql, [*relation.params, project_id, start, end, max_values]).fetchall()
    return [{"position": pos, "key": key, "values": list(values)} for pos, key, values in rows]


def list_dynamic_var_keys(
    warehouse: Warehouse, project_id: int, start: datetime, end: datetime, limits: ReadLimits
) -> list[dict]:
    """[{"key", "type"}] of the keys seen on pageviews with view_time in [start, end), sorted by key.

    type is "number" when the key only ever carried numbers, else "string".
    """
    _check_range(start, end)
    sessions_from = start - SESSION_LOOKBACK
    with warehouse.read(project_id, sessions_from, end, limits) as source:
        if not source.days:
            return []
        relation = source.relation(source.days)
        sql = _DYNAMIC_KEYS.replace("{source}", relation.text)
        rows = source.conn.execute(sql, [*relation.params, project_id, sessions_from, start, end]).fetchall()
    return [{"key": key, "type": kind} for key, kind in rows]


def _check_range(start: datetime, end: datetime) -> None:
    for name, value in (("from", start), ("to", end)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise validation_error(name, "must be a timezone-aware datetime")

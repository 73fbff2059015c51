"""The tag's beacons stored lately (collected_beacons): which of a flush's beacons are new, and pruning."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from dataexport.metadata.models import CollectedBeacon

# As long as the warehouses recognise a retried ingest batch (warehouse/batches.py IDEMPOTENCY_DAYS): a tag resends
# a failed body on the visitor's next page load, minutes or hours later, not days.
BEACON_MEMORY_DAYS = 2

_table: Table = CollectedBeacon.__table__  # type: ignore[assignment]  # a declarative class's table is a Table


def claim_new(conn: Connection, project_id: int, beacon_ids: list[str], now: datetime) -> set[str]:
    """Record the beacons, in the caller's transaction, and answer those not recorded before.

    Ids are inserted in sorted order, so two replicas claiming overlapping sets take their row locks in the same
    order (PostgreSQL): the second waits for the first's transaction and, once it commits, finds the rows there.
    Until the caller commits, the claim is its own: when the warehouse commit fails the claim rolls back with it.
    """
    if not beacon_ids:
        return set()
    rows = [{"project_id": project_id, "beacon_id": b, "collected_at": now} for b in sorted(set(beacon_ids))]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(_table).values(rows).on_conflict_do_nothing().returning(_table.c.beacon_id)
    return set(conn.execute(statement).scalars())


def prune(conn: Connection, before: datetime) -> int:
    """Forget beacons collected before `before`; how many."""
    return conn.execute(delete(_table).where(_table.c.collected_at < before)).rowcount or 0


def collected(conn: Connection, project_id: int) -> list[str]:
    """Every remembered beacon id of a project (tests, operators' debugging)."""
    stmt = select(_table.c.beacon_id).where(_table.c.project_id == project_id).order_by(_table.c.beacon_id)
    return list(conn.execute(stmt).scalars())

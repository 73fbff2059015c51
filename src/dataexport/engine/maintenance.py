"""Warehouse upkeep run by the scheduler every few minutes: the retention sweep of each project, then the backend's
own upkeep (compaction of settled partitions, pruning of idempotency records, ...), then the tag's beacon ids past
their use and the console's expired sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.domain.retention import expired_before
from dataexport.metadata.db import transaction
from dataexport.metadata.repositories import beacons, operators, tenants
from dataexport.warehouse.backend import MaintenanceReport, Warehouse

log = structlog.get_logger()

# A partition is compacted once no batch has landed in it for this long, so today's is not rewritten constantly.
SETTLED_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class MaintenanceResult:
    partitions_expired: int
    report: MaintenanceReport
    beacons_forgotten: int = 0
    sessions_closed: int = 0


def run_maintenance(sessions: sessionmaker[Session], warehouse: Warehouse, now: datetime) -> MaintenanceResult:
    with transaction(sessions) as session:
        projects = [(p.id, p.retention_days) for p in tenants.list_projects(session)]
    expired = sum(warehouse.delete_before(pid, expired_before(days, now)) for pid, days in projects)
    report = warehouse.maintain(now, settled_after=SETTLED_AFTER)
    with transaction(sessions) as session:
        forgotten = beacons.prune(session.connection(), now - timedelta(days=beacons.BEACON_MEMORY_DAYS))
        closed = operators.prune_sessions(session, now)
    result = MaintenanceResult(
        partitions_expired=expired, report=report, beacons_forgotten=forgotten, sessions_closed=closed
    )
    if expired or forgotten or closed or any(vars(report).values()):
        log.info(
            "warehouse.maintenance",
            warehouse=warehouse.name,
            partitions_expired=expired,
            beacons_forgotten=forgotten,
            console_sessions_closed=closed,
            **vars(report),
        )
    return result

"""Warehouse upkeep run by the scheduler every few minutes: retention sweep, then compaction of settled partitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings
from dataexport.metadata.db import transaction
from dataexport.metadata.repositories import tenants
from dataexport.warehouse import compaction, retention

log = structlog.get_logger()

# A partition is compacted once no batch has landed in it for this long, so today's is not rewritten constantly.
SETTLED_AFTER = timedelta(hours=1)


@dataclass
class MaintenanceResult:
    partitions_expired: int = 0
    partitions_compacted: int = 0


def run_maintenance(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> MaintenanceResult:
    with transaction(sessions) as session:
        projects = [(p.id, p.retention_days) for p in tenants.list_projects(session)]
    root = settings.resolved_warehouse_dir
    result = MaintenanceResult()
    for project_id, retention_days in projects:
        result.partitions_expired += retention.sweep(root, project_id, retention_days, now)
    if (root / "pageviews").is_dir():
        result.partitions_compacted = len(compaction.compact(root, older_than=SETTLED_AFTER, now=now))
    if result.partitions_expired or result.partitions_compacted:
        log.info("warehouse.maintenance", partitions_expired=result.partitions_expired,
                 partitions_compacted=result.partitions_compacted)
    return result

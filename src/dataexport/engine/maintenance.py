"""Warehouse upkeep run by the scheduler every few minutes: retention sweep, compaction of settled partitions, and
pruning of old batch-log segments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.orm import Session, sessionmaker

from dataexport.config import Settings
from dataexport.metadata.db import transaction
from dataexport.metadata.repositories import tenants
from dataexport.warehouse import compaction, retention
from dataexport.warehouse.store import PageviewStore

log = structlog.get_logger()

# A partition is compacted once no batch has landed in it for this long, so today's is not rewritten constantly.
SETTLED_AFTER = timedelta(hours=1)
BATCH_LOG_DAYS = 7  # days of batch-log segments kept (idempotency needs two; the rest helps investigations)


@dataclass
class MaintenanceResult:
    partitions_expired: int = 0
    partitions_compacted: int = 0
    batch_logs_pruned: int = 0


def run_maintenance(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> MaintenanceResult:
    with transaction(sessions) as session:
        projects = [(p.id, p.retention_days) for p in tenants.list_projects(session)]
    root = settings.resolved_warehouse_dir
    result = MaintenanceResult()
    for project_id, retention_days in projects:
        result.partitions_expired += retention.sweep(root, project_id, retention_days, now)
    if (root / "pageviews").is_dir():
        result.partitions_compacted = len(compaction.compact(root, older_than=SETTLED_AFTER, now=now))
    if (root / "_store").is_dir():
        with PageviewStore(root) as store:
            result.batch_logs_pruned = store.prune_batch_logs(keep_days=BATCH_LOG_DAYS)
    if result.partitions_expired or result.partitions_compacted or result.batch_logs_pruned:
        log.info(
            "warehouse.maintenance",
            partitions_expired=result.partitions_expired,
            partitions_compacted=result.partitions_compacted,
            batch_logs_pruned=result.batch_logs_pruned,
        )
    return result

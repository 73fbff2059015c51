"""Delete a project's partitions older than its data retention period."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

from dataexport.domain.retention import expired_before
from dataexport.warehouse.embedded.durable import fsync_dir
from dataexport.warehouse.embedded.store import PageviewStore
from dataexport.warehouse.schema import PARTITION_ROOT


def sweep(root: Path, project_id: int, retention_days: int, now: datetime) -> int:
    """Delete the partitions whose session day is before `now`'s UTC day minus `retention_days`; how many."""
    with PageviewStore(root) as store:
        return delete_before(store, project_id, expired_before(retention_days, now))


def delete_before(store: PageviewStore, project_id: int, keep_from: date) -> int:
    """Delete the project's partitions whose session day is before `keep_from`; how many.

    Each partition leaves the listing in one rename (under the store's commit lock, so no batch lands in it
    halfway), then its files are removed.
    """
    project_dir = store.root / PARTITION_ROOT / f"project_id={int(project_id)}"
    if not project_dir.is_dir():
        return 0
    deleted = 0
    for part in sorted(project_dir.glob("session_day=*")):
        try:
            day = date.fromisoformat(part.name.split("=", 1)[1])
        except ValueError:
            continue  # not a partition of ours
        if day >= keep_from:
            continue
        trash = store.new_staging_path(suffix=".expired")
        with store.commit_lock():
            part.rename(trash)
            fsync_dir(project_dir)
        shutil.rmtree(trash)
        deleted += 1
    return deleted

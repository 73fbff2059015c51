"""The scheduler's warehouse upkeep: retention per project, compaction of settled partitions."""

from __future__ import annotations

from datetime import timedelta

import duckdb

from dataexport import admin
from dataexport.demo.generate import generate
from dataexport.engine.maintenance import run_maintenance
from dataexport.metadata.db import transaction
from dataexport.warehouse.embedded import EmbeddedWarehouse


def test_retention_and_compaction(api, tenant):
    ctx = api.context
    root = ctx.settings.resolved_warehouse_dir
    with transaction(ctx.sessions) as session:
        admin_project = admin.create_project(session, name="Short memory", now=api.clock(), retention_days=2)
        short_id = admin_project.project.id
    now = api.clock()
    with EmbeddedWarehouse(root) as store:
        generate(store, tenant.project_id, days=5, sessions_per_day=40, seed=1, now=now)
        generate(store, tenant.project_id, days=5, sessions_per_day=40, seed=2, now=now)  # a second file a day
        generate(store, short_id, days=5, sessions_per_day=40, seed=3, now=now)

    def count(project_id):
        return duckdb.execute(
            "SELECT count(*) FROM read_parquet(?)", [f"{root}/pageviews/project_id={project_id}/*/*.parquet"]
        ).fetchone()[0]

    before = count(tenant.project_id)
    result = run_maintenance(ctx.sessions, ctx.warehouse, now + timedelta(hours=2))
    assert result.partitions_expired >= 2  # the 2-day project loses its older days, the other keeps all
    assert (
        sorted(p.name for p in (root / f"pageviews/project_id={short_id}").iterdir())[0]
        >= f"session_day={(now - timedelta(days=2)).date().isoformat()}"
    )
    assert result.report.partitions_compacted >= 5
    assert count(tenant.project_id) == before
    assert all(
        len(list(p.glob("*.parquet"))) == 1 for p in (root / f"pageviews/project_id={tenant.project_id}").iterdir()
    )
    # Batch-log segments are kept for a week; the demo wrote today's only.
    assert result.report.batch_records_pruned == 0
    logs = root / "_store" / "batches"
    (logs / f"project_id={tenant.project_id}" / "2020-01-01.log").write_bytes(b"")
    assert run_maintenance(ctx.sessions, ctx.warehouse, now + timedelta(hours=2)).report.batch_records_pruned == 1
    assert list(logs.rglob("*.log")) and not list(logs.rglob("2020-01-01.log"))

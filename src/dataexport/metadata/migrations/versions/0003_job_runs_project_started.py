"""job_runs (project_id, started_at) index for the fair claim

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00.000000
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_project_started", "job_runs", ["project_id", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_runs_project_started", table_name="job_runs")

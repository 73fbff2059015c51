"""projects.tag_id, projects.allowed_origins and collected_beacons: the tracking tag's collection

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:00:00.000000
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tag_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("allowed_origins", sa.JSON(), nullable=True))
        batch_op.create_unique_constraint("uq_projects_tag_id", ["tag_id"])
    op.create_table(
        "collected_beacons",
        sa.Column("project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("beacon_id", sa.String(length=64), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        sa.PrimaryKeyConstraint("project_id", "beacon_id"),
    )
    op.create_index("ix_collected_beacons_collected_at", "collected_beacons", ["collected_at"], unique=False)
    # Every existing project gets its tag id now, so `dataexport projects list` shows a snippet for each.
    projects = sa.table("projects", sa.column("id", sa.Integer), sa.column("tag_id", sa.String))
    conn = op.get_bind()
    for (project_id,) in conn.execute(sa.select(projects.c.id).where(projects.c.tag_id.is_(None))).all():
        conn.execute(projects.update().where(projects.c.id == project_id).values(tag_id=secrets.token_hex(8)))


def downgrade() -> None:
    op.drop_index("ix_collected_beacons_collected_at", table_name="collected_beacons")
    op.drop_table("collected_beacons")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_constraint("uq_projects_tag_id", type_="unique")
        batch_op.drop_column("allowed_origins")
        batch_op.drop_column("tag_id")

"""Create the job table.

Revision ID: 0001_jobs
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_jobs"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bridge_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("trigger", sa.JSON, nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False, unique=True),
        sa.Column("flight_key", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("project_id", sa.Integer, nullable=True),
        sa.Column("task_id", sa.Integer, nullable=True),
        sa.Column("cvat_job_id", sa.Integer, nullable=True),
        sa.Column("progress_total", sa.Integer, nullable=False),
        sa.Column("progress_done", sa.Integer, nullable=False),
        sa.Column("frame_errors", sa.JSON, nullable=False),
        sa.Column("objects", sa.JSON, nullable=False),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_bridge_jobs_pipeline", "bridge_jobs", ["pipeline"])
    op.create_index("ix_bridge_jobs_flight_key", "bridge_jobs", ["flight_key"])
    op.create_index("ix_bridge_jobs_status", "bridge_jobs", ["status"])
    op.create_index("ix_bridge_jobs_project_id", "bridge_jobs", ["project_id"])
    op.create_index("ix_bridge_jobs_task_id", "bridge_jobs", ["task_id"])
    op.create_index("ix_bridge_jobs_cvat_job_id", "bridge_jobs", ["cvat_job_id"])
    op.create_index("ix_bridge_jobs_claim", "bridge_jobs", ["status", "available_at"])
    op.create_index(
        "ux_bridge_jobs_running_flight",
        "bridge_jobs",
        ["flight_key"],
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    )


def downgrade() -> None:
    op.drop_table("bridge_jobs")

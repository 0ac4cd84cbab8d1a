"""Indexes for a claim and a job list that do not grow with the backlog.

``ix_bridge_jobs_queued_due``: the queued jobs only, in claim order (``available_at``, ``id``): the claim
walks it from the oldest due job and stops at the first runnable one. ``ix_bridge_jobs_status_id``: a
status filter of ``GET /jobs`` newest first (keyset pages by ``id``) without sorting the matches.

Revision ID: 0003_claim_and_list_indexes
Revises: 0002_fencing_and_outages
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_claim_and_list_indexes"
down_revision = "0002_fencing_and_outages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_bridge_jobs_queued_due",
        "bridge_jobs",
        ["available_at", "id"],
        sqlite_where=sa.text("status = 'queued'"),
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("ix_bridge_jobs_status_id", "bridge_jobs", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_bridge_jobs_status_id", "bridge_jobs")
    op.drop_index("ix_bridge_jobs_queued_due", "bridge_jobs")

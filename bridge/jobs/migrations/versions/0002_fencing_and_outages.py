"""Fencing tokens, unexpected-failure counts and the transient-retry window.

Revision ID: 0002_fencing_and_outages
Revises: 0001_jobs
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fencing_and_outages"
down_revision = "0001_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bridge_jobs") as batch:
        # +1 on every claim, never reset: a worker's writes are valid only while the row still holds its token
        batch.add_column(sa.Column("lease_token", sa.Integer, nullable=False, server_default="0"))
        # attempts that ended in an unexpected error or a dead worker (bounded by max_attempts)
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        # transient errors (CVAT/Nuclio outages) retry until then; set by the first one
        batch.add_column(sa.Column("retry_until", sa.DateTime(timezone=True), nullable=True))
        # progress_done + objects recorded when the attempt was claimed: did a dead worker's attempt get anywhere?
        batch.add_column(sa.Column("claim_mark", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("bridge_jobs") as batch:
        batch.drop_column("claim_mark")
        batch.drop_column("retry_until")
        batch.drop_column("failures")
        batch.drop_column("lease_token")

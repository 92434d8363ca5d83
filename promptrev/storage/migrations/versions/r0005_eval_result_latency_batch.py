"""eval_result.latency_batch: which results share one latency measurement.

A local model answers a batch of cases in one call, so every case of the batch carries the
batch's wall time: one measurement, not one per case. Results that share one now carry the
same key, and reports compare latency batch by batch. Results stored before this revision
have none (NULL), as have answers measured alone (one call each).

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add eval_result.latency_batch (nullable: no table copy, SQLite included)."""
    op.add_column("eval_result", sa.Column("latency_batch", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop eval_result.latency_batch, in place (SQLite 3.35+ drops columns)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE eval_result DROP COLUMN latency_batch")
    else:
        op.drop_column("eval_result", "latency_batch")

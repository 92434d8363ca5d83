"""eval_run.worker, eval_run.heartbeat: a run on the job queue, and who holds it.

A run started from the server goes through the job queue (:mod:`promptrev.jobs`). The
worker that executes it writes its name and a heartbeat here; a run whose worker stopped
beating is put back on the queue by any other worker and resumed from its stored
results. Runs made before this revision (and runs of ``promptrev eval run``) have none.

Revision ID: r0009
Revises: r0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0009"
down_revision = "r0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the lease of a queued run (nullable columns: no table copy)."""
    op.add_column("eval_run", sa.Column("worker", sa.String(200), nullable=True))
    op.add_column("eval_run", sa.Column("heartbeat", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop them in place (SQLite 3.35+ drops columns; a table copy would trip over
    eval_result's foreign key)."""
    for column in ("heartbeat", "worker"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE eval_run DROP COLUMN {column}")
        else:
            op.drop_column("eval_run", column)

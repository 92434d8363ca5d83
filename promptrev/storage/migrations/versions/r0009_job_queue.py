"""The job queue: eval_run.worker and eval_run.heartbeat (who holds a run), finetune_job.

A run started from the server goes through the job queue (:mod:`promptrev.jobs`). The
worker that executes it writes its name and a heartbeat here; a run whose worker stopped
beating is put back on the queue by any other worker and resumed from its stored
results. Runs made before this revision (and runs of ``promptrev eval run``) have none.
``finetune_job`` holds fine-tuning jobs started on the server, under the same lease.

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
    op.create_table(
        "finetune_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.String(), nullable=False),
        sa.Column("adapter", sa.String(300), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("heartbeat", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"))


def downgrade() -> None:
    """Drop them in place (SQLite 3.35+ drops columns; a table copy would trip over
    eval_result's foreign key)."""
    op.drop_table("finetune_job")
    for column in ("heartbeat", "worker"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE eval_run DROP COLUMN {column}")
        else:
            op.drop_column("eval_run", column)

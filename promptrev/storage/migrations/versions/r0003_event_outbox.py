"""The event outbox: one row per event the registry announced (see storage/outbox.py).

A new table and nothing else: events are recorded from this revision on; older
history is not announced again.

Revision ID: r0003
Revises: r0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the event table."""
    op.create_table(
        "event",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("payload", sa.String, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop the event table (its events are gone)."""
    op.drop_table("event")

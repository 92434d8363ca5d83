"""ab_plan: the planned size of a split label's online A/B experiment.

A new table and nothing else. Splits made before it have no plan: their live statistics
show the always-valid figures and keep the fixed-horizon p-values hidden until one is set.

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the ab_plan table."""
    op.create_table(
        "ab_plan",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("label", sa.String(63), primary_key=True),
        sa.Column("per_arm", sa.Integer, nullable=False),
        sa.Column("alpha", sa.Float, nullable=False),
        sa.Column("power", sa.Float, nullable=True),
        sa.Column("mde", sa.Float, nullable=True),
        sa.Column("baseline", sa.Float, nullable=True),
        sa.Column("sd", sa.Float, nullable=True),
        sa.Column("created", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    """Drop the ab_plan table (splits keep running, without a planned size)."""
    op.drop_table("ab_plan")

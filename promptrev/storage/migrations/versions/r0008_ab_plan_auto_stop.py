"""ab_plan.auto_stop, ab_plan.stop_metric: a split that ends itself on its statistics.

Two nullable columns: plans made before have no automatic stop (the split runs until
someone ends it).

Revision ID: r0008
Revises: r0007
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0008"
down_revision = "r0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the automatic stop of a split's plan."""
    with op.batch_alter_table("ab_plan") as batch:
        batch.add_column(sa.Column("auto_stop", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stop_metric", sa.String(100), nullable=True))


def downgrade() -> None:
    """Drop it (splits keep running until ended by hand)."""
    with op.batch_alter_table("ab_plan") as batch:
        batch.drop_column("stop_metric")
        batch.drop_column("auto_stop")

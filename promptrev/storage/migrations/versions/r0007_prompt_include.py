"""prompt_include: the parts each prompt version includes (the reverse index of shared parts).

A derived table: it is refilled from Git by ``promptrev reindex``. A registry upgraded to
it starts it empty, which is right for every registry made before includes existed (no
prompt could include another); one that already holds ``{% include %}`` bodies lists its
dependents after ``promptrev reindex``.

Revision ID: r0007
Revises: r0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0007"
down_revision = "r0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the prompt_include table."""
    op.create_table(
        "prompt_include",
        sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifact.id"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("ref", sa.String(400), primary_key=True),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("selector", sa.String(64), nullable=True),
    )
    op.create_index("ix_prompt_include_target", "prompt_include", ["target"])


def downgrade() -> None:
    """Drop the prompt_include table (dependents are no longer listed)."""
    op.drop_index("ix_prompt_include_target", table_name="prompt_include")
    op.drop_table("prompt_include")

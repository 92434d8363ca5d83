"""index_state loses schema_version: the version table records the schema now.

Release 0.1.0 wrote ``schema_version = 1`` and never read it. SQLite drops a column by
copying the table (batch mode); the one row, with the index's head and write count, is
kept.

Revision ID: r0002
Revises: r0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop index_state.schema_version."""
    with op.batch_alter_table("index_state") as batch:
        batch.drop_column("schema_version")


def downgrade() -> None:
    """Put the column back, as 0.1.0 filled it (always 1)."""
    with op.batch_alter_table("index_state") as batch:
        batch.add_column(sa.Column("schema_version", sa.Integer, nullable=False,
                                   server_default="1"))

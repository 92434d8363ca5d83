"""The accounts database as release 0.1.0 left it: users, tokens and their generation.

Creates only the tables that are missing, so a 0.1.0 database is adopted as it is.

Revision ID: a0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "a0001"
down_revision = None
branch_labels = ("accounts",)
depends_on = None


def upgrade() -> None:
    """Create the account tables that do not exist yet."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "account_state" not in existing:
        op.create_table("account_state", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("generation", sa.Integer, nullable=False))
    if "account_user" not in existing:
        op.create_table(
            "account_user", sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("email", sa.String(255), nullable=False),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("password_hash", sa.String, nullable=True),
            sa.Column("disabled", sa.Boolean, nullable=False),
            sa.Column("created", sa.Integer, nullable=False),
            sa.UniqueConstraint("name"))
    if "account_token" not in existing:
        op.create_table(
            "account_token", sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("user_id", sa.Integer, sa.ForeignKey("account_user.id"), nullable=False),
            sa.Column("label", sa.String(100), nullable=False),
            sa.Column("prefix", sa.String(16), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("created", sa.Integer, nullable=False),
            sa.Column("revoked", sa.Integer, nullable=True),
            sa.UniqueConstraint("digest"))
        op.create_index("ix_account_token_user_id", "account_token", ["user_id"])


def downgrade() -> None:
    """Drop the account tables."""
    for table in ("account_token", "account_user", "account_state"):
        op.drop_table(table)

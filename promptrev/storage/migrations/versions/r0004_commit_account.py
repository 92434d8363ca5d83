"""commit.account: the authenticated account that made each commit on main.

The Git author of a commit is what its maker typed; the account is who the server
authenticated (the pusher, or the user of the API and the pages), recorded in Git (a
note or a trailer: see storage/provenance.py) and copied here by the indexer. Commits
indexed before this revision were made before accounts were recorded anywhere, so their
account stays empty (NULL) and ``reindex`` would find nothing more for them.

Revision ID: r0004
Revises: r0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0004"
down_revision = "r0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add commit.account (nullable: no table copy, SQLite included)."""
    op.add_column("commit", sa.Column("account", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop commit.account (Git keeps the accounts: a later upgrade and reindex refill it).

    In place, not by copying the table (the version and label tables refer to it).
    """
    if op.get_bind().dialect.name == "sqlite":
        op.execute('ALTER TABLE "commit" DROP COLUMN account')  # SQLite 3.35+
    else:
        op.drop_column("commit", "account")

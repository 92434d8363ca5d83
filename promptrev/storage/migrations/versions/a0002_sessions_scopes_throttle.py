"""Account hardening: session generations, token scopes, and the login throttle.

- ``account_user.session_generation``: bumped by a logout or a password change; a session
  cookie carries the value it was issued under and is refused once it moved.
- ``account_token.scopes``: extra grants of a token (``outcomes``), comma-separated.
- ``account_throttle``: consecutive failed logins per account name and per client, and
  until when checking is refused (exponential backoff shared by every worker).

Existing rows get generation 0 and no scopes; the throttle starts empty.

Revision ID: a0002
Revises: a0001
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "a0002"
down_revision = "a0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the two columns and the throttle table."""
    with op.batch_alter_table("account_user") as batch:
        batch.add_column(sa.Column("session_generation", sa.Integer, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("account_token") as batch:
        batch.add_column(sa.Column("scopes", sa.String(200), nullable=False,
                                   server_default=""))
    op.create_table(
        "account_throttle",
        sa.Column("subject", sa.String(300), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_until", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )


def downgrade() -> None:
    """Drop the throttle table and the two columns."""
    op.drop_table("account_throttle")
    with op.batch_alter_table("account_token") as batch:
        batch.drop_column("scopes")
    with op.batch_alter_table("account_user") as batch:
        batch.drop_column("session_generation")

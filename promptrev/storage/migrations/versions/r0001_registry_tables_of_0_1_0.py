"""The registry database as release 0.1.0 left it: index, reviews, webhooks, evaluations.

Creates only the tables that are missing, so a 0.1.0 database (which made some tables
lazily, on first use) is adopted as it is.

Revision ID: r0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "r0001"
down_revision = None
branch_labels = ("registry",)
depends_on = None

S = sa.String


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


def _tables() -> list[tuple[tuple, list[tuple[str, list[str], bool]]]]:
    """(create_table arguments, [(index name, columns, unique)]) in dependency order."""
    return [
        (("index_state", sa.Column("id", sa.Integer, primary_key=True),
          sa.Column("head", S, nullable=True),
          sa.Column("schema_version", sa.Integer, nullable=False),
          sa.Column("writes", sa.Integer, nullable=False)), []),
        (("commit", sa.Column("seq", sa.Integer, primary_key=True),
          sa.Column("sha", S(64), nullable=False), sa.Column("author", S, nullable=False),
          sa.Column("email", S, nullable=False), sa.Column("message", S, nullable=False),
          sa.Column("timestamp", sa.Integer, nullable=False)),
         [("ix_commit_sha", ["sha"], True)]),
        (("artifact", _id(), sa.Column("kind", S(16), nullable=False),
          sa.Column("name", S(255), nullable=False),
          sa.Column("latest", sa.Integer, nullable=False),
          sa.Column("deleted", sa.Boolean, nullable=False),
          sa.Column("blob", S(64), nullable=True),
          sa.Column("updated_seq", sa.Integer, nullable=False),
          sa.UniqueConstraint("kind", "name")),
         [("ix_artifact_name", ["name"], False)]),
        (("version", _id(),
          sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifact.id"), nullable=False),
          sa.Column("number", sa.Integer, nullable=False),
          sa.Column("commit_seq", sa.Integer, sa.ForeignKey("commit.seq"), nullable=False),
          sa.Column("blob", S(64), nullable=True),
          sa.Column("deleted", sa.Boolean, nullable=False),
          sa.UniqueConstraint("artifact_id", "number")),
         [("ix_version_artifact_seq", ["artifact_id", "commit_seq"], False),
          ("ix_version_history", ["artifact_id", "number", "commit_seq", "blob", "deleted"],
           False),
          ("ix_version_commit_seq", ["commit_seq"], False)]),
        (("label",
          sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifact.id"),
                    primary_key=True),
          sa.Column("name", S(63), primary_key=True),
          sa.Column("version", sa.Integer, nullable=False)), []),
        (("label_event", _id(),
          sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifact.id"), nullable=False),
          sa.Column("label", S(63), nullable=False),
          sa.Column("old", sa.Integer, nullable=True),
          sa.Column("new", sa.Integer, nullable=True),
          sa.Column("commit_seq", sa.Integer, sa.ForeignKey("commit.seq"), nullable=False)),
         [("ix_label_event_artifact_id", ["artifact_id"], False),
          ("ix_label_event_commit_seq", ["commit_seq"], False)]),
        (("webhook", _id(), sa.Column("url", S(2000), nullable=False),
          sa.Column("secret", S(200), nullable=False),
          sa.Column("events", S(2000), nullable=False),
          sa.Column("active", sa.Boolean, nullable=False),
          sa.Column("created", sa.Float, nullable=False),
          sa.Column("created_by", S(255), nullable=False)), []),
        (("webhook_delivery", _id(),
          sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhook.id"), nullable=False),
          sa.Column("event", S(64), nullable=False), sa.Column("body", S, nullable=False),
          sa.Column("status", S(16), nullable=False),
          sa.Column("attempts", sa.Integer, nullable=False),
          sa.Column("next_attempt", sa.Float, nullable=False),
          sa.Column("claim", S(32), nullable=True),
          sa.Column("claimed_until", sa.Float, nullable=True),
          sa.Column("last_status", sa.Integer, nullable=True),
          sa.Column("last_error", S, nullable=True),
          sa.Column("created", sa.Float, nullable=False),
          sa.Column("delivered", sa.Float, nullable=True),
          sa.Column("redelivery_of", sa.Integer, nullable=True)),
         [("ix_webhook_delivery_webhook_id", ["webhook_id"], False),
          ("ix_webhook_delivery_due", ["status", "next_attempt"], False)]),
        (("webhook_attempt", _id(),
          sa.Column("delivery_id", sa.Integer, sa.ForeignKey("webhook_delivery.id"),
                    nullable=False),
          sa.Column("number", sa.Integer, nullable=False),
          sa.Column("started", sa.Float, nullable=False),
          sa.Column("duration_ms", sa.Float, nullable=False),
          sa.Column("status_code", sa.Integer, nullable=True),
          sa.Column("error", S, nullable=True), sa.Column("response", S, nullable=True)),
         [("ix_webhook_attempt_delivery_id", ["delivery_id"], False)]),
        (("review_request", _id(), sa.Column("title", S(200), nullable=False),
          sa.Column("description", S, nullable=False),
          sa.Column("author", S(64), nullable=False),
          sa.Column("author_line", S(400), nullable=False),
          sa.Column("branch", S(300), nullable=False),
          sa.Column("head", S(64), nullable=False),
          sa.Column("status", S(16), nullable=False),
          sa.Column("created", sa.Integer, nullable=False),
          sa.Column("updated", sa.Integer, nullable=False),
          sa.Column("closed_by", S, nullable=True), sa.Column("reason", S, nullable=True),
          sa.Column("merge_commit", S, nullable=True)),
         [("ix_review_request_branch", ["branch"], False)]),
        (("review_comment", _id(), sa.Column("request_id", sa.Integer, nullable=False),
          sa.Column("author", S(64), nullable=False), sa.Column("body", S, nullable=False),
          sa.Column("path", S, nullable=True), sa.Column("line", sa.Integer, nullable=True),
          sa.Column("head", S(64), nullable=False),
          sa.Column("created", sa.Integer, nullable=False)),
         [("ix_review_comment_request_id", ["request_id"], False)]),
        (("review_approval", _id(), sa.Column("request_id", sa.Integer, nullable=False),
          sa.Column("user", S(64), nullable=False), sa.Column("head", S(64), nullable=False),
          sa.Column("created", sa.Integer, nullable=False),
          sa.UniqueConstraint("request_id", "user", "head")),
         [("ix_review_approval_request_id", ["request_id"], False)]),
        (("eval_run", _id(), sa.Column("name", S(200), nullable=False),
          sa.Column("author", S(255), nullable=False),
          sa.Column("created", sa.Integer, nullable=False),
          sa.Column("updated", sa.Integer, nullable=False),
          sa.Column("status", S(16), nullable=False),
          sa.Column("dataset", S(300), nullable=False),
          sa.Column("cases", sa.Integer, nullable=False),
          sa.Column("spec", S, nullable=False), sa.Column("report", S, nullable=True),
          sa.Column("error", S, nullable=True)), []),
        (("eval_result", _id(),
          sa.Column("run_id", sa.Integer, sa.ForeignKey("eval_run.id"), nullable=False),
          sa.Column("variant", S(100), nullable=False),
          sa.Column("case_id", S(200), nullable=False),
          sa.Column("case_index", sa.Integer, nullable=False),
          sa.Column("output", S, nullable=False), sa.Column("scores", S, nullable=False),
          sa.Column("details", S, nullable=False), sa.Column("prompt", S(300), nullable=False),
          sa.Column("adapter", S(300), nullable=True),
          sa.Column("backend", S(50), nullable=False),
          sa.Column("model", S(500), nullable=False),
          sa.Column("prompt_tokens", sa.Integer, nullable=False),
          sa.Column("completion_tokens", sa.Integer, nullable=False),
          sa.Column("latency_s", sa.Float, nullable=False),
          sa.Column("cost", sa.Float, nullable=True), sa.Column("error", S, nullable=True),
          sa.Column("created", sa.Integer, nullable=False),
          sa.UniqueConstraint("run_id", "variant", "case_id")),
         [("ix_eval_result_run_id", ["run_id"], False)]),
        (("ab_outcome", _id(), sa.Column("kind", S(16), nullable=False),
          sa.Column("name", S(255), nullable=False), sa.Column("label", S(63), nullable=False),
          sa.Column("version", sa.Integer, nullable=False),
          sa.Column("key", S(200), nullable=False),
          sa.Column("metric", S(100), nullable=False),
          sa.Column("value", sa.Float, nullable=False),
          sa.Column("created", sa.Integer, nullable=False)),
         [("ix_ab_outcome_arm", ["kind", "name", "label", "version"], False)]),
    ]


def upgrade() -> None:
    """Create each table (and its indexes) that does not exist yet."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for args, indexes in _tables():
        if args[0] in existing:
            continue
        op.create_table(*args)
        for name, columns, unique in indexes:
            op.create_index(name, args[0], columns, unique=unique)


def downgrade() -> None:
    """Drop every table of the registry database."""
    for args, _indexes in reversed(_tables()):
        op.drop_table(args[0])

"""The tables of what exists nowhere else but SQL: the event outbox, accounts, change
requests, webhooks, evaluations and A/B outcomes.

Storage defines the schema in one place (here, and the index's tables in :mod:`.index`):
the migrations compare these models with the revisions, and a backup keeps their rows
(all but the outbox's passing log). The modules that own the rows (:mod:`.outbox`,
:mod:`promptrev.accounts`, :mod:`promptrev.reviews`, :mod:`promptrev.webhooks`,
:mod:`promptrev.evaluation`) run their own SQLAlchemy Core queries over the ``T_*`` tables
here. Unlike the index, none of this can be rebuilt from Git, so ``reindex`` never
touches it.

Account tables (``account_*``) live in the accounts database; all others in the registry's.
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


# ---- the event outbox (see outbox.py) --------------------------------------------------
class EventRow(SQLModel, table=True):
    """One event: its name, its payload (JSON text) and when it was recorded."""

    __tablename__ = "event"
    id: int = Field(primary_key=True)
    name: str = Field(max_length=64)
    payload: str
    created: float  # seconds since the epoch


T_OUTBOX = EventRow.__table__


# ---- accounts (the accounts database) --------------------------------------------------
class AccountState(SQLModel, table=True):
    """One row: bumped by every account change, so caches know when to drop."""

    __tablename__ = "account_state"
    id: int = Field(default=1, primary_key=True)
    generation: int = 0


class UserRow(SQLModel, table=True):
    """A person (or a service) that can log in or hold tokens."""

    __tablename__ = "account_user"
    id: int = Field(primary_key=True)
    name: str = Field(unique=True, max_length=64)
    email: str = Field(max_length=255)
    role: str = Field(max_length=16)
    password_hash: Optional[str] = None
    disabled: bool = False
    created: int
    # bumped by a logout or a password change: older session cookies are refused
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class TokenRow(SQLModel, table=True):
    """An API token: only its digest is stored."""

    __tablename__ = "account_token"
    id: int = Field(primary_key=True)
    user_id: int = Field(foreign_key="account_user.id", index=True)
    label: str = Field(max_length=100)
    prefix: str = Field(max_length=16)
    digest: str = Field(unique=True, max_length=64)
    created: int
    revoked: Optional[int] = None
    # extra grants of this token, comma-separated (accounts.SCOPES)
    scopes: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})


class ThrottleRow(SQLModel, table=True):
    """Consecutive failed logins of one account name or one client, and the backoff."""

    __tablename__ = "account_throttle"
    subject: str = Field(primary_key=True, max_length=300)  # "user:NAME", "client:ADDRESS"
    failures: int
    blocked_until: float  # seconds since the epoch; checking is refused until then
    updated: float


T_ACCOUNT_STATE = AccountState.__table__
T_USER = UserRow.__table__
T_TOKEN = TokenRow.__table__
T_THROTTLE = ThrottleRow.__table__


# ---- change requests -------------------------------------------------------------------
class ReviewRow(SQLModel, table=True):
    """A change request."""

    __tablename__ = "review_request"
    id: int = Field(primary_key=True)
    title: str = Field(max_length=200)
    description: str = ""
    author: str = Field(max_length=64)  # the account that opened it
    author_line: str = Field(max_length=400)  # Git author of its merge: "Name <email>"
    branch: str = Field(index=True, max_length=300)
    head: str = Field(max_length=64)
    status: str = Field(default="open", max_length=16)
    created: int
    updated: int
    closed_by: Optional[str] = None
    reason: Optional[str] = None
    merge_commit: Optional[str] = None


class ReviewCommentRow(SQLModel, table=True):
    """A comment on a request, or on one line of one file of it."""

    __tablename__ = "review_comment"
    id: int = Field(primary_key=True)
    request_id: int = Field(index=True)
    author: str = Field(max_length=64)
    body: str
    path: Optional[str] = None
    line: Optional[int] = None
    head: str = Field(max_length=64)
    created: int


class ReviewApprovalRow(SQLModel, table=True):
    """An approval of a request at one commit of its branch."""

    __tablename__ = "review_approval"
    __table_args__ = (sa.UniqueConstraint("request_id", "user", "head"),)
    id: int = Field(primary_key=True)
    request_id: int = Field(index=True)
    user: str = Field(max_length=64)
    head: str = Field(max_length=64)
    created: int


T_REVIEW = ReviewRow.__table__
T_REVIEW_COMMENT = ReviewCommentRow.__table__
T_REVIEW_APPROVAL = ReviewApprovalRow.__table__


# ---- webhooks --------------------------------------------------------------------------
class WebhookRow(SQLModel, table=True):
    """A URL to call, the secret its calls are signed with, and the events it wants."""

    __tablename__ = "webhook"
    id: int = Field(primary_key=True)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=200)
    events: str = Field(max_length=2000)  # JSON list of event names or patterns
    active: bool
    created: float  # seconds since the epoch
    created_by: str = Field(max_length=255)


class DeliveryRow(SQLModel, table=True):
    """One event to send to one hook, with its state and its lease."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (sa.Index("ix_webhook_delivery_due", "status", "next_attempt"),)
    id: int = Field(primary_key=True)
    webhook_id: int = Field(foreign_key="webhook.id", index=True)
    event: str = Field(max_length=64)
    body: str  # the exact JSON text sent (and signed)
    status: str = Field(max_length=16)  # pending, delivered, failed
    attempts: int
    next_attempt: float
    claim: Optional[str] = Field(default=None, max_length=32)  # the deliverer holding it
    claimed_until: Optional[float] = None  # its lease ends here; then anyone may take it
    last_status: Optional[int] = None
    last_error: Optional[str] = None
    created: float
    delivered: Optional[float] = None
    redelivery_of: Optional[int] = None


class AttemptRow(SQLModel, table=True):
    """One try of a delivery: what the receiver answered, or why there was no answer."""

    __tablename__ = "webhook_attempt"
    id: int = Field(primary_key=True)
    delivery_id: int = Field(foreign_key="webhook_delivery.id", index=True)
    number: int
    started: float
    duration_ms: float
    status_code: Optional[int] = None
    error: Optional[str] = None
    response: Optional[str] = None


T_WEBHOOK = WebhookRow.__table__
T_DELIVERY = DeliveryRow.__table__
T_ATTEMPT = AttemptRow.__table__


# ---- evaluations -----------------------------------------------------------------------
class EvalRunRow(SQLModel, table=True):
    """One evaluation run: its resolved spec, state and (when finished) its report."""

    __tablename__ = "eval_run"
    id: int = Field(primary_key=True)
    name: str = Field(max_length=200)
    author: str = Field(max_length=255)
    created: int
    updated: int
    status: str = Field(max_length=16)  # running, done, failed
    dataset: str = Field(max_length=300)  # name@N, resolved at start
    cases: int
    spec: str  # JSON: variants with exact versions, scorers, prices
    report: Optional[str] = None  # JSON, written when the run finishes
    error: Optional[str] = None
    # On the job queue (r0009): the worker that holds the run and when it last said so.
    # heartbeat NULL: not on the queue (a CLI run); worker NULL: waiting in the queue.
    worker: Optional[str] = Field(default=None, max_length=200)
    heartbeat: Optional[int] = None


class EvalResultRow(SQLModel, table=True):
    """One case of one variant: the output, its scores and what it cost."""

    __tablename__ = "eval_result"
    __table_args__ = (sa.UniqueConstraint("run_id", "variant", "case_id"),)
    id: int = Field(primary_key=True)
    run_id: int = Field(foreign_key="eval_run.id", index=True)
    variant: str = Field(max_length=100)
    case_id: str = Field(max_length=200)
    case_index: int
    output: str
    scores: str  # JSON {scorer: value or null}
    details: str  # JSON {scorer: detail}
    prompt: str = Field(max_length=300)  # exact prompt version, name@N
    adapter: Optional[str] = Field(default=None, max_length=300)
    backend: str = Field(max_length=50)
    model: str = Field(max_length=500)
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    # Rows with the same key share one latency measurement (a batch's wall time).
    latency_batch: Optional[str] = Field(default=None, max_length=64)
    cost: Optional[float] = None
    error: Optional[str] = None
    created: int


class FinetuneJobRow(SQLModel, table=True):
    """A fine-tuning job started on the server (r0009): trained by a queue worker, which
    pushes the adapter version it makes."""

    __tablename__ = "finetune_job"
    id: int = Field(primary_key=True)
    name: str = Field(max_length=255)  # the adapter the result is pushed to
    author: str = Field(max_length=255)
    created: int
    updated: int
    status: str = Field(max_length=16)  # running, done, failed
    spec: str  # JSON: dataset, model, prompt, method and hyperparameters
    adapter: Optional[str] = Field(default=None, max_length=300)  # name@N once pushed
    error: Optional[str] = None
    worker: Optional[str] = Field(default=None, max_length=200)
    heartbeat: Optional[int] = None


T_EVAL_RUN = EvalRunRow.__table__
T_EVAL_RESULT = EvalResultRow.__table__
T_FINETUNE_JOB = FinetuneJobRow.__table__


# ---- online A/B outcomes ---------------------------------------------------------------
class OutcomeRow(SQLModel, table=True):
    """One outcome reported by an application for a caller key."""

    __tablename__ = "ab_outcome"
    __table_args__ = (sa.Index("ix_ab_outcome_arm", "kind", "name", "label", "version"),)
    id: int = Field(primary_key=True)
    kind: str = Field(max_length=16)
    name: str = Field(max_length=255)
    label: str = Field(max_length=63)
    version: int
    key: str = Field(max_length=200)
    metric: str = Field(max_length=100)
    value: float
    created: int


T_OUTCOME = OutcomeRow.__table__


class PlanRow(SQLModel, table=True):
    """The planned size of a split label's experiment, set when the split is made."""

    __tablename__ = "ab_plan"
    kind: str = Field(primary_key=True, max_length=16)
    name: str = Field(primary_key=True, max_length=255)
    label: str = Field(primary_key=True, max_length=63)
    per_arm: int
    alpha: float
    power: Optional[float] = None
    mde: Optional[float] = None
    baseline: Optional[float] = None
    sd: Optional[float] = None
    created: int
    auto_stop: Optional[str] = Field(default=None, max_length=16)  # promote | rollback
    stop_metric: Optional[str] = Field(default=None, max_length=100)


T_PLAN = PlanRow.__table__

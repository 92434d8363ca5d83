"""The event outbox: what happened, recorded in the transaction that made it happen.

Storage announces events without knowing who listens (the lower layer emits, the upper
layer listens). An event is a name and a JSON-ready payload: the indexer records
``version.saved``, ``label.moved`` and ``rollback`` for each commit it indexes (a rebuild
records nothing: old history is not news), and change requests record
``change_request.*``. :func:`record` inserts one ``event`` row per event on the caller's
connection and then calls every handler registered with :func:`subscribe` on that same
connection, so what a handler writes (a webhook delivery) commits or rolls back with the
change and its event, whichever path made it (API, CLI, ``git push``, a pull, a merge).

A handler returns how much work it queued. Once the caller's transaction has committed,
it calls :func:`notify` if :func:`record` returned more than nothing, which runs each
subscriber's ``wake`` (a deliverer waiting for work starts at once instead of at its next
poll). Handlers run on every recorded event, so they must be cheap when they have nothing
to do.

The ``event`` table is defined with the others in :mod:`.tables`. Rows are kept for
whoever reads the log (:func:`recent`): the newest ``KEEP_EVENTS`` and none older than
``KEEP_SECONDS``; :func:`prune` drops the rest. The indexer calls it every ``PRUNE_EVERY``
index writes and after recording more than ``KEEP_EVENTS`` at once, so the table stays
bounded on every write path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .index import prepared
from .tables import T_OUTBOX

KEEP_EVENTS = 10_000
KEEP_SECONDS = 30 * 24 * 3600.0
PRUNE_EVERY = 500  # index writes between two prunes (see the indexer)

Event = tuple[str, dict[str, Any]]
Handler = Callable[[Connection, list[Event]], int]

_INSERT = T_OUTBOX.insert().values(name=sa.bindparam("name"), payload=sa.bindparam("payload"),
                                   created=sa.bindparam("created"))
_SUBSCRIBERS: list[tuple[Handler, Callable[[], None] | None]] = []
# One encoder for every payload: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def subscribe(handler: Handler, *, wake: Callable[[], None] | None = None) -> Handler:
    """Call ``handler(conn, events)`` in the transaction of every event recorded from now
    on (once, however often it subscribes); ``wake`` runs when :func:`notify` does."""
    if all(known is not handler for known, _ in _SUBSCRIBERS):
        _SUBSCRIBERS.append((handler, wake))
    return handler


def unsubscribe(handler: Handler) -> None:
    """Stop calling ``handler``."""
    _SUBSCRIBERS[:] = [(h, w) for h, w in _SUBSCRIBERS if h is not handler]


def record(conn: Connection, events: list[Event]) -> int:
    """Insert ``events`` in the caller's transaction and hand them to every subscriber.

    Returns how much work the subscribers queued: when it is not 0, call :func:`notify`
    after the transaction commits.
    """
    if not events:
        return 0
    now = time.time()
    encode = _ENCODER.encode
    prepared(conn, _INSERT).run_many(conn, [
        {"name": name, "payload": encode(payload), "created": now} for name, payload in events])
    queued = 0
    for handler, _ in tuple(_SUBSCRIBERS):
        queued += handler(conn, events) or 0
    return queued


def notify() -> None:
    """Wake the subscribers: events they queued work for have just been committed."""
    for _, wake in tuple(_SUBSCRIBERS):
        if wake is not None:
            wake()


def prune(conn: Connection, *, keep: int = KEEP_EVENTS, max_age: float = KEEP_SECONDS,
          now: float | None = None) -> int:
    """Delete all but the newest ``keep`` events and those older than ``max_age`` seconds;
    return how many rows went."""
    newest = sa.select(sa.func.max(T_OUTBOX.c.id)).scalar_subquery()
    cutoff = (time.time() if now is None else now) - max_age
    done = conn.execute(T_OUTBOX.delete().where(sa.or_(
        T_OUTBOX.c.id <= newest - keep, T_OUTBOX.c.created < cutoff)))
    return done.rowcount


def recent(engine: Engine, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Events with an id above ``after``, oldest first: ``{"id", "name", "payload",
    "created"}``."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(T_OUTBOX).where(T_OUTBOX.c.id > after)
                            .order_by(T_OUTBOX.c.id).limit(limit)).all()
    return [{"id": r.id, "name": r.name, "payload": json.loads(r.payload),
             "created": r.created} for r in rows]


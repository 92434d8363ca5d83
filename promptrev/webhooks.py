"""Webhooks: a URL called, HMAC-signed and retried, when something happens in the registry.

Hooks, their deliveries and every attempt live in SQL tables next to the index (the
registry's index database; the tables are defined in :mod:`.storage.tables`). They are
not derived from Git, so ``reindex`` keeps them.

**Enqueueing.** This module subscribes to the event outbox (:mod:`.storage.outbox`) when it
is imported (``import promptrev`` imports it): every event storage records (the indexer's
``version.saved``, ``label.moved`` and ``rollback`` of each commit it indexes, the change
requests' ``change_request.*``) becomes one delivery per active hook subscribed to it, in
the transaction that records the event, so an event is enqueued exactly when its commit is
indexed, whichever path moved ``main`` (API, CLI, ``git push``, a pull). A full rebuild
(``reindex``, or history rewritten) records no events, so it enqueues nothing. With no
active hook the cost is one indexed query per recorded batch. :func:`emit` enqueues an
event directly, without the outbox.

**Delivering.** A :class:`Deliverer` claims due deliveries with an ``UPDATE … WHERE`` on a
lease column (one winner on SQLite and PostgreSQL alike, so several processes never send
a delivery twice while its lease holds), POSTs the body and records the attempt. A 2xx
answer delivers it; anything else (a status of 300 or more, a timeout, a refused
connection) schedules a retry with exponential backoff until ``max_attempts``, then the
delivery is ``failed``. ``redeliver`` sends a copy of any delivery again.

**Where it may go.** Only to public addresses unless the operator widens it
(:mod:`.webhook_targets`): a URL is checked when a hook is added or enabled, and every
attempt resolves the host, checks every address and connects to the checked one (the name
stays in the ``Host`` header and TLS's SNI). A refused attempt sends nothing and fails the
delivery at once, its reason in the log. Redirects are not followed.

**What is kept of an answer.** The status, and at most :data:`RESPONSE_KEPT` characters of
the body with control characters removed and white space collapsed: enough to read a
receiver's error, too little to read a service through it.

**Secrets.** A hook's signing secret is in the answer that creates it and nowhere else: not
in listings, deliveries, attempts, errors or log lines; a password in a hook's URL is shown
as ``***``.

**What a receiver gets.** ``POST`` with the JSON body ``{"event", "time", "payload"}`` and
the headers ``Content-Type: application/json``, ``User-Agent: promptrev-webhooks``,
``X-Promptrev-Event``, ``X-Promptrev-Delivery`` (the delivery id), ``X-Promptrev-Hook``
(the hook id) and ``X-Promptrev-Signature-256: sha256=<hex HMAC-SHA256 of the exact body
keyed with the hook's secret>`` (GitHub's scheme; check it with :func:`verify_signature`).

Events and their ``payload``:

``version.saved``
    A new version (a save, a delete, a restore, an import, a push):
    ``{"kind", "name", "version", "ref", "commit", "author", "email", "message", "time",
    "deleted"}``.
``label.moved``
    A label set, moved or removed: ``{"kind", "name", "label", "from", "to", "commit",
    "author", "message", "time"}`` (``from``/``to`` are version numbers, null when absent).
``rollback``
    A commit that is a rollback (``AuditEntry.action == "rollback"``), sent besides its
    ``version.saved`` or ``label.moved``: ``{"commit", "author", "email", "message",
    "time", "versions": [{"kind", "name", "version", "deleted"}], "label_moves":
    [{"kind", "name", "label", "from", "to"}]}``.
``change_request.opened`` / ``change_request.merged`` / ``change_request.rejected``
    From :mod:`.reviews`, in the transaction that records the change: ``{"number",
    "title", "author", "branch", "head", "status", "closed_by", "reason",
    "merge_commit"}``. A merge also brings the ``version.saved`` of each merged version.

A hook subscribes to a list of event names; ``*`` means every event and ``prefix.*``
every event of a family (``change_request.*``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import errors
from .config import Settings
from .errors import InvalidRequest, NotFound, TargetRefused
from .storage import outbox
from .storage.index import prepared
from .storage.sql import OnDatabase, writing
from .storage.tables import T_ATTEMPT, T_DELIVERY, T_WEBHOOK
from .webhook_targets import TargetPolicy, excerpt, pinned, scrub, send

log = logging.getLogger("promptrev.webhooks")

EVENTS = ("version.saved", "label.moved", "rollback", "change_request.opened",
          "change_request.merged", "change_request.rejected")
STATUSES = ("pending", "delivered", "failed")
USER_AGENT = "promptrev-webhooks"
SIGNATURE_HEADER = "X-Promptrev-Signature-256"
MAX_URL = T_WEBHOOK.c.url.type.length
MAX_SECRET = T_WEBHOOK.c.secret.type.length
RESPONSE_KEPT = 200  # characters of a receiver's answer kept in the attempt log (sanitized)
RESPONSE_READ = 1024  # bytes of an answer read at most

# Wakes this process's deliverers as soon as a commit enqueued something.
_WAKE = threading.Event()
_ACTIVE_HOOKS = sa.select(T_WEBHOOK.c.id, T_WEBHOOK.c.events).where(
    T_WEBHOOK.c.active.is_(True))


# ---- signatures ------------------------------------------------------------------------
def signature(secret: str, body: bytes) -> str:
    """The ``X-Promptrev-Signature-256`` value of ``body``: ``sha256=<hex HMAC>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` with ``secret`` (constant time)."""
    if not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


# ---- enqueueing ------------------------------------------------------------------------
def emit(target: Engine | Connection, event: str, payload: dict[str, Any]) -> int:
    """Enqueue ``event`` for every active hook subscribed to it; return how many.

    Given a connection, the deliveries are part of the caller's transaction (they are sent
    only if it commits); given an engine, they are committed here.
    """
    if isinstance(target, Engine):
        with writing(target) as conn:
            count = emit(conn, event, payload)
        if count:
            notify()
        return count
    return enqueue(target, active_hooks(target), [(event, payload)])


def active_hooks(conn: Connection) -> list[tuple[int, list[str]]]:
    """(id, event patterns) of every active hook."""
    # Run on the driver's cursor: this query runs for every recorded batch of events.
    return [(hook_id, json.loads(events))
            for hook_id, events in prepared(conn, _ACTIVE_HOOKS).run(conn)]


def _fan_out(conn: Connection, events: list[tuple[str, dict[str, Any]]]) -> int:
    """Outbox subscriber: a delivery of each event for each active hook that wants it."""
    hooks = active_hooks(conn)
    return enqueue(conn, hooks, events) if hooks else 0


def enqueue(conn: Connection, hooks: list[tuple[int, list[str]]],
            events: list[tuple[str, dict[str, Any]]]) -> int:
    """Insert a delivery of each (event, payload) for each hook that wants it."""
    now = time.time()
    rows = []
    for event, payload in events:
        wanting = [hook_id for hook_id, patterns in hooks if subscribed(patterns, event)]
        if not wanting:
            continue
        body = body_of(event, payload, now)
        rows += [{"webhook_id": hook_id, "event": event, "body": body, "status": "pending",
                  "attempts": 0, "next_attempt": now, "created": now} for hook_id in wanting]
    if rows:
        conn.execute(T_DELIVERY.insert(), rows)
    return len(rows)


def notify() -> None:
    """Wake this process's deliverers (something was just committed to send)."""
    _WAKE.set()


outbox.subscribe(_fan_out, wake=notify)


def subscribed(patterns: list[str], event: str) -> bool:
    """Whether a hook with these event patterns wants ``event``."""
    for pattern in patterns:
        if pattern == "*" or pattern == event or (
                pattern.endswith(".*") and event.startswith(pattern[:-1])):
            return True
    return False


def body_of(event: str, payload: dict[str, Any], now: float | None = None) -> str:
    """The JSON text a receiver gets for ``event``."""
    return json.dumps({"event": event, "time": _iso(time.time() if now is None else now),
                       "payload": payload}, ensure_ascii=False, separators=(",", ":"),
                      default=str)


# ---- management ------------------------------------------------------------------------
class Webhooks(OnDatabase):
    """Add, list, disable and remove hooks; read and redeliver their deliveries.

    ``targets`` checks a URL when a hook is added or enabled (the edges pass the operator's
    :class:`TargetPolicy`); without one the URL is not checked here, and every delivery
    attempt is checked anyway.
    """

    def __init__(self, registry: Any, *, targets: TargetPolicy | None = None):
        self._source = registry  # a Registry (or, in the core, its engine)
        self.targets = targets

    def add(self, url: str, *, events: list[str] | None = None, secret: str | None = None,
            created_by: str = "promptrev", active: bool = True) -> dict[str, Any]:
        """Add a hook; the answer carries its secret (shown this once)."""
        url = valid_url(url)
        if self.targets is not None:
            self.targets.check_url(url)
        patterns = valid_events(events)
        if secret is None:
            secret = secrets.token_hex(32)
        elif not isinstance(secret, str) or not 1 <= len(secret) <= MAX_SECRET:
            raise InvalidRequest(f"a webhook secret must be 1 to {MAX_SECRET} characters "
                                 "(leave it out to have one generated)")
        with writing(self.engine) as conn:
            result = conn.execute(T_WEBHOOK.insert().values(
                url=url, secret=secret, events=json.dumps(patterns), active=bool(active),
                created=time.time(), created_by=created_by[:255]))
            hook_id = int(result.inserted_primary_key[0])
        return {**self.get(hook_id), "secret": secret}

    def get(self, hook_id: int) -> dict[str, Any]:
        """One hook (without its secret)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T_WEBHOOK).where(T_WEBHOOK.c.id == hook_id)).first()
        if row is None:
            raise NotFound(f"no webhook {hook_id} (see 'promptrev webhook list')")
        return _hook(row)

    def _url(self, hook_id: int) -> str:
        with self.engine.connect() as conn:
            url = conn.execute(sa.select(T_WEBHOOK.c.url).where(
                T_WEBHOOK.c.id == hook_id)).scalar()
        if url is None:
            raise NotFound(f"no webhook {hook_id} (see 'promptrev webhook list')")
        return url

    def list(self) -> list[dict[str, Any]]:
        """Every hook, oldest first (without secrets)."""
        with self.engine.connect() as conn:
            return [_hook(r) for r in conn.execute(sa.select(T_WEBHOOK).order_by(
                T_WEBHOOK.c.id))]

    def set_active(self, hook_id: int, active: bool) -> dict[str, Any]:
        """Enable or disable a hook; a disabled hook gets no new deliveries, and its
        pending ones wait until it is enabled again. Enabling checks the URL again."""
        if active and self.targets is not None:
            self.targets.check_url(self._url(hook_id))
        with writing(self.engine) as conn:
            done = conn.execute(T_WEBHOOK.update().where(T_WEBHOOK.c.id == hook_id)
                                .values(active=bool(active)))
        if done.rowcount == 0:
            raise NotFound(f"no webhook {hook_id} (see 'promptrev webhook list')")
        if active:
            notify()
        return self.get(hook_id)

    def remove(self, hook_id: int) -> None:
        """Remove a hook with its deliveries and their attempts."""
        mine = sa.select(T_DELIVERY.c.id).where(T_DELIVERY.c.webhook_id == hook_id)
        with writing(self.engine) as conn:
            conn.execute(T_ATTEMPT.delete().where(T_ATTEMPT.c.delivery_id.in_(mine)))
            conn.execute(T_DELIVERY.delete().where(T_DELIVERY.c.webhook_id == hook_id))
            done = conn.execute(T_WEBHOOK.delete().where(T_WEBHOOK.c.id == hook_id))
        if done.rowcount == 0:
            raise NotFound(f"no webhook {hook_id} (see 'promptrev webhook list')")

    def deliveries(self, *, webhook_id: int | None = None, status: str | None = None,
                   event: str | None = None, limit: int = 100,
                   attempts: bool = True) -> list[dict[str, Any]]:
        """Deliveries, newest first, optionally with every attempt (oldest first)."""
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"unknown delivery status {status!r} (statuses: "
                                 f"{', '.join(STATUSES)})")
        stmt = sa.select(T_DELIVERY).order_by(T_DELIVERY.c.id.desc()).limit(limit)
        if webhook_id is not None:
            stmt = stmt.where(T_DELIVERY.c.webhook_id == webhook_id)
        if status is not None:
            stmt = stmt.where(T_DELIVERY.c.status == status)
        if event is not None:
            stmt = stmt.where(T_DELIVERY.c.event == event)
        with self.engine.connect() as conn:
            out = [_delivery(r) for r in conn.execute(stmt)]
            if attempts and out:
                tries: dict[int, list[dict]] = {d["id"]: [] for d in out}
                for row in conn.execute(sa.select(T_ATTEMPT).where(
                        T_ATTEMPT.c.delivery_id.in_(list(tries))).order_by(T_ATTEMPT.c.id)):
                    tries[row.delivery_id].append(_attempt(row))
                for d in out:
                    d["attempt_log"] = tries[d["id"]]
        return out

    def delivery(self, delivery_id: int) -> dict[str, Any]:
        """One delivery with its attempts."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(T_DELIVERY).where(
                T_DELIVERY.c.id == delivery_id)).first()
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id} (see 'promptrev webhook "
                               "deliveries')")
            out = _delivery(row)
            out["attempt_log"] = [_attempt(r) for r in conn.execute(sa.select(T_ATTEMPT).where(
                T_ATTEMPT.c.delivery_id == delivery_id).order_by(T_ATTEMPT.c.id))]
        return out

    def redeliver(self, delivery_id: int) -> dict[str, Any]:
        """Send a delivery's body again, as a new delivery; return the new one."""
        with writing(self.engine) as conn:
            row = conn.execute(sa.select(T_DELIVERY).where(
                T_DELIVERY.c.id == delivery_id)).first()
            if row is None:
                raise NotFound(f"no webhook delivery {delivery_id} (see 'promptrev webhook "
                               "deliveries')")
            now = time.time()
            result = conn.execute(T_DELIVERY.insert().values(
                webhook_id=row.webhook_id, event=row.event, body=row.body, status="pending",
                attempts=0, next_attempt=now, created=now, redelivery_of=row.id))
            new_id = int(result.inserted_primary_key[0])
        notify()
        return self.delivery(new_id)


def valid_url(url: Any) -> str:
    """``url`` if it is an http(s) URL with a host, else :class:`InvalidRequest`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise InvalidRequest(f"a webhook URL must be a string of 1 to {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError as exc:
        raise InvalidRequest(f"webhook URL {url[:100]!r} is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(
            c.isspace() for c in url):
        raise InvalidRequest(f"webhook URL {url[:100]!r} must be http:// or https:// with a "
                             "host, e.g. https://example.com/hooks/promptrev")
    return url


def event_patterns() -> list[str]:
    """What a hook may subscribe to: ``*``, each event, and each family (``label.*``)."""
    families = sorted({e.split(".", 1)[0] + ".*" for e in EVENTS if "." in e})
    return ["*", *EVENTS, *families]


def valid_events(events: Any) -> list[str]:
    """Event patterns as stored: a list of known names, ``prefix.*`` or ``*`` (default)."""
    if events is None or events == [] or events == "*":
        return ["*"]
    if isinstance(events, str) or not isinstance(events, (list, tuple)) or not all(
            isinstance(e, str) for e in events):
        raise InvalidRequest("webhook events must be a list of event names")
    known = event_patterns()
    unknown = [e for e in events if e not in known]
    if unknown:
        raise InvalidRequest(f"unknown webhook event {unknown[0][:64]!r} (events: "
                             f"{', '.join(EVENTS)}; or '*', or a family like "
                             "'change_request.*')")
    return list(dict.fromkeys(events))


def shown_url(url: str) -> str:
    """``url`` as answers show it: a password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _hook(row) -> dict[str, Any]:
    return {"id": row.id, "url": shown_url(row.url), "events": json.loads(row.events),
            "active": bool(row.active), "created": _iso(row.created),
            "created_by": row.created_by}


def _delivery(row) -> dict[str, Any]:
    return {"id": row.id, "webhook_id": row.webhook_id, "event": row.event,
            "status": row.status, "attempts": row.attempts,
            "next_attempt": _iso(row.next_attempt) if row.status == "pending" else None,
            "last_status": row.last_status, "last_error": row.last_error,
            "created": _iso(row.created),
            "delivered": _iso(row.delivered) if row.delivered is not None else None,
            "redelivery_of": row.redelivery_of, "body": json.loads(row.body)}


def _attempt(row) -> dict[str, Any]:
    return {"number": row.number, "started": _iso(row.started),
            "duration_ms": round(row.duration_ms, 1), "status_code": row.status_code,
            "error": row.error, "response": row.response}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


# ---- delivery --------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: ``base`` seconds, times ``factor`` per attempt, at most ``cap``."""

    base: float = 10.0
    factor: float = 2.0
    cap: float = 3600.0
    max_attempts: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """When failed deliveries are tried again, as the operator's settings say."""
        return cls(base=settings.webhook_retry_base, cap=settings.webhook_retry_cap,
                   max_attempts=settings.webhook_max_attempts)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        return min(self.cap, self.base * self.factor ** max(0, attempts - 1))


@dataclass(frozen=True)
class Outcome:
    """What one attempt got."""

    status_code: int | None
    error: str | None
    response: str | None
    duration_ms: float
    final: bool = False  # no retry: the target is refused

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


_DUE = sa.select(T_DELIVERY.c.id).select_from(T_DELIVERY.join(
    T_WEBHOOK, T_DELIVERY.c.webhook_id == T_WEBHOOK.c.id)).where(
    T_DELIVERY.c.status == "pending", T_DELIVERY.c.next_attempt <= sa.bindparam("now"),
    T_WEBHOOK.c.active.is_(True),
    sa.or_(T_DELIVERY.c.claimed_until.is_(None),
           T_DELIVERY.c.claimed_until < sa.bindparam("now"))).order_by(
    T_DELIVERY.c.next_attempt, T_DELIVERY.c.id).limit(sa.bindparam("limit"))
_CLAIM = T_DELIVERY.update().where(
    T_DELIVERY.c.id == sa.bindparam("_id"), T_DELIVERY.c.status == "pending",
    T_DELIVERY.c.next_attempt <= sa.bindparam("_now"),
    sa.or_(T_DELIVERY.c.claimed_until.is_(None),
           T_DELIVERY.c.claimed_until < sa.bindparam("_now"))).values(
    claim=sa.bindparam("_claim"), claimed_until=sa.bindparam("_until"))


class Deliverer(OnDatabase):
    """Sends due deliveries: claim, POST, record, schedule a retry or give up.

    Any number of deliverers (threads, processes, machines on one PostgreSQL) may run at
    once: a delivery is sent by the one whose claim succeeded, and it holds the claim for
    ``timeout`` plus a margin, after which a crashed deliverer's work is taken over.
    """

    def __init__(self, registry: Any, *, retry: RetryPolicy | None = None,
                 timeout: float = 10.0, batch: int = 20, transport: Any = None,
                 targets: TargetPolicy | None = None):
        self._source = registry  # a Registry (or, in the core, its engine)
        self.retry = retry or RetryPolicy()
        self.targets = targets or TargetPolicy()  # public addresses only unless widened
        self.timeout = timeout
        self.batch = batch
        self.lease = timeout + 60.0
        self.claim = secrets.token_hex(8)
        self._transport = transport  # an httpx transport, for tests that need one
        self._client = None
        self._stop = threading.Event()

    def run_once(self) -> int:
        """Attempt every delivery due now (one batch); return how many were attempted."""
        now = time.time()
        with self.engine.connect() as conn:
            due = [r[0] for r in conn.execute(_DUE, {"now": now, "limit": self.batch})]
        sent = 0
        for delivery_id in due:
            if self._take(delivery_id):
                self._attempt(delivery_id)
                sent += 1
        return sent

    def run(self, poll_interval: float = 2.0) -> None:
        """Deliver until :meth:`stop`; between batches wait for a commit or ``poll``."""
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except Exception as exc:  # a busy or unreachable database: log it, keep going
                explained = errors.explain(exc)
                if explained is not None:
                    log.warning("webhook deliverer: %s", explained.message)
                else:
                    log.exception("webhook deliverer: batch failed")
                sent = 0
            if not sent and not self._stop.is_set():
                _WAKE.wait(poll_interval)
                _WAKE.clear()
        self.close()

    def stop(self) -> None:
        """Make :meth:`run` return after the attempt in progress."""
        self._stop.set()
        _WAKE.set()

    def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _take(self, delivery_id: int) -> bool:
        now = time.time()
        with writing(self.engine) as conn:
            done = conn.execute(_CLAIM, {"_id": delivery_id, "_now": now, "_claim": self.claim,
                                         "_until": now + self.lease})
        return done.rowcount == 1

    def _attempt(self, delivery_id: int) -> None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(
                T_DELIVERY.c.event, T_DELIVERY.c.body, T_DELIVERY.c.attempts,
                T_DELIVERY.c.webhook_id, T_WEBHOOK.c.url, T_WEBHOOK.c.secret).select_from(
                T_DELIVERY.join(T_WEBHOOK, T_DELIVERY.c.webhook_id == T_WEBHOOK.c.id)).where(
                T_DELIVERY.c.id == delivery_id)).first()
        if row is None:  # removed with its hook meanwhile
            return
        started = time.time()
        outcome = self.post(row.url, row.secret, row.event, delivery_id, row.webhook_id,
                            row.body.encode())
        self._record(delivery_id, row.attempts + 1, started, outcome)

    def post(self, url: str, secret: str, event: str, delivery_id: int, hook_id: int,
             body: bytes) -> Outcome:
        """POST one signed body to an address checked for it; return what came back
        (never raises for HTTP trouble)."""
        import httpx  # only deliverers need it: the indexer's import of this module stays light

        if self._client is None:
            # No connection is kept alive: each attempt connects to the address it checked
            # (a pooled TLS connection could serve another name on the same address).
            self._client = httpx.Client(timeout=self.timeout, transport=self._transport,
                                        follow_redirects=False, trust_env=False,
                                        limits=httpx.Limits(max_keepalive_connections=0))
        start = time.monotonic()
        try:
            parsed = httpx.URL(url)
            addresses = pinned(parsed, self.targets)
        except TargetRefused as exc:
            return Outcome(None, f"refused: {exc.message}", None, 0.0, final=True)
        except (httpx.InvalidURL, InvalidRequest) as exc:
            return Outcome(None, scrub(f"invalid URL: {exc}", url), None, 0.0, final=True)
        except OSError as exc:  # the name does not resolve (now): try again later
            return Outcome(None, scrub(f"cannot resolve the host: {exc}", url), None,
                           (time.monotonic() - start) * 1000)
        headers = {"Host": parsed.netloc.decode("ascii"), "Content-Type": "application/json",
                   "User-Agent": USER_AGENT, "X-Promptrev-Event": event,
                   "X-Promptrev-Delivery": str(delivery_id), "X-Promptrev-Hook": str(hook_id),
                   SIGNATURE_HEADER: signature(secret, body)}
        try:
            status, kept = send(self._client, addresses, body, headers, RESPONSE_READ)
        except httpx.TimeoutException:
            return Outcome(None, f"timed out after {self.timeout:g} s", None,
                           (time.monotonic() - start) * 1000)
        except httpx.HTTPError as exc:
            return Outcome(None, scrub(f"{type(exc).__name__}: {exc}", url), None,
                           (time.monotonic() - start) * 1000)
        error = None if 200 <= status < 300 else f"HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed)"
        return Outcome(status, error, excerpt(kept, RESPONSE_KEPT),
                       (time.monotonic() - start) * 1000)

    def _record(self, delivery_id: int, number: int, started: float, outcome: Outcome) -> None:
        now = time.time()
        values: dict[str, Any] = {"attempts": number, "last_status": outcome.status_code,
                                  "last_error": outcome.error, "claim": None,
                                  "claimed_until": None}
        if outcome.ok:
            values.update(status="delivered", delivered=now)
        elif outcome.final or number >= self.retry.max_attempts:
            values.update(status="failed")
        else:
            values.update(next_attempt=now + self.retry.delay(number))
        with writing(self.engine) as conn:
            conn.execute(T_ATTEMPT.insert().values(
                delivery_id=delivery_id, number=number, started=started,
                duration_ms=outcome.duration_ms, status_code=outcome.status_code,
                error=outcome.error, response=outcome.response))
            done = conn.execute(T_DELIVERY.update().where(
                T_DELIVERY.c.id == delivery_id, T_DELIVERY.c.claim == self.claim)
                .values(**values))
        if done.rowcount == 0:
            log.warning("webhook delivery %s: lease lost before the attempt was recorded",
                        delivery_id)

"""What one server process holds: its settings, the accounts, a pool of registries.

A :class:`promptrev.Registry` must not be used by two threads at once. Each request
borrows one from the pool (opening one when none is idle) and gives it back when the
request ends: gunicorn's sync workers reuse a single registry for ever, and Flask's
threaded development server, which starts a thread per request, never leaks one. Every
worker shares the same Git repository and index safely (the core's writes are
compare-and-swap under a lock).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from flask import g
from werkzeug.http import parse_etags

from promptrev.accounts import Accounts
from promptrev.config import Settings
from promptrev.evaluation.prices import load_price_table
from promptrev.jobs import JobQueue
from promptrev.policy import Policy
from promptrev.registry import Registry
from promptrev.runner.base import model_specs
from promptrev.runner.execute import Runner
from promptrev.runner.trust import Trust

MAX_IDLE = 8


@dataclass
class Lease:
    """A registry with the response cache built on it."""

    registry: Registry
    bodies: BodyCache = field(default_factory=lambda: BodyCache())


class ServerState:
    """Per-process state of the app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.accounts = Accounts(settings.accounts_url)
        self.policy = Policy.from_settings(settings)
        self.models = model_specs(settings.configured_models(), settings.env)
        self.backends: dict = {}  # loaded models, shared by every request of this process
        # Read at start, so that a broken PROMPTREV_PRICES stops the server with its error.
        self.prices = load_price_table(settings.prices_file)
        self._idle: list[Lease] = []
        self._jobs: JobQueue | None = None
        self._lock = threading.Lock()
        self._head_watch: Any = None

    def head_watch(self):
        """This process's waiter on ``main`` (replication long-polls), made on first use."""
        with self._lock:
            if self._head_watch is None:
                from promptrev.replication import HeadWatch

                self._head_watch = HeadWatch(
                    self.settings.registry, max_waiters=self.settings.replication_max_waiters)
            return self._head_watch

    def leased_head(self) -> str | None:
        """The commit of ``main`` this request's registry last read (None: it took none)."""
        lease = g.get("_promptrev_lease")
        return lease.registry.synced_head if lease is not None else None

    @property
    def jobs(self) -> JobQueue:
        """The job queue this process puts evaluation runs on (opened on first use)."""
        with self._lock:
            if self._jobs is None:
                self._jobs = JobQueue(self.settings)
            return self._jobs

    def runner(self, registry: Registry) -> Runner:
        """A runner under the server's rules: configured models, allowed variables only."""
        return Runner(registry, env=self.settings.env, models=self.models,
                      backends=self.backends, trust=Trust.server(self.settings.allow_env))

    def tokens(self, registry: Registry, ref_a: str, ref_b: str,
               variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Tokens of each rendered message of two prompt versions and the input cost per
        1,000 calls, from the price table (what every diff shows)."""
        from promptrev.evaluation.tokens import version_token_delta

        return version_token_delta(registry, ref_a, ref_b, runner=self.runner(registry),
                                   prices=self.prices, variables=variables)

    def change_tokens(self, registry: Registry, change) -> dict[str, Any] | None:
        """:meth:`tokens` of a change request's prompt change (None for other kinds)."""
        from promptrev.evaluation.tokens import text_token_delta

        if change.kind != "prompt":
            return None
        return text_token_delta(*change.texts, change.diff.left, change.diff.right,
                                runner=self.runner(registry), prices=self.prices,
                                includes=change.includes)

    @property
    def registry(self) -> Registry:
        """The registry this request borrowed (borrowed on first use)."""
        return self.lease().registry

    def lease(self) -> Lease:
        """This request's registry and its response cache (borrowed on first use)."""
        lease = g.get("_promptrev_lease")
        if lease is None:
            lease = g._promptrev_lease = self.take()
        return lease

    def release(self, _exc: BaseException | None = None) -> None:
        """Give this request's registry back to the pool (Flask teardown)."""
        lease = g.pop("_promptrev_lease", None)
        if lease is not None:
            self.give(lease)

    def take(self) -> Lease:
        """Borrow an idle registry (with its cache), or open one."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Lease(Registry.open(self.settings.registry, index_url=self.settings.index_url,
                                   max_bytes=self.settings.max_bytes))

    def give(self, lease: Lease) -> None:
        """Return a borrowed registry; beyond ``MAX_IDLE`` idle ones it is closed."""
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append(lease)
                return
        lease.registry.close()

    def close(self) -> None:
        """Close idle registries and the accounts database."""
        with self._lock:
            for lease in self._idle:
                lease.registry.close()
            self._idle.clear()
        self.accounts.close()


class BodyCache:
    """Serialized JSON bodies with their ETags, valid for one commit of ``main``.

    Reads by label are the hot path of applications; serving them from bytes built once
    per commit keeps a label GET near the cost of a hello-world response.
    """

    def __init__(self, size: int = 4096, max_bytes: int = 64 * 1024 * 1024):
        self.head: str | None = None
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self.items: OrderedDict[Any, tuple[bytes, str]] = OrderedDict()

    def get(self, head: str | None, key: Any) -> tuple[bytes, str] | None:
        """A cached (body, etag) made at ``head``, or None."""
        if head != self.head:
            self.items.clear()
            self.bytes = 0
            self.head = head
            return None
        return self.items.get(key)

    def put(self, head: str | None, key: Any, payload: Any) -> tuple[bytes, str]:
        """Serialize ``payload``, remember it for ``head`` and return (body, etag)."""
        body = json_bytes(payload)
        entry = (body, etag_of(body, head))
        if head == self.head and key not in self.items and len(body) <= self.max_bytes // 16:
            while self.items and (len(self.items) >= self.size
                                  or self.bytes + len(body) > self.max_bytes):
                self.bytes -= len(self.items.popitem(last=False)[1][0])
            self.items[key] = entry
            self.bytes += len(body)
        return entry


def json_bytes(payload: Any) -> bytes:
    """Compact JSON with non-ASCII kept readable; always valid JSON.

    NaN and infinities (an interval over too few outcomes) become ``null``: Python would
    write ``NaN``, which no JSON parser reads. A lone surrogate becomes "?".
    """
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(payload), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "replace")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def etag_of(body: bytes, commit: str | None = None) -> str:
    """A strong ETag for a response body served at ``commit`` of ``main``:
    ``"<hash of the body>.<commit, 12 digits>"``, the same on every replica at that commit."""
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return f'"{digest}.{commit[:12]}"' if commit else f'"{digest}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag``, or the same body served at another commit
    (a replica a commit behind, or a commit that left this artifact alone): the caller's
    copy is current, and the 304 gives it the new ETag."""
    if not if_none_match:
        return False
    tags = parse_etags(if_none_match)
    if tags.contains(etag[1:-1]):
        return True
    digest = etag[1:-1].partition(".")[0]
    return any(tag.partition(".")[0] == digest for tag in tags.as_set() if tag)

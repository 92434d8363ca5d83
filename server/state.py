"""What one server process holds: its settings, the accounts, a registry per thread.

A :class:`promptrev.Registry` belongs to one thread; gunicorn's sync workers have one
thread each, Flask's development server several. Every worker shares the same Git
repository and index safely (the core's writes are compare-and-swap under a lock).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from promptrev.accounts import Accounts
from promptrev.registry import Registry

from .settings import Settings


class ServerState:
    """Per-process state of the app."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.accounts = Accounts(settings.accounts_url)
        self.protected_labels = frozenset(settings.protected_labels)
        self._local = threading.local()
        self._all: list[Registry] = []
        self._lock = threading.Lock()

    @property
    def registry(self) -> Registry:
        """This thread's registry (opened on first use)."""
        reg = getattr(self._local, "registry", None)
        if reg is None:
            reg = Registry.open(self.settings.registry, index_url=self.settings.index_url,
                                max_bytes=self.settings.max_bytes)
            self._local.registry = reg
            self._local.bodies = BodyCache()
            with self._lock:
                self._all.append(reg)
        return reg

    @property
    def bodies(self) -> BodyCache:
        """This thread's cache of serialized read responses."""
        self.registry  # noqa: B018 - opens the registry and its cache on first use
        return self._local.bodies

    def close(self) -> None:
        """Close every registry and the accounts database."""
        with self._lock:
            for reg in self._all:
                reg.close()
            self._all.clear()
        self.accounts.close()


class BodyCache:
    """Serialized JSON bodies with their ETags, valid for one commit of ``main``.

    Reads by label are the hot path of applications; serving them from bytes built once
    per commit keeps a label GET near the cost of a hello-world response.
    """

    def __init__(self, size: int = 4096):
        self.head: str | None = None
        self.size = size
        self.items: OrderedDict[Any, tuple[bytes, str]] = OrderedDict()

    def get(self, head: str | None, key: Any) -> tuple[bytes, str] | None:
        """A cached (body, etag) made at ``head``, or None."""
        if head != self.head:
            self.items.clear()
            self.head = head
            return None
        return self.items.get(key)

    def put(self, head: str | None, key: Any, payload: Any) -> tuple[bytes, str]:
        """Serialize ``payload``, remember it for ``head`` and return (body, etag)."""
        body = json_bytes(payload)
        entry = (body, etag_of(body))
        if head == self.head:
            if len(self.items) >= self.size:
                self.items.popitem(last=False)
            self.items[key] = entry
        return entry


def json_bytes(payload: Any) -> bytes:
    """Compact JSON with non-ASCII kept readable."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def etag_of(body: bytes) -> str:
    """A strong ETag for a response body."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'

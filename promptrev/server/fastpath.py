"""The hot read, served below Flask: ``GET /api/v1/artifact?ref=…`` answered from cache.

Applications read prompts by label all day; the JSON API already keeps each answer as
bytes with its ETag, per commit of ``main``. This WSGI layer answers such a read when the
bytes are already cached for the current ``main`` and the caller's token is valid —
exactly the bytes and headers the Flask view would send — and hands every other request
(a cache miss, a missing or bad token, a ``key`` for a traffic split, anything else) to
the Flask app unchanged (as is one that fails here: a damaged registry or index gets
Flask's JSON error, never the WSGI server's page). It skips Flask's request context, hooks
and routing, which cost more than the read itself, so it adds the security headers that
Talisman adds to Flask's answers itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from promptrev.errors import PromptrevError
from promptrev.model.artifacts import KINDS

from .state import not_modified

COMMIT_HEADER = "X-Promptrev-Commit"  # the commit of main a read was served from

_PATH = "/api/v1/artifact"


class FastReads:
    """WSGI middleware: cached label reads without the framework, the rest to ``app``."""

    def __init__(self, app: Callable, state: Any, headers: list[tuple[str, str]] = (),
                 *, hsts: str | None = None):
        self.app = app
        self.state = state
        self.headers = list(headers)  # the security headers of every answer
        self.hsts = hsts  # Strict-Transport-Security, sent over HTTPS only

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Serve a cached read, or pass the request on."""
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == _PATH:
            try:
                answer = self._cached(environ)
            except Exception:  # noqa: BLE001 - Flask meets it again and answers it in JSON
                answer = None
            if answer is not None:
                status, headers, body = answer
                headers += self.headers
                if self.hsts and (environ.get("wsgi.url_scheme") == "https" or environ.get(
                        "HTTP_X_FORWARDED_PROTO") == "https"):
                    headers.append(("Strict-Transport-Security", self.hsts))
                start_response(status, headers)
                return [body]
        return self.app(environ, start_response)

    def _cached(self, environ: dict) -> tuple[str, list, bytes] | None:
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        ref, kind = query.get("ref"), query.get("kind") or None
        if not ref or len(ref) > 1024 or "key" in query or kind not in (None, *KINDS):
            return None
        if not self._allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return None  # Flask answers 401 with the full error
        lease = self.state.take()
        try:
            head = lease.registry.sync()
            entry = lease.bodies.get(head, ("get", ref, kind))
        finally:
            self.state.give(lease)
        if entry is None:
            return None  # Flask builds and caches it
        body, etag = entry
        commit = head or ""
        if not_modified(environ.get("HTTP_IF_NONE_MATCH"), etag):
            return "304 NOT MODIFIED", [("ETag", etag), (COMMIT_HEADER, commit)], b""
        return "200 OK", [("Content-Type", "application/json"),
                          ("Content-Length", str(len(body))), ("ETag", etag),
                          ("Cache-Control", "no-cache"), (COMMIT_HEADER, commit)], body

    def _allowed(self, header: str) -> bool:
        if header[:7].lower() == "bearer ":
            try:
                self.state.accounts.authenticate(header[7:].strip())
            except PromptrevError:
                return False
            return True
        return not header and self.state.settings.anonymous_read

"""Roles over HTTP (issue 20): the primary's long-poll, a replica's redirects and headers.

* ``GET /api/v1/replication/wait?after=<commit>&timeout=<s>`` (any server, a viewer's
  token): answers ``{"commit": …, "changed": …}`` as soon as ``main`` is not ``after``,
  or when ``timeout`` (at most ``PROMPTREV_REPLICATION_WAIT``) has passed. At most
  ``PROMPTREV_REPLICATION_MAX_WAITERS`` wait per worker process; more get 503 at once, so
  long-polls never take the threads reads need.
* :class:`ReplicaGate`, the outermost WSGI layer of a replica: a write (an API write, a
  page's form, ``git push``), or a read of what only the primary's database holds (change
  requests, evaluations, webhooks, A/B outcomes: :data:`PRIMARY_ONLY`), is answered
  ``307 Temporary Redirect`` to the same path on the primary, with
  ``X-Promptrev-Redirected: primary``; while the follower cannot reach the
  primary it is refused with ``503`` (a redirect to a dead host helps nobody) and every
  answer carries ``X-Promptrev-Stale: primary unreachable since <UTC time>``. Every
  answer of a replica carries ``X-Promptrev-Role: replica``.

Every read the API answers says which commit of ``main`` it was served from in
``X-Promptrev-Commit`` (and in its ETag, :func:`promptrev.server.state.etag_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote

from flask import Response, request

from promptrev.config import Settings
from promptrev.errors import InvalidRequest
from promptrev.replication import StatusReader

from .api import bp
from .params import json_response
from .state import json_bytes

STALE_HEADER = "X-Promptrev-Stale"
REDIRECTED_HEADER = "X-Promptrev-Redirected"
ROLE_HEADER = "X-Promptrev-Role"  # "replica" on every answer of a replica
_READS = ("GET", "HEAD", "OPTIONS")
# POSTs that change nothing in the registry: served by the replica itself.
_READ_POSTS = frozenset(("/api/v1/render", "/edit/check", "/login", "/logout",
                         "/v1/chat/completions"))
# Reads of what lives only in the primary's database, not in Git (change requests,
# evaluation runs, webhooks, A/B outcomes): a replica's own tables hold none of it.
PRIMARY_ONLY = ("/reviews", "/api/v1/reviews", "/eval/", "/api/v1/evaluations/",
                "/api/v1/webhooks", "/api/v1/webhook-deliveries", "/api/v1/experiments",
                "/api/v1/outcomes")
_HEX = frozenset("0123456789abcdef")
# What a Location may carry as is: WSGI gives the path decoded (a %0D%0A in the request
# is a line break here), so everything else is encoded again: no header is ever injected.
_PATH = "/:@!$&'()*+,;=-._~"
_QUERY = _PATH + "?%"
MAX_TIMEOUT = 60  # seconds a long-poll may ask for (PROMPTREV_REPLICATION_WAIT caps it too)


@bp.get("/replication/wait")
def replication_wait() -> Response:
    """Answer once ``main`` is not ``after`` (a commit id, or empty for none)."""
    from .auth import state

    after = request.args.get("after", "").strip().lower()
    if len(after) > 64 or not set(after) <= _HEX:
        raise InvalidRequest("after must be a commit id (hexadecimal) or empty")
    limit = state().settings.replication_wait
    raw = request.args.get("timeout")
    try:
        timeout = limit if raw is None else float(raw)
    except ValueError:
        raise InvalidRequest(f"timeout must be a number of seconds, not {raw!r}") from None
    if not 0 <= timeout <= MAX_TIMEOUT:
        raise InvalidRequest(f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT}, "
                             f"not {raw!r}")
    timeout = min(timeout, limit)
    lease = state().lease()
    head = lease.registry.sync()
    state().release()  # give the registry back: no connection is held while waiting
    if (head or "") == after and timeout > 0:
        head = state().head_watch().wait(after or None, timeout) or head
    return json_response({"commit": head, "changed": (head or "") != after})


def is_write(method: str, path: str, query: str) -> bool:
    """Whether only the primary can answer a request: it would change the registry, or it
    reads what only the primary's database holds (a replica sends it to the primary)."""
    if path == "/eval" or path.startswith(PRIMARY_ONLY):
        return True
    if method in _READS:
        return method == "GET" and path.endswith("/info/refs") and \
            path.startswith("/git/") and ("service", "git-receive-pack") in parse_qsl(query)
    if path in _READ_POSTS:
        return False
    return not (path.startswith("/git/") and path.endswith("/git-upload-pack"))


def _quoted(text: str, safe: str) -> str:
    """``text`` (WSGI's latin-1 string of the request's bytes) percent-encoded."""
    return quote(text.encode("latin-1", "replace"), safe=safe)


class ReplicaGate:
    """WSGI middleware of a replica: writes go to the primary; staleness is said."""

    def __init__(self, app: Callable, settings: Settings, headers: list[tuple[str, str]]):
        self.app = app
        self.primary = settings.redirect_url or ""
        self.status = StatusReader(settings.registry)
        self.headers = list(headers)  # the security headers, as on every answer

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Redirect or refuse a write; pass the rest on, adding the stale header."""
        status = self.status.get()
        stale = "primary not reached yet" if status is None else status.stale
        down = status is None or not status.reachable
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        if is_write(method, path, query):
            if down:
                return self._answer(start_response, "503 SERVICE UNAVAILABLE", {
                    "code": "primary_unreachable",
                    "message": f"this server is a read replica and its primary "
                               f"{self.primary} cannot be reached ({stale}): writes are "
                               "refused until it is back; reads still answer from the "
                               "last copied commit", "details": {"primary": self.primary}},
                    [(STALE_HEADER, stale), ("Retry-After", "5")])
            where = "/" + (environ.get("SCRIPT_NAME", "") + path).lstrip("/")
            location = self.primary + _quoted(where, _PATH) \
                + (f"?{_quoted(query, _QUERY)}" if query else "")
            return self._answer(start_response, "307 TEMPORARY REDIRECT", {
                "code": "redirected_to_primary",
                "message": f"this server is a read replica: writes (and change requests, "
                           f"evaluations, webhooks) are the primary's, {location}",
                "details": {"primary": self.primary, "location": location}},
                [("Location", location), (REDIRECTED_HEADER, "primary")])
        said = [(ROLE_HEADER, "replica")] + ([(STALE_HEADER, stale)] if stale else [])

        def start(line: str, headers: list, exc_info=None):
            headers.extend(said)
            return start_response(line, headers, exc_info)

        return self.app(environ, start)

    def _answer(self, start_response: Callable, line: str, error: dict,
                extra: list[tuple[str, str]]) -> list[bytes]:
        key = "redirect" if line.startswith("307") else "error"
        body = json_bytes({key: error})
        start_response(line, [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                              (ROLE_HEADER, "replica"), *extra, *self.headers])
        return [body]

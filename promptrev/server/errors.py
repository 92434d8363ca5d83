"""The one translation point from errors to HTTP: JSON for programs, a page for people.

Every error a client sees has the shape ``{"error": {"code", "message", "details"}}``;
unexpected exceptions are logged here and answered with a generic 500, never a trace.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from promptrev import errors
from promptrev.errors import PromptrevError

from .auth import web_user
from .state import json_bytes

log = logging.getLogger("promptrev.server")
_JSON_PREFIXES = ("/api/", "/v1/")


# The one mapping from what went wrong (the core's error classes) to HTTP statuses; an
# error is answered with the status of the nearest class in its hierarchy.
STATUSES: dict[type[PromptrevError], int] = {
    errors.InvalidName: 400, errors.InvalidReference: 400, errors.AmbiguousReference: 400,
    errors.InvalidRequest: 400, errors.Unauthorized: 401, errors.Forbidden: 403,
    errors.NotFound: 404, errors.ArtifactDeleted: 410, errors.Conflict: 409,
    errors.TooLarge: 413, errors.ValidationFailed: 422, errors.RenderFailed: 422,
    errors.PreconditionRequired: 428, errors.StorageError: 503, errors.StorageFull: 507,
    errors.RemoteFailed: 502, errors.Busy: 503, PromptrevError: 500,
    # stored content that asks for a model, connection or secret the operator did not give
    errors.ModelNotConfigured: 422, errors.EnvNotAllowed: 422,
    errors.UnsupportedEncoding: 415,  # issue 14, item 7
    errors.TooManyAttempts: 429,
    errors.ReadOnlyReplica: 503,  # issue 20: the primary takes writes
}


def http_status(exc: PromptrevError) -> int:
    """The HTTP status that answers ``exc``."""
    return next(STATUSES[cls] for cls in type(exc).__mro__ if cls in STATUSES)


def _wants_json() -> bool:
    return request.path.startswith(_JSON_PREFIXES) or "/info/lfs/" in request.path


def error_response(status: int, code: str, message: str, details: dict | None = None
                   ) -> Response:
    """Answer an error in the shape the caller expects."""
    payload = {"error": {"code": code, "message": message, "details": details or {}}}
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="promptrev"'
    if _wants_json():
        return Response(json_bytes(payload), status, headers, mimetype="application/json")
    html = render_template("error.html", status=status, code=code, message=message,
                           details=details or {}, user=_page_user())
    return Response(html, status, headers, mimetype="text/html")


def _page_user():
    """Who the error page's menu is for: the logged-in user, as on every other page.

    An error met while finding out (the accounts database is down) leaves the menu logged
    out rather than turning one error page into another.
    """
    try:
        return web_user()
    except Exception:  # noqa: BLE001 - the page must still be answered
        log.warning("error page on %s: user not loaded", request.path, exc_info=True)
        return None


def install(app: Flask) -> None:
    """Register the handlers."""

    @app.errorhandler(PromptrevError)
    def _promptrev(exc: PromptrevError) -> Response:
        response = error_response(http_status(exc), exc.code, exc.message, exc.details)
        if isinstance(exc, errors.TooManyAttempts):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Response:
        return error_response(400, "csrf_failed", f"form refused: {exc.description} "
                              "(reload the page and try again)")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            code, message = "too_large", (f"request body is larger than the limit of "
                                          f"{app.config['MAX_CONTENT_LENGTH']} bytes")
        if exc.code == 429:  # Flask-Limiter: its description names the limit
            code = "too_many_requests"
        response = error_response(exc.code or 500, code, message)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        explained = errors.explain(exc)  # a database failure a feature's query met
        if explained is not None:
            log.warning("%s %s: %s", request.method, request.path, explained.message)
            return _promptrev(explained)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error; the details "
                              "are in the server log")

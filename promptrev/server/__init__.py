"""The promptrev server: ``create_app(settings)`` builds a Flask app on a registry.

Blueprints: ``api`` (JSON under ``/api/v1``), ``review_api`` and ``review_pages`` (change
requests), ``web`` (pages) and ``git_http`` (Git's smart HTTP protocol under
``/git/registry.git``). ``prepare`` makes a fresh machine ready before any worker starts:
registry, seed prompts, session key and a first admin account, so the server never runs
open to writes by accident.
"""

from __future__ import annotations

import gc
import os
import secrets
from dataclasses import dataclass

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from promptrev.accounts import Accounts
from promptrev.config import Settings
from promptrev.importing import import_folder
from promptrev.model import render_budget
from promptrev.model.render_budget import RenderLimits
from promptrev.registry import Registry

__all__ = ["Settings", "create_app", "prepare"]
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
csrf = CSRFProtect()


@dataclass
class Prepared:
    """What ``prepare`` did, for the operator to read."""

    settings: Settings
    created_registry: bool = False
    seeded: int = 0
    admin_password: str | None = None


def prepare(settings: Settings, *, admin_password: str | None = None) -> Prepared:
    """Create what is missing: registry, starter prompts if empty, session key, an admin."""
    out = Prepared(settings)
    if not os.path.exists(os.path.join(settings.registry, "HEAD")):
        Registry.init(settings.registry, index_url=settings.index_url,
                      max_bytes=settings.max_bytes).close()
        out.created_registry = True
    if settings.seed_from and os.path.isdir(settings.seed_from):
        with Registry.open(settings.registry, index_url=settings.index_url,
                           max_bytes=settings.max_bytes) as reg:
            if not reg.list(include_deleted=True):  # seed an empty registry only
                report = import_folder(reg, settings.seed_from,
                                       message="import starter library",
                                       author="promptrev <promptrev@localhost>")
                out.seeded = len(report.created)
    settings = settings.resolved()
    out.settings = settings
    accounts = Accounts(settings.accounts_url)
    try:
        if accounts.count() == 0:
            password = admin_password or secrets.token_urlsafe(12)
            accounts.add_user("admin", "admin", password=password)
            out.admin_password = None if admin_password else password
    finally:
        accounts.close()
    return out


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app on an existing registry (see :func:`prepare`)."""
    from . import (
        api,
        errors,
        eval_pages,
        git_http,
        openai_api,
        review_api,
        review_pages,
        web,
        webhook_api,  # noqa: F401 - adds its routes to api.bp
    )
    from .auth import login_manager
    from .fastpath import FastReads
    from .state import ServerState

    settings = (settings or Settings.from_env(os.environ)).resolved()
    render_budget.configure(RenderLimits.from_settings(settings))  # every render path
    app = Flask(__name__, template_folder=TEMPLATES)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        JSON_SORT_KEYS=False,
    )
    state = ServerState(settings)
    app.extensions["promptrev"] = state
    app.teardown_appcontext(state.release)
    login_manager.init_app(app)
    csrf.init_app(app)
    csrf.exempt(api.bp)  # the APIs take bearer tokens only, never cookies
    csrf.exempt(openai_api.bp)
    csrf.exempt(review_api.bp)
    csrf.exempt(git_http.bp)  # Git sends tokens (HTTP Basic), never cookies
    app.register_blueprint(api.bp)
    app.register_blueprint(review_api.bp)
    app.register_blueprint(review_pages.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(eval_pages.bp)
    app.register_blueprint(git_http.bp)
    errors.install(app)
    web.install_filters(app)
    app.session_interface = _NoSessionForApis()
    app.wsgi_app = FastReads(app.wsgi_app, state)  # cached label reads below Flask
    # Everything built so far lives as long as the worker: keep the collector from
    # walking it again (a full collection over it stalled queued requests for ~100 ms).
    gc.freeze()
    return app


class _NoSessionForApis(SecureCookieSessionInterface):
    """The APIs and Git take tokens only: no session cookie is read or written for them."""

    def open_session(self, app, request):
        """No session under ``/api/``, ``/v1/``, ``/git/``; the cookie session elsewhere."""
        if request.path.startswith(("/api/", "/v1/", "/git/")):
            return self.null_session_class()
        return super().open_session(app, request)

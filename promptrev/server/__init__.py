"""The promptrev server: ``create_app(settings)`` builds a Flask app on a registry.

Blueprints: ``api`` (JSON under ``/api/v1``), ``review_api`` and ``review_pages`` (change
requests), ``web`` (pages) and ``git_http`` (Git's smart HTTP protocol under
``/git/registry.git``). ``prepare`` makes a fresh machine ready before any worker starts:
registry, seed prompts, session key and a first admin account, so the server never runs
open to writes by accident.

Every response carries security headers (Flask-Talisman; the cached label reads below
Flask get the same ones from :data:`security_headers`), and Flask-Limiter counts login
attempts and refused tokens per client.
"""

from __future__ import annotations

import gc
import math
import os
import secrets
import time
from dataclasses import dataclass

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect

from promptrev.accounts import Accounts
from promptrev.config import Settings
from promptrev.errors import InvalidRequest
from promptrev.importing import import_folder
from promptrev.model import render_budget
from promptrev.model.render_budget import RenderLimits
from promptrev.registry import Registry, configure_durability

__all__ = ["Settings", "create_app", "prepare"]
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
csrf = CSRFProtect()
# No inline script or style: scripts and styles come from the server's own static files
# (pages work without them), and scripts may call back only to this origin.
CSP = {"default-src": "'none'", "script-src": "'self'", "connect-src": "'self'",
       "style-src": "'self'", "img-src": "'self' data:",
       "form-action": "'self'", "frame-ancestors": "'none'", "base-uri": "'none'"}
CSP_TEXT = "; ".join(f"{k} {v}" for k, v in CSP.items())
REFERRER_POLICY = "same-origin"
PERMISSIONS_POLICY = "browsing-topics=()"
HSTS = "max-age=31556926; includeSubDomains"  # only with PROMPTREV_COOKIE_SECURE, over HTTPS


def security_headers() -> list[tuple[str, str]]:
    """The headers Talisman adds to every Flask response (HSTS aside), for the fast path."""
    return [("Permissions-Policy", PERMISSIONS_POLICY), ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", CSP_TEXT),
            ("Referrer-Policy", REFERRER_POLICY)]


@dataclass
class Prepared:
    """What ``prepare`` did, for the operator to read."""

    settings: Settings
    created_registry: bool = False
    seeded: int = 0
    admin_password: str | None = None
    promoted: bool = False  # was a replica, now takes writes
    replica_head: str | None = None  # a replica: the commit copied from the primary
    replica_error: str | None = None  # a replica: why the primary could not be copied


def _first_copy(reg: Registry, settings: Settings) -> tuple[str | None, str | None]:
    """Follow the primary once; the commit copied, or why it could not be."""
    from promptrev.errors import PromptrevError
    from promptrev.replication import Follower

    follower = Follower(settings.registry, primary=settings.primary,
                        token=settings.primary_token)
    try:
        return follower.step(reg), None
    except PromptrevError as exc:
        follower.record_failure(reg.synced_head, exc.message)
        return None, exc.message
    finally:
        follower.close()


def prepare(settings: Settings, *, admin_password: str | None = None) -> Prepared:
    """Create what is missing: registry, starter prompts if empty, session key, an admin."""
    out = Prepared(settings)
    if not os.path.exists(os.path.join(settings.registry, "HEAD")):
        Registry.init(settings.registry, index_url=settings.index_url,
                      max_bytes=settings.max_bytes).close()
        out.created_registry = True
    with Registry.open(settings.registry, index_url=settings.index_url,
                       max_bytes=settings.max_bytes) as reg:
        was = reg.replica_of
        reg.set_replica_of(settings.primary)  # the role is the setting (issue 20)
        out.promoted = bool(was and not settings.primary)
        if settings.primary:  # copy the primary's main now, so reads start with it
            out.replica_head, out.replica_error = _first_copy(reg, settings)
    if settings.seed_from and os.path.isdir(settings.seed_from) and not settings.primary:
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
        eval_api,  # noqa: F401 - adds its routes to api.bp
        eval_pages,
        finetune_api,  # noqa: F401 - adds its routes to api.bp
        git_http,
        lfs_http,
        openai_api,
        replica,
        review_api,
        review_pages,
        web,
        webhook_api,  # noqa: F401 - adds its routes to api.bp
    )
    from .auth import client_address, login_manager, token_refused
    from .fastpath import COMMIT_HEADER, FastReads
    from .state import ServerState

    settings = (settings or Settings.from_env(os.environ)).resolved()
    render_budget.configure(RenderLimits.from_settings(settings))  # every render path
    configure_durability(settings.durability)  # every write of this worker process
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
    csrf.exempt(lfs_http.bp)  # so does git-lfs
    app.register_blueprint(api.bp)
    app.register_blueprint(review_api.bp)
    app.register_blueprint(review_pages.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(web.bp)
    app.register_blueprint(eval_pages.bp)
    app.register_blueprint(git_http.bp)
    app.register_blueprint(lfs_http.bp)
    errors.install(app)
    web.install_filters(app)
    _protect(app, settings, client_address, token_refused, login="web.login",
             token_blueprints=(api.bp, review_api.bp, openai_api.bp, git_http.bp,
                               lfs_http.bp))
    app.session_interface = _NoSessionForApis()
    app.wsgi_app = FastReads(app.wsgi_app, state,  # cached label reads below Flask
                             security_headers(), hsts=HSTS if settings.cookie_secure else None)

    @app.after_request
    def _served_from(response):
        """Every read says which commit of main it was served from (issue 20)."""
        head = state.leased_head()
        if head and request.method in ("GET", "HEAD"):
            response.headers.setdefault(COMMIT_HEADER, head)
        return response

    if settings.primary:  # a read replica: writes go to the primary (issue 20)
        app.wsgi_app = replica.ReplicaGate(app.wsgi_app, settings, security_headers())
    # Everything built so far lives as long as the worker: keep the collector from
    # walking it again (a full collection over it stalled queued requests for ~100 ms).
    gc.freeze()
    return app


def _protect(app: Flask, settings: Settings, client, refused, *, login: str,
             token_blueprints) -> Limiter:
    """Security headers on every response; per-client limits on logins and bad tokens.

    Limiter's ``memory://`` storage counts per worker process (N workers allow up to N
    times a limit); the per-account and per-client login backoff lives in the accounts
    database and is shared. No HTTPS redirect: the server runs on loopback over HTTP by
    default; HSTS is sent only when ``cookie_secure`` is set and the request is HTTPS.
    """
    for name in ("login_rate_limit", "auth_failure_limit"):
        _check_limit(name, getattr(settings, name))
    Talisman(app, force_https=False, frame_options="DENY", content_security_policy=CSP,
             referrer_policy=REFERRER_POLICY, permissions_policy=PERMISSIONS_POLICY,
             feature_policy={}, document_policy={},
             strict_transport_security=settings.cookie_secure,
             session_cookie_secure=settings.cookie_secure, session_cookie_http_only=True,
             x_content_type_options=True)
    limiter = Limiter(client, app=app, storage_uri=settings.rate_limit_storage,
                      strategy="moving-window")

    @app.after_request
    def _retry_after(response):
        """A refusal by a limit says when to come back (a backoff's own 429 already does)."""
        limit = limiter.current_limit
        if response.status_code == 429 and "Retry-After" not in response.headers and \
                limit is not None and limit.breached:
            response.headers["Retry-After"] = str(max(1, math.ceil(limit.reset_at
                                                                   - time.time())))
        return response

    # this app's login view, wrapped by this app's limiter (blueprints are shared by apps)
    app.view_functions[login] = limiter.limit(
        settings.login_rate_limit, methods=["POST"], error_message=(
            f"too many login attempts from this client (limit: {settings.login_rate_limit})"
            "; wait and try again"))(app.view_functions[login])
    refusals = limiter.shared_limit(
        settings.auth_failure_limit, scope="refused-credentials", deduct_when=refused,
        error_message=(f"too many refused credentials from this client (limit: "
                       f"{settings.auth_failure_limit}); wait and try again"))
    for blueprint in token_blueprints:
        refusals(blueprint)
    return limiter


def _check_limit(name: str, value: str) -> None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise InvalidRequest(f"PROMPTREV_{name.upper()} must be a rate such as "
                             f"'30 per minute', not {value!r}") from None


class _NoSessionForApis(SecureCookieSessionInterface):
    """The APIs and Git take tokens only: no session cookie is read or written for them."""

    def open_session(self, app, request):
        """No session under ``/api/``, ``/v1/``, ``/git/``; the cookie session elsewhere."""
        if request.path.startswith(("/api/", "/v1/", "/git/")):
            return self.null_session_class()
        return super().open_session(app, request)

"""Who is asking: bearer tokens for the API, session cookies (Flask-Login) for pages.

The API takes no cookies, so a browser session can never be replayed against it by a
hostile page; the web forms take cookies and every one carries a CSRF token (Flask-WTF).
A session cookie names the user's session generation: a logout or a password change
moves it (in the accounts database, shared by every worker), and older cookies load no
user. Per-client request limits (Flask-Limiter) guard the login form and token checks.
"""

from __future__ import annotations

from flask import current_app, request
from flask_login import LoginManager, UserMixin, current_user

from promptrev.accounts import User
from promptrev.errors import Unauthorized

ANONYMOUS = User(0, "anonymous", "anonymous@localhost", "viewer")
login_manager = LoginManager()
login_manager.login_view = "web.login"
login_manager.login_message = "Please log in to see this page."


class SessionUser(UserMixin):
    """A logged-in user as Flask-Login wants it."""

    def __init__(self, user: User):
        self.user = user

    def get_id(self) -> str:
        """What the signed session cookie keeps: ``<user id>.<session generation>``."""
        return f"{self.user.id}.{self.user.session_generation}"


@login_manager.user_loader
def _load(session_id: str) -> SessionUser | None:
    user_id, _, generation = session_id.partition(".")
    if not user_id.isdigit() or not generation.isdigit():
        return None  # a cookie from before session generations: log in again
    user = state().accounts.user_by_id(int(user_id))
    if user is None or user.disabled or user.session_generation != int(generation):
        return None  # logged out or password changed since this cookie was issued
    return SessionUser(user)


def client_address() -> str:
    """The address rate limits and login backoff count per client (the peer's address;
    behind a reverse proxy, that proxy's unless the operator's WSGI setup rewrites it)."""
    return request.remote_addr or "unknown"


def token_refused(response) -> bool:
    """Whether a response refused credentials the caller sent (counts against its limit).

    A request without any (Git's first, which asks for the challenge) is not a guess.
    """
    return response.status_code == 401 and "Authorization" in request.headers


def state():
    """The server state of the running app."""
    return current_app.extensions["promptrev"]


def api_user() -> User:
    """The caller of an API request: a bearer token, or anonymous reads when enabled."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return state().accounts.authenticate(header[7:].strip())
    if header:
        raise Unauthorized("unsupported Authorization header: send 'Authorization: Bearer "
                           "<token>'")
    if state().settings.anonymous_read and request.method in ("GET", "HEAD"):
        return ANONYMOUS
    raise Unauthorized("this server needs an API token: send 'Authorization: Bearer <token>' "
                       "(create one with 'promptrev token create USER')")


def web_user() -> User | None:
    """The logged-in user of a page, anonymous when reads are open, else None."""
    if current_user.is_authenticated:
        return current_user.user
    if state().settings.anonymous_read:
        return ANONYMOUS
    return None

"""Who is asking: bearer tokens for the API, session cookies (Flask-Login) for pages.

The API takes no cookies, so a browser session can never be replayed against it by a
hostile page; the web forms take cookies and every one carries a CSRF token (Flask-WTF).
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
        """The id kept in the signed session cookie."""
        return str(self.user.id)


@login_manager.user_loader
def _load(user_id: str) -> SessionUser | None:
    user = state().accounts.user_by_id(int(user_id))
    return SessionUser(user) if user and not user.disabled else None


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

"""Accounts: users with roles, API tokens and passwords, and what each role may do.

Accounts are not artifacts: they live in their own tables (their own SQLite file by
default), which ``reindex`` never touches. Passwords are scrypt hashes; API tokens are
shown once and stored as SHA-256 digests (tokens are 256 random bits, so a fast hash is
the right one). Token lookups are cached per process and the cache is dropped whenever a
``generation`` counter, bumped by every account change, has moved: a revoked token is
refused on the very next request, in every worker.

Logins are throttled in the accounts database, so every worker process sees the same
counts: consecutive failures per account name (known or not) and per client address; past
a few free ones, checking is refused for a delay that doubles with each failure
(:class:`Backoff`). An unknown name or a user without a password costs the same scrypt
work as a real one, so timing does not tell which names exist. Each user has a session
generation, bumped by a logout and a password change, which session cookies carry.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .config import Settings
from .errors import Conflict, Forbidden, InvalidName, NotFound, TooManyAttempts, Unauthorized
from .storage.gitstore import Signature
from .storage.sql import create_engine, writing
from .storage.tables import T_ACCOUNT_STATE as T_STATE
from .storage.tables import T_THROTTLE, T_TOKEN, T_USER

ROLES = ("viewer", "editor", "admin")
TOKEN_PREFIX = "prv_"
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
# Checked instead when the name is unknown or has no password: the same scrypt work, and
# no password matches it (its digest is all zeros).
_DUMMY_HASH = (f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${'5a' * 16}$"
               + "00" * 64)
# What a token may be granted beyond its user's role (``promptrev token create --scope``).
SCOPES = ("outcomes",)
_FORGET_AFTER = 24 * 3600  # a throttle row untouched this long starts afresh

# What each action needs; the server and the CLI ask ``require`` rather than compare roles.
PERMISSIONS = {
    "read": "viewer",
    "write": "editor",  # save, delete, restore, rollback by content, unprotected labels
    "move_protected_label": "admin",
    "manage_accounts": "admin",
    "manage_webhooks": "admin",
}


_GENERATION_SQL = "SELECT generation FROM account_state WHERE id = 1"


@dataclass(frozen=True)
class User:
    """An authenticated account."""

    id: int
    name: str
    email: str
    role: str
    disabled: bool = False
    scopes: frozenset[str] = frozenset()  # the grants of the token that authenticated it
    session_generation: int = field(default=0, compare=False, repr=False)

    @property
    def author(self) -> str:
        """The Git author line of this user's commits."""
        return f"{self.name} <{self.email}>"

    def may(self, action: str) -> bool:
        """Whether this user's role allows ``action`` (see ``PERMISSIONS``)."""
        return ROLES.index(self.role) >= ROLES.index(PERMISSIONS[action])

    def require(self, action: str, what: str | None = None) -> None:
        """Raise :class:`Forbidden` unless the role allows ``action``."""
        if not self.may(action):
            needed = PERMISSIONS[action]
            raise Forbidden(f"user '{self.name}' is a {self.role}; {what or action} needs "
                            f"the {needed} role", details={"role": self.role, "needs": needed})

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (never secrets)."""
        return {"name": self.name, "email": self.email, "role": self.role,
                "disabled": self.disabled}


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token after creation: never the token itself."""

    id: int
    user: str
    label: str
    prefix: str
    created: int
    revoked: int | None
    scopes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"id": self.id, "user": self.user, "label": self.label, "prefix": self.prefix,
                "created": self.created, "revoked": self.revoked, "scopes": list(self.scopes)}


@dataclass(frozen=True)
class Backoff:
    """How failed logins are throttled: free attempts, then a doubling refusal."""

    free: int = 5  # consecutive failures of one account name before checking waits
    client_free: int = 20  # the same for one client address
    base: float = 1.0  # seconds refused after the first failure past the free ones
    cap: float = 900.0  # the longest refusal

    @classmethod
    def from_settings(cls, settings: Settings) -> Backoff:
        """The backoff the operator's settings describe."""
        return cls(settings.login_free_attempts, settings.login_client_free_attempts,
                   settings.login_backoff_base, settings.login_backoff_cap)

    def delay(self, failures: int, free: int) -> float:
        """Seconds to refuse checking after ``failures`` consecutive failures."""
        if failures <= free:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - free - 1, 60))


def operator(author: str) -> User:
    """The account of whoever runs the CLI on the registry's machine: an admin.

    ``author`` is a ``Name <email>`` line (``--author``, PROMPTREV_AUTHOR or git's).
    """
    who = Signature.parse(author)
    return User(-1, who.name, who.email, "admin")


def hash_password(password: str) -> str:
    """An scrypt hash with a random salt, in a self-describing format."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Constant-time check of ``password`` against a stored hash.

    Without a stored hash the dummy one is checked, so that the work (and the time) is
    the same whether or not the account exists and has a password.
    """
    try:
        algo, n, r, p, salt, digest = (stored or _DUMMY_HASH).split("$")
    except ValueError:
        return False
    if algo != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                         p=int(p))
    return hmac.compare_digest(got.hex(), digest)


def token_digest(token: str) -> str:
    """SHA-256 of a token, as stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_accounts_engine(url: str) -> Engine:
    """Engine for the account tables (created or migrated), with the state row."""
    engine = create_engine(url, database="accounts")
    with writing(engine) as conn:
        if conn.execute(sa.select(T_STATE.c.id)).first() is None:
            conn.execute(T_STATE.insert().values(id=1, generation=0))
    return engine


class Accounts:
    """Users and tokens in SQL; safe to share between threads of one process."""

    def __init__(self, url: str):
        self.engine = create_accounts_engine(url)
        self._lock = threading.Lock()
        self._generation = -1
        self._by_digest: dict[str, User] = {}
        self._kept = None  # a driver connection kept for the per-request generation read

    def close(self) -> None:
        """Release connections."""
        with self._lock:
            if self._kept is not None:
                self._kept.close()
                self._kept = None
        self.engine.dispose()

    # ---- users ---------------------------------------------------------------------
    def add_user(self, name: str, role: str, *, email: str | None = None,
                 password: str | None = None) -> User:
        """Create a user; the name must be new."""
        if not _USER_NAME.match(name or ""):
            raise InvalidName(f"invalid user name {name!r}: use letters, digits, '.', '_', "
                              "'-' (at most 64, starting with a letter or digit)")
        _check_role(role)
        with self._writing() as conn:
            if conn.execute(sa.select(T_USER.c.id).where(T_USER.c.name == name)).first():
                raise Conflict(f"user '{name}' already exists")
            conn.execute(T_USER.insert().values(
                name=name, email=email or f"{name}@localhost", role=role, disabled=False,
                password_hash=hash_password(password) if password else None,
                created=int(time.time())))
        return self.user(name)

    def user(self, name: str) -> User:
        """A user by name."""
        row = self._row(T_USER.c.name == name)
        if row is None:
            raise NotFound(f"no user '{name}'")
        return _user(row)

    def user_by_id(self, user_id: int) -> User | None:
        """A user by id, or None."""
        row = self._row(T_USER.c.id == user_id)
        return _user(row) if row else None

    def users(self) -> list[User]:
        """Every user, by name."""
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(sa.select(T_USER).order_by(T_USER.c.name))]

    def count(self) -> int:
        """How many users exist."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(T_USER)).scalar()

    def update_user(self, name: str, *, role: str | None = None, password: str | None = None,
                    disabled: bool | None = None) -> User:
        """Change a user's role, password or disabled flag."""
        values: dict = {}
        if role is not None:
            _check_role(role)
            values["role"] = role
        if password is not None:
            values["password_hash"] = hash_password(password)
            # a new password ends every session opened with the old one
            values["session_generation"] = T_USER.c.session_generation + 1
        if disabled is not None:
            values["disabled"] = disabled
        self.user(name)
        with self._writing() as conn:
            conn.execute(T_USER.update().where(T_USER.c.name == name).values(**values))
        return self.user(name)

    def login(self, name: str, password: str, *, client: str | None = None,
              backoff: Backoff = Backoff()) -> User:
        """The user whose name and password match; one error for every failure.

        Refused with :class:`TooManyAttempts` while the account name or the ``client``
        address is backing off; known and unknown names take the same path and work.
        """
        subjects = [(f"user:{name[:100]}", backoff.free)]
        if client:
            subjects.append((f"client:{client[:100]}", backoff.client_free))
        self._count_attempt(subjects, backoff, name, client)
        row = self._row(T_USER.c.name == name)
        ok = verify_password(password, row.password_hash if row else None)
        if row is None or not ok or row.disabled or not row.password_hash:
            raise Unauthorized("wrong user name or password")
        self._attempt_succeeded(subjects)
        return _user(row)

    def end_sessions(self, name: str) -> None:
        """Invalidate every session cookie of ``name`` (a logout ends them all)."""
        with writing(self.engine) as conn:
            conn.execute(T_USER.update().where(T_USER.c.name == name).values(
                session_generation=T_USER.c.session_generation + 1))

    # ---- tokens --------------------------------------------------------------------
    def create_token(self, user: str, label: str = "api", scopes: tuple[str, ...] = ()
                     ) -> tuple[str, TokenInfo]:
        """Create a token for ``user`` with extra ``scopes``; the token is returned only here."""
        scopes = tuple(sorted(set(scopes)))
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise InvalidName(f"unknown token scope {unknown[0]!r} (scopes: "
                              f"{', '.join(SCOPES)})")
        owner = self.user(user)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._writing() as conn:
            result = conn.execute(T_TOKEN.insert().values(
                user_id=owner.id, label=label[:100], prefix=token[:12],
                digest=token_digest(token), created=int(time.time()),
                scopes=",".join(scopes)))
            token_id = result.inserted_primary_key[0]
        return token, TokenInfo(token_id, owner.name, label[:100], token[:12],
                                int(time.time()), None, scopes)

    def tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Tokens (all, or one user's), newest first."""
        stmt = sa.select(T_TOKEN, T_USER.c.name.label("user_name")).join(
            T_USER, T_TOKEN.c.user_id == T_USER.c.id).order_by(T_TOKEN.c.id.desc())
        if user:
            stmt = stmt.where(T_USER.c.name == user)
        with self.engine.connect() as conn:
            return [TokenInfo(r.id, r.user_name, r.label, r.prefix, r.created, r.revoked,
                              _scopes(r.scopes)) for r in conn.execute(stmt)]

    def revoke_token(self, token_id: int, *, owner: str | None = None) -> TokenInfo:
        """Revoke a token by id (only ``owner``'s, when given)."""
        match = [t for t in self.tokens(owner) if t.id == token_id]
        if not match:
            raise NotFound(f"no token with id {token_id}" + (f" for user '{owner}'"
                                                               if owner else ""))
        with self._writing() as conn:
            conn.execute(T_TOKEN.update().where(T_TOKEN.c.id == token_id).values(
                revoked=int(time.time())))
        return [t for t in self.tokens(owner) if t.id == token_id][0]

    def authenticate(self, token: str) -> User:
        """The user a bearer token belongs to; revoked, unknown or disabled: Unauthorized."""
        digest = token_digest(token)
        generation = self._current_generation()
        with self._lock:
            if generation != self._generation:
                self._by_digest.clear()
                self._generation = generation
            user = self._by_digest.get(digest)
        if user is None:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(T_USER, T_TOKEN.c.scopes).join(
                    T_TOKEN, T_TOKEN.c.user_id == T_USER.c.id).where(
                    T_TOKEN.c.digest == digest, T_TOKEN.c.revoked.is_(None))).first()
            if row is None or row.disabled:
                raise Unauthorized("invalid or revoked API token")
            user = _user(row, frozenset(_scopes(row.scopes)))
            with self._lock:
                if len(self._by_digest) > 10_000:
                    self._by_digest.clear()
                self._by_digest[digest] = user
        return user

    # ---- internals -----------------------------------------------------------------
    def _current_generation(self) -> int:
        """The generation counter, read on a kept driver connection (~3 µs, not ~70 µs).

        Each read sees other processes' commits (no transaction is left open), so a token
        revoked anywhere is refused on the next request.
        """
        with self._lock:
            try:
                if self._kept is None:
                    self._kept = self.engine.raw_connection()
                cursor = self._kept.cursor()
                cursor.execute(_GENERATION_SQL)
                value = cursor.fetchone()[0]
                cursor.close()
                self._kept.rollback()
                return value
            except Exception:  # a dropped connection: reconnect on the next call
                self._drop_kept()
                raise

    def _drop_kept(self) -> None:
        if self._kept is not None:
            try:
                self._kept.invalidate()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._kept = None

    def _count_attempt(self, subjects: list[tuple[str, int]], backoff: Backoff, name: str,
                       client: str | None) -> None:
        """Refuse while a subject backs off; else count this attempt as a failure now.

        Counted before the password is checked, in one write transaction, so parallel
        attempts in several workers cannot all slip past the limit; a success undoes it.
        """
        now = time.time()
        keys = [subject for subject, _ in subjects]
        with writing(self.engine) as conn:
            rows = {r.subject: r for r in conn.execute(
                sa.select(T_THROTTLE).where(T_THROTTLE.c.subject.in_(keys)))}
            for subject, _free in subjects:
                row = rows.get(subject)
                if row is not None and row.blocked_until > now:
                    wait = max(1, math.ceil(row.blocked_until - now))
                    whom = (f"for user '{name[:100]}'" if subject.startswith("user:")
                            else f"from this client ({client})")
                    raise TooManyAttempts(
                        f"too many failed logins {whom}: try again in {wait} second"
                        + ("s" if wait != 1 else ""),
                        details={"retry_after": wait})
            for subject, free in subjects:
                row = rows.get(subject)
                fresh = row is None or now - row.updated > _FORGET_AFTER
                failures = 1 if fresh else row.failures + 1
                values = {"failures": failures, "updated": now,
                          "blocked_until": now + backoff.delay(failures, free)}
                if row is None:
                    conn.execute(T_THROTTLE.insert().values(subject=subject, **values))
                else:
                    conn.execute(T_THROTTLE.update().where(
                        T_THROTTLE.c.subject == subject).values(**values))
            if len(rows) < len(keys):  # new rows: forget the long-quiet ones
                conn.execute(T_THROTTLE.delete().where(
                    T_THROTTLE.c.updated < now - _FORGET_AFTER))

    def _attempt_succeeded(self, subjects: list[tuple[str, int]]) -> None:
        """A login succeeded: the account starts afresh, the client's count is undone."""
        user_key, *client = [subject for subject, _ in subjects]
        with writing(self.engine) as conn:
            conn.execute(T_THROTTLE.delete().where(T_THROTTLE.c.subject == user_key))
            if client:
                conn.execute(T_THROTTLE.update().where(T_THROTTLE.c.subject == client[0])
                             .values(failures=sa.case((T_THROTTLE.c.failures > 0,
                                                       T_THROTTLE.c.failures - 1), else_=0),
                                     blocked_until=0.0))

    def _row(self, where):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(T_USER).where(where)).first()

    @contextmanager
    def _writing(self) -> Iterator:
        """A write transaction that also bumps the generation (drops token caches)."""
        with writing(self.engine) as conn:
            conn.execute(T_STATE.update().values(generation=T_STATE.c.generation + 1))
            yield conn


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidName(f"unknown role {role!r} (roles: {', '.join(ROLES)})")


def _user(row, scopes: frozenset[str] = frozenset()) -> User:
    return User(row.id, row.name, row.email, row.role, bool(row.disabled), scopes,
                row.session_generation)


def _scopes(text: str | None) -> tuple[str, ...]:
    return tuple(s for s in (text or "").split(",") if s)

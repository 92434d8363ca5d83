"""Settings, parsed once from a mapping: both edges pass ``os.environ``, tests a dict.

Only the edges (the CLI and the server's app factory) read the environment; they do it
through :meth:`Settings.from_env`, so every ``PROMPTREV_*`` variable has one name, one
default and one parser. The core takes the values as arguments. This module imports
nothing of promptrev but :mod:`promptrev.errors`: any layer may use it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidRequest

DEFAULT_REGISTRY = ".promptrev"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # largest artifact file accepted
GIT_MAX_REQUEST_BYTES = 1024 ** 3  # one request of git push/fetch over HTTP
# A gzip body sent to Git, once decompressed: git gzips only requests that fit its
# http.postBuffer (1 MiB by default), and git http-backend buffers at most 10 MB of one.
GIT_MAX_INFLATED_BYTES = 10 * 1024 * 1024
ACCOUNTS_FILE = "promptrev-accounts.sqlite"  # beside the registry, unless a URL is given
SECRET_FILE = "promptrev-server-secret"
QUEUE_FILE = "promptrev-queue.sqlite"  # the job queue beside the registry, unless a URL
QUEUE_SCHEMES = ("sqlite", "redis", "rediss", "postgresql", "postgres")
_TRUE = ("1", "true", "yes", "on")
# ---- durability (issue 16): what an acknowledged write survives (docs/durability.md) ----
# PROMPTREV_DURABILITY=full (the default): a save, label move, merge or push is on disk
# before it is acknowledged and survives a power loss. off: nothing is flushed (as before
# issue 16): a crash of the machine may lose the last seconds of acknowledged writes, for
# throwaway registries and benchmarks. "on", "true", "1" mean full; "false", "0" mean off.
DURABILITY_FULL = "full"
DURABILITY_OFF = "off"
DURABILITY_ALIASES = {"full": DURABILITY_FULL, "on": DURABILITY_FULL, "true": DURABILITY_FULL,
                      "1": DURABILITY_FULL, "off": DURABILITY_OFF, "false": DURABILITY_OFF,
                      "0": DURABILITY_OFF}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Settings:
    """Everything the CLI and the app factory need; tests build one on a tmp registry."""

    registry: str = DEFAULT_REGISTRY
    index_url: str | None = None
    accounts_url: str | None = None
    secret_key: str | None = None
    anonymous_read: bool = False
    protected_labels: tuple[str, ...] = ("production",)
    merge_role: str = "editor"  # who may change main directly: save, merge, push
    required_approvals: int = 1  # approvals (not by the author) a change request needs
    max_bytes: int = DEFAULT_MAX_BYTES
    git_max_request_bytes: int = GIT_MAX_REQUEST_BYTES
    seed_from: str | None = "prompts"
    cookie_secure: bool = False
    author: str | None = None  # 'Name <email>' on commits made from the CLI
    models: dict | None = None  # name -> {backend, name, base_url, ...}; None: models_file
    models_file: str | None = None  # PROMPTREV_MODELS, read when models are first needed
    prices_file: str | None = None  # PROMPTREV_PRICES: the operator's price table
    env: dict = field(default_factory=dict)  # ${env:NAME}: models file; prompts as allowed
    webhook_deliverer: bool = True  # a delivery thread in each worker process
    webhook_retry_base: float = 10.0  # seconds before the 2nd attempt; doubles each time
    webhook_retry_cap: float = 3600.0  # longest wait between two attempts
    webhook_max_attempts: int = 8  # then the delivery is 'failed'
    webhook_poll: float = 2.0  # seconds between looks for due deliveries
    webhook_timeout: float = 10.0  # seconds a receiver has to answer
    # Render budgets (model/render_budget.py): per render, on every path that renders.
    render_seconds: float = 1.0
    render_max_chars: int = 2_000_000  # any one value and the whole output
    render_max_iterations: int = 1_000_000
    render_max_depth: int = 50
    # ---- secrets: which ${env:NAME} a stored file may read (security, item 1) ----------
    # PROMPTREV_ALLOW_ENV=NAME1,NAME2. Unset (None): the server allows no name, the CLI on
    # a user's own machine any; set (even to nothing) it is the whole list, for both.
    allow_env: tuple[str, ...] | None = None
    # Webhook targets (security issue, item 9): public addresses only unless widened.
    webhook_allow_private: bool = False  # also loopback, private, reserved (not link-local)
    webhook_allow_networks: tuple[str, ...] = ()  # CIDRs allowed whatever their class
    # Slow clients and decompression bombs (issue 14, item 7): the server's worker threads,
    # how long it waits for a client, and how far a gzip body sent to Git may expand.
    server_threads: int = 64  # request threads in each worker process of promptrev serve
    header_timeout: float = 10.0  # a request head must arrive within it; the rate's grace
    client_min_rate: int = 1024  # bytes/s a body or an answer averages after the grace
    client_idle_timeout: float = 60.0  # the longest single wait on a client
    git_max_inflated_bytes: int = GIT_MAX_INFLATED_BYTES  # a gzip body, decompressed
    # ---- accounts hardening (issue 14, items 6 and 10): login backoff, rate limits ----
    login_free_attempts: int = 5  # consecutive failed logins of an account before backoff
    login_client_free_attempts: int = 20  # the same, per client address
    login_backoff_base: float = 1.0  # seconds refused after the first failure past those
    login_backoff_cap: float = 900.0  # longest refusal; the wait doubles up to it
    login_rate_limit: str = "30 per minute"  # login POSTs per client (Flask-Limiter)
    auth_failure_limit: str = "60 per minute"  # refused API/Git tokens per client
    rate_limit_storage: str = "memory://"  # Flask-Limiter storage; memory: per worker
    # ---- durability (issue 16): full, or off for throwaway registries ----
    durability: str = DURABILITY_FULL  # PROMPTREV_DURABILITY; see DURABILITY_ALIASES
    # ---- replicas (issue 20): one primary takes writes, read replicas follow it ----
    primary: str | None = None  # PROMPTREV_PRIMARY=http://primary:8080: this is a replica
    primary_token: str | None = None  # PROMPTREV_PRIMARY_TOKEN: a viewer's API token there
    primary_public_url: str | None = None  # where clients are sent (307); default: primary
    replication_wait: float = 25.0  # longest long-poll of /api/v1/replication/wait
    replication_max_waiters: int = 8  # waiting long-polls per worker process; more: 503

    @property
    def redirect_url(self) -> str | None:
        """Where a replica sends writes (307): the primary's public address."""
        return self.primary_public_url or self.primary
    # ---- the job queue (issue 20): evaluation runs started on the server ----
    queue_url: str | None = None  # PROMPTREV_QUEUE: sqlite:///FILE, redis://, postgresql://
    queue_name: str = "promptrev"  # PROMPTREV_QUEUE_NAME: one per registry on a shared queue
    queue_lease: float = 30.0  # a worker silent this long is taken for dead; its runs move
    queue_threads: int = 4  # runs one `promptrev worker` executes at once
    serve_worker: bool = True  # `promptrev serve` starts a worker of its own

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Settings from the ``PROMPTREV_*`` entries of ``env``; keyword overrides win."""
        values = {
            "registry": env.get("PROMPTREV_REGISTRY", DEFAULT_REGISTRY),
            "index_url": env.get("PROMPTREV_INDEX_URL") or None,
            "accounts_url": env.get("PROMPTREV_ACCOUNTS_URL") or None,
            "secret_key": env.get("PROMPTREV_SECRET_KEY") or None,
            "anonymous_read": env.get("PROMPTREV_ANONYMOUS_READ", "").lower() in _TRUE,
            "protected_labels": tuple(
                x.strip() for x in env.get("PROMPTREV_PROTECTED_LABELS", "production").split(",")
                if x.strip()),
            "merge_role": env.get("PROMPTREV_MERGE_ROLE", "editor"),
            "required_approvals": _int(env, "PROMPTREV_REQUIRED_APPROVALS", 1),
            "max_bytes": _int(env, "PROMPTREV_MAX_BYTES", DEFAULT_MAX_BYTES),
            "git_max_request_bytes": _int(env, "PROMPTREV_GIT_MAX_REQUEST_BYTES",
                                          GIT_MAX_REQUEST_BYTES),
            "seed_from": env.get("PROMPTREV_SEED", "prompts") or None,
            "cookie_secure": env.get("PROMPTREV_COOKIE_SECURE", "").lower() in _TRUE,
            "author": env.get("PROMPTREV_AUTHOR") or None,
            "models_file": env.get("PROMPTREV_MODELS") or None,
            "prices_file": env.get("PROMPTREV_PRICES") or None,
            "env": dict(env),
            "webhook_deliverer": env.get("PROMPTREV_WEBHOOK_DELIVERER", "1").lower() not in (
                "0", "false", "no", "off"),
            "webhook_retry_base": _float(env, "PROMPTREV_WEBHOOK_RETRY_BASE", 10.0),
            "webhook_retry_cap": _float(env, "PROMPTREV_WEBHOOK_RETRY_CAP", 3600.0),
            "webhook_max_attempts": _int(env, "PROMPTREV_WEBHOOK_MAX_ATTEMPTS", 8),
            "webhook_poll": _float(env, "PROMPTREV_WEBHOOK_POLL", 2.0),
            "webhook_timeout": _float(env, "PROMPTREV_WEBHOOK_TIMEOUT", 10.0),
            # Render budgets
            "render_seconds": _float(env, "PROMPTREV_RENDER_SECONDS", 1.0),
            "render_max_chars": _int(env, "PROMPTREV_RENDER_MAX_CHARS", 2_000_000),
            "render_max_iterations": _int(env, "PROMPTREV_RENDER_MAX_ITERATIONS", 1_000_000),
            "render_max_depth": _int(env, "PROMPTREV_RENDER_MAX_DEPTH", 50),
            # ---- secrets (security, item 1) ----
            "allow_env": _env_names(env, "PROMPTREV_ALLOW_ENV"),
            # Webhook targets (security issue, item 9)
            "webhook_allow_private": env.get("PROMPTREV_WEBHOOK_ALLOW_PRIVATE",
                                             "").lower() in _TRUE,
            "webhook_allow_networks": _networks(env, "PROMPTREV_WEBHOOK_ALLOW_NETWORKS"),
            # Slow clients and decompression bombs (issue 14, item 7)
            "server_threads": _positive(env, "PROMPTREV_THREADS", 64, int),
            "header_timeout": _positive(env, "PROMPTREV_HEADER_TIMEOUT", 10.0, float),
            "client_min_rate": _positive(env, "PROMPTREV_CLIENT_MIN_RATE", 1024, int),
            "client_idle_timeout": _positive(env, "PROMPTREV_CLIENT_IDLE_TIMEOUT", 60.0, float),
            "git_max_inflated_bytes": _positive(env, "PROMPTREV_GIT_MAX_INFLATED_BYTES",
                                                GIT_MAX_INFLATED_BYTES, int),
            # ---- accounts hardening (issue 14, items 6 and 10) ----
            "login_free_attempts": _int(env, "PROMPTREV_LOGIN_FREE_ATTEMPTS", 5),
            "login_client_free_attempts": _int(env, "PROMPTREV_LOGIN_CLIENT_FREE_ATTEMPTS",
                                               20),
            "login_backoff_base": _float(env, "PROMPTREV_LOGIN_BACKOFF_BASE", 1.0),
            "login_backoff_cap": _float(env, "PROMPTREV_LOGIN_BACKOFF_CAP", 900.0),
            "login_rate_limit": env.get("PROMPTREV_LOGIN_RATE_LIMIT") or "30 per minute",
            "auth_failure_limit": env.get("PROMPTREV_AUTH_FAILURE_LIMIT") or "60 per minute",
            "rate_limit_storage": env.get("PROMPTREV_RATE_LIMIT_STORAGE") or "memory://",
            # ---- durability (issue 16) ----
            "durability": durability_mode(env.get("PROMPTREV_DURABILITY") or DURABILITY_FULL,
                                          "PROMPTREV_DURABILITY"),
            # ---- replicas (issue 20) ----
            "primary": _base_url(env, "PROMPTREV_PRIMARY"),
            "primary_token": env.get("PROMPTREV_PRIMARY_TOKEN") or None,
            "primary_public_url": _base_url(env, "PROMPTREV_PRIMARY_PUBLIC_URL"),
            "replication_wait": _positive(env, "PROMPTREV_REPLICATION_WAIT", 25.0, float),
            "replication_max_waiters": _positive(env, "PROMPTREV_REPLICATION_MAX_WAITERS", 8,
                                                 int),
            # ---- the job queue (issue 20) ----
            "queue_url": queue_url(env.get("PROMPTREV_QUEUE") or None, "PROMPTREV_QUEUE"),
            "queue_name": queue_name(env.get("PROMPTREV_QUEUE_NAME") or "promptrev"),
            "queue_lease": _positive(env, "PROMPTREV_QUEUE_LEASE", 30.0, float),
            "queue_threads": _positive(env, "PROMPTREV_QUEUE_THREADS", 4, int),
            "serve_worker": env.get("PROMPTREV_SERVE_WORKER", "1").lower() not in (
                "0", "false", "no", "off"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_accounts(self) -> Settings:
        """These settings with the accounts URL filled in (the file beside the registry)."""
        if self.accounts_url:
            return self
        return replace(self, accounts_url="sqlite:///" + os.path.abspath(
            os.path.join(self.registry, ACCOUNTS_FILE)))

    def resolved(self) -> Settings:
        """Fill in what lives next to the registry: the accounts database, the secret key.

        Creates the session-signing key file on first use (the server needs one).
        """
        return replace(self.with_accounts(),
                       secret_key=self.secret_key or _secret(self.registry))

    def with_queue(self) -> Settings:
        """These settings with the queue URL filled in (SQLite beside the registry)."""
        if self.queue_url:
            return self
        return replace(self, queue_url="sqlite:///" + os.path.abspath(
            os.path.join(self.registry, QUEUE_FILE)))

    def configured_models(self) -> dict:
        """The operator's models: ``models`` if given, else PROMPTREV_MODELS's file, read now.

        Read on use, so that a command that runs no model never trips over the file.
        """
        return self.models if self.models is not None else read_models_file(self.models_file)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body accepted: the artifact limit plus room for JSON."""
        return self.max_bytes + 1024 * 1024


def read_settings_file(setting: str, path: str) -> Any:
    """The YAML (or JSON) file an operator's setting names (``PROMPTREV_MODELS``...), read;
    a file that cannot be read or parsed is an error naming the setting and the file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}
    except OSError as exc:
        raise InvalidRequest(f"{setting}: cannot read {path}: "
                             f"{exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{setting}: {path} is not valid YAML: {exc}") from None


def read_models_file(path: str | None) -> dict:
    """Configured models from a YAML/JSON file: ``name: {backend, name, base_url, ...}``."""
    if not path:
        return {}
    data = read_settings_file("PROMPTREV_MODELS", path)
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected a mapping of model names to settings")
    return data


def queue_url(value: str | None, name: str = "queue") -> str | None:
    """A job queue's URL, checked: ``sqlite:///FILE``, ``redis://...`` or
    ``postgresql://...`` (None: SQLite inside the registry)."""
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower().split("+")[0] not in QUEUE_SCHEMES or not rest.strip("/"):
        raise InvalidRequest(f"{name} must be sqlite:///FILE (one machine), redis://HOST:PORT"
                             f"/DB or postgresql://... (several machines), not {value[:80]!r}")
    return value


def queue_name(value: str) -> str:
    """A queue's name (``PROMPTREV_QUEUE_NAME``): letters, digits, ``-`` and ``_``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise InvalidRequest("PROMPTREV_QUEUE_NAME must be 1-64 letters, digits, '-' or '_', "
                             f"not {value[:80]!r}")
    return value


def durability_mode(value: str, name: str = "durability") -> str:
    """``full`` or ``off`` from what a user may write for them (``on``, ``0``...)."""
    found = DURABILITY_ALIASES.get(value.strip().lower())
    if found is None:
        raise InvalidRequest(f"{name} must be 'full' (every acknowledged write survives a "
                             f"power loss) or 'off' (nothing is flushed), not {value!r}")
    return found


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {env.get(name)!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        raise InvalidRequest(f"{name} must be a number, not {env.get(name)!r}") from None


def _env_names(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    """A comma-separated list of environment variable names; None when ``name`` is unset."""
    if name not in env:
        return None
    names = tuple(x.strip() for x in env[name].split(",") if x.strip())
    for item in names:
        if not _ENV_NAME.fullmatch(item):
            raise InvalidRequest(f"{name}: {item!r} is not an environment variable name "
                                 "(letters, digits and '_'; no wildcards)")
    return names


def _positive(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    """A number above zero (a whole one when ``kind`` is int), or a message naming it."""
    what = "a whole number above 0" if kind is int else "a number above 0"
    try:
        value = kind(env.get(name, default))
    except ValueError:
        raise InvalidRequest(f"{name} must be {what}, not {env.get(name)!r}") from None
    if not value > 0 or value == float("inf"):
        raise InvalidRequest(f"{name} must be {what}, not {env.get(name)!r}")
    return value


def _base_url(env: Mapping[str, str], name: str) -> str | None:
    """An http(s) base URL without a trailing slash, query or credentials; None if unset."""
    value = (env.get(name) or "").strip()
    if not value:
        return None
    match = re.fullmatch(r"(https?)://([^/?#@\s]+)(/[^?#\s]*)?", value, re.IGNORECASE)
    if not match:
        raise InvalidRequest(f"{name} must be an http(s) URL such as http://primary:8080 "
                             f"(no credentials, query or fragment), not {value!r}")
    return value.rstrip("/")


def _secret(registry: str) -> str:
    """The session-signing key shared by every worker: created once, kept in the registry."""
    path = os.path.join(registry, SECRET_FILE)
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race: use its key
        with open(path) as f:
            return f.read().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP networks (webhook targets, security issue item 9), checked now."""
    import ipaddress

    found = tuple(x.strip() for x in env.get(name, "").split(",") if x.strip())
    for value in found:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InvalidRequest(f"{name}: {value[:60]!r} is not an IP network such as "
                                 "10.0.0.0/8 or fd00::/8") from None
    return found

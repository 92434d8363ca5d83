"""Settings, parsed once from a mapping: both edges pass ``os.environ``, tests a dict.

Only the edges (the CLI and the server's app factory) read the environment; they do it
through :meth:`Settings.from_env`, so every ``PROMPTREV_*`` variable has one name, one
default and one parser. The core takes the values as arguments. This module imports
nothing of promptrev but :mod:`promptrev.errors`: any layer may use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidRequest

DEFAULT_REGISTRY = ".promptrev"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # largest artifact file accepted
GIT_MAX_REQUEST_BYTES = 1024 ** 3  # one request of git push/fetch over HTTP
ACCOUNTS_FILE = "promptrev-accounts.sqlite"  # beside the registry, unless a URL is given
SECRET_FILE = "promptrev-server-secret"
_TRUE = ("1", "true", "yes", "on")


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
    env: dict = field(default_factory=dict)  # for ${env:NAME} in prompts' configuration
    webhook_deliverer: bool = True  # a delivery thread in each worker process
    webhook_retry_base: float = 10.0  # seconds before the 2nd attempt; doubles each time
    webhook_retry_cap: float = 3600.0  # longest wait between two attempts
    webhook_max_attempts: int = 8  # then the delivery is 'failed'
    webhook_poll: float = 2.0  # seconds between looks for due deliveries
    webhook_timeout: float = 10.0  # seconds a receiver has to answer
    # ---- accounts hardening (issue 14, items 6 and 10): login backoff, rate limits ----
    login_free_attempts: int = 5  # consecutive failed logins of an account before backoff
    login_client_free_attempts: int = 20  # the same, per client address
    login_backoff_base: float = 1.0  # seconds refused after the first failure past those
    login_backoff_cap: float = 900.0  # longest refusal; the wait doubles up to it
    login_rate_limit: str = "30 per minute"  # login POSTs per client (Flask-Limiter)
    auth_failure_limit: str = "60 per minute"  # refused API/Git tokens per client
    rate_limit_storage: str = "memory://"  # Flask-Limiter storage; memory: per worker

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
            "env": dict(env),
            "webhook_deliverer": env.get("PROMPTREV_WEBHOOK_DELIVERER", "1").lower() not in (
                "0", "false", "no", "off"),
            "webhook_retry_base": _float(env, "PROMPTREV_WEBHOOK_RETRY_BASE", 10.0),
            "webhook_retry_cap": _float(env, "PROMPTREV_WEBHOOK_RETRY_CAP", 3600.0),
            "webhook_max_attempts": _int(env, "PROMPTREV_WEBHOOK_MAX_ATTEMPTS", 8),
            "webhook_poll": _float(env, "PROMPTREV_WEBHOOK_POLL", 2.0),
            "webhook_timeout": _float(env, "PROMPTREV_WEBHOOK_TIMEOUT", 10.0),
            # ---- accounts hardening (issue 14, items 6 and 10) ----
            "login_free_attempts": _int(env, "PROMPTREV_LOGIN_FREE_ATTEMPTS", 5),
            "login_client_free_attempts": _int(env, "PROMPTREV_LOGIN_CLIENT_FREE_ATTEMPTS",
                                               20),
            "login_backoff_base": _float(env, "PROMPTREV_LOGIN_BACKOFF_BASE", 1.0),
            "login_backoff_cap": _float(env, "PROMPTREV_LOGIN_BACKOFF_CAP", 900.0),
            "login_rate_limit": env.get("PROMPTREV_LOGIN_RATE_LIMIT") or "30 per minute",
            "auth_failure_limit": env.get("PROMPTREV_AUTH_FAILURE_LIMIT") or "60 per minute",
            "rate_limit_storage": env.get("PROMPTREV_RATE_LIMIT_STORAGE") or "memory://",
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

    def configured_models(self) -> dict:
        """The operator's models: ``models`` if given, else PROMPTREV_MODELS's file, read now.

        Read on use, so that a command that runs no model never trips over the file.
        """
        return self.models if self.models is not None else read_models_file(self.models_file)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body accepted: the artifact limit plus room for JSON."""
        return self.max_bytes + 1024 * 1024


def read_models_file(path: str | None) -> dict:
    """Configured models from a YAML/JSON file: ``name: {backend, name, base_url, ...}``."""
    if not path:
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise InvalidRequest(f"PROMPTREV_MODELS: cannot read {path}: "
                             f"{exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"PROMPTREV_MODELS: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected a mapping of model names to settings")
    return data


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

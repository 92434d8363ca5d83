"""Server settings: one dataclass, read from the environment only at the edge."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace

from promptrev.accounts import ACCOUNTS_FILE
from promptrev.policy import Policy
from promptrev.registry import DEFAULT_MAX_BYTES
from promptrev.runner.base import read_models_file
from promptrev.webhooks import RetryPolicy

GIT_MAX_REQUEST_BYTES = 1024 ** 3
SECRET_FILE = "promptrev-server-secret"


@dataclass(frozen=True)
class Settings:
    """Everything the app factory needs; tests build one pointing at a tmp registry."""

    registry: str = ".promptrev"
    index_url: str | None = None
    accounts_url: str | None = None
    secret_key: str | None = None
    anonymous_read: bool = False
    protected_labels: tuple[str, ...] = ("production",)
    merge_role: str = "editor"  # who may change main directly: save, merge, push
    required_approvals: int = 1  # approvals (not by the author) a change request needs
    max_bytes: int = DEFAULT_MAX_BYTES
    git_max_request_bytes: int = GIT_MAX_REQUEST_BYTES  # one request of git push/fetch
    seed_from: str | None = "prompts"
    cookie_secure: bool = False
    models: dict = field(default_factory=dict)  # name -> {backend, name, base_url, ...}
    env: dict = field(default_factory=dict)  # for ${env:NAME} in prompts' configuration
    webhook_deliverer: bool = True  # a delivery thread in each worker process
    webhook_retry_base: float = 10.0  # seconds before the 2nd attempt; doubles each time
    webhook_retry_cap: float = 3600.0  # longest wait between two attempts
    webhook_max_attempts: int = 8  # then the delivery is 'failed'
    webhook_poll: float = 2.0  # seconds between looks for due deliveries
    webhook_timeout: float = 10.0  # seconds a receiver has to answer

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Settings from ``PROMPTREV_*`` variables; keyword overrides win."""
        env = os.environ
        values = {
            "registry": env.get("PROMPTREV_REGISTRY", ".promptrev"),
            "index_url": env.get("PROMPTREV_INDEX_URL") or None,
            "accounts_url": env.get("PROMPTREV_ACCOUNTS_URL") or None,
            "secret_key": env.get("PROMPTREV_SECRET_KEY") or None,
            "anonymous_read": env.get("PROMPTREV_ANONYMOUS_READ", "") in ("1", "true", "yes"),
            "protected_labels": tuple(
                x.strip() for x in env.get("PROMPTREV_PROTECTED_LABELS", "production").split(",")
                if x.strip()),
            "merge_role": env.get("PROMPTREV_MERGE_ROLE", "editor"),
            "required_approvals": int(env.get("PROMPTREV_REQUIRED_APPROVALS", "1")),
            "max_bytes": int(env.get("PROMPTREV_MAX_BYTES", DEFAULT_MAX_BYTES)),
            "git_max_request_bytes": int(env.get("PROMPTREV_GIT_MAX_REQUEST_BYTES",
                                                 GIT_MAX_REQUEST_BYTES)),
            "seed_from": env.get("PROMPTREV_SEED", "prompts") or None,
            "cookie_secure": env.get("PROMPTREV_COOKIE_SECURE", "") in ("1", "true", "yes"),
            "models": read_models_file(env.get("PROMPTREV_MODELS")),
            "env": dict(env),
            "webhook_deliverer": env.get("PROMPTREV_WEBHOOK_DELIVERER", "1").lower() not in (
                "0", "false", "no", "off"),
            "webhook_retry_base": float(env.get("PROMPTREV_WEBHOOK_RETRY_BASE", "10")),
            "webhook_retry_cap": float(env.get("PROMPTREV_WEBHOOK_RETRY_CAP", "3600")),
            "webhook_max_attempts": int(env.get("PROMPTREV_WEBHOOK_MAX_ATTEMPTS", "8")),
            "webhook_poll": float(env.get("PROMPTREV_WEBHOOK_POLL", "2")),
            "webhook_timeout": float(env.get("PROMPTREV_WEBHOOK_TIMEOUT", "10")),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def resolved(self) -> Settings:
        """Fill in defaults that live next to the registry (accounts DB, secret key)."""
        accounts = self.accounts_url or "sqlite:///" + os.path.abspath(
            os.path.join(self.registry, ACCOUNTS_FILE))
        return replace(self, accounts_url=accounts,
                       secret_key=self.secret_key or _secret(self.registry))

    @property
    def policy(self) -> Policy:
        """The review rules these settings describe."""
        return Policy(frozenset(self.protected_labels), self.merge_role,
                      self.required_approvals)

    @property
    def webhook_retry(self) -> RetryPolicy:
        """When failed webhook deliveries are tried again."""
        return RetryPolicy(base=self.webhook_retry_base, cap=self.webhook_retry_cap,
                           max_attempts=self.webhook_max_attempts)

    @property
    def max_request_bytes(self) -> int:
        """Largest request body accepted: the artifact limit plus room for JSON."""
        return self.max_bytes + 1024 * 1024


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

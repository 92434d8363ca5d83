"""The one error family of promptrev.

Every error carries a message written for the person who will read it and a stable
machine-readable ``code``; its class says what went wrong. Errors carry no transport
status: each transport translates them in exactly one place (the server's HTTP statuses in
``promptrev.server.errors``, the CLI's exit codes in ``promptrev.cli.main``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class PromptrevError(Exception):
    """Base class: a problem the user can understand and act on."""

    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """Return the one JSON error shape: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidName(PromptrevError):
    """An artifact or label name that breaks the naming rules."""

    code = "invalid_name"


class InvalidReference(PromptrevError):
    """A reference string that cannot be parsed (``name``, ``name@N``, ``name@label``…)."""

    code = "invalid_reference"


class AmbiguousReference(PromptrevError):
    """A name that matches artifacts of several kinds, or several commits."""

    code = "ambiguous_reference"


class InvalidRequest(PromptrevError):
    """A request whose parameters or body are missing or malformed."""

    code = "invalid_request"


class Unauthorized(PromptrevError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    code = "unauthorized"


class Forbidden(PromptrevError):
    """Known user, but their role does not allow this action."""

    code = "forbidden"


class EvidenceRequired(Forbidden):
    """A label with a release policy may not move there without evidence (or an override);
    the message names the evaluation that is missing or the verdict that fell short."""

    code = "evidence_required"


class PreconditionRequired(PromptrevError):
    """An update that does not say which version it was based on."""

    code = "precondition_required"


class NotFound(PromptrevError):
    """A missing artifact, version, label or commit."""

    code = "not_found"


class ArtifactDeleted(NotFound):
    """The artifact exists in history but its latest version is a deletion."""

    code = "deleted"


class ValidationFailed(PromptrevError):
    """Artifact content that does not parse or validate; ``details['problems']`` lists each."""

    code = "invalid_artifact"

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None):
        super().__init__(message, details={"problems": problems or []})
        self.problems = problems or []


class RenderFailed(PromptrevError):
    """A template that fails at render time (missing variable, sandbox violation…)."""

    code = "render_error"


class RenderLimitExceeded(RenderFailed):
    """A render that ran past its budget: time, size, iterations or depth.

    ``details['limit']`` names which one and ``details['value']`` its setting.
    """

    code = "render_limit"


class TooLarge(PromptrevError):
    """Content above the configured size limit."""

    code = "too_large"


class Conflict(PromptrevError):
    """An update based on a version that is no longer the latest (lost-update guard)."""

    code = "conflict"


class Diverged(Conflict):
    """Two histories that both have commits the other lacks; nothing was overwritten.

    ``details`` holds ``local`` and ``remote``: the count and the first commits (short sha,
    author, message) on each side.
    """

    code = "diverged"


class MergeConflict(Conflict):
    """A merge whose two sides edited the same lines; ``details['paths']`` lists the files."""

    code = "merge_conflict"


class RemoteFailed(PromptrevError):
    """A Git remote that could not be reached, refused us, or rejected a push."""

    code = "remote_failed"


class Busy(PromptrevError):
    """The registry stayed locked by other writers for longer than we are willing to wait."""

    code = "busy"


class ReadOnlyReplica(PromptrevError):
    """A write sent to a read replica: only its follower moves ``main``; write to the
    primary (``details["primary"]``), or find it unreachable for now."""

    code = "read_only_replica"


class StorageError(PromptrevError):
    """The Git repository or the index is damaged or unreachable."""

    code = "storage_error"


class Damaged(StorageError):
    """Git or the index is damaged; the message names the damage and the repair command."""

    code = "damaged"


class StorageFull(StorageError):
    """The disk holding the registry is full: nothing that was refused was written."""

    code = "storage_full"


_EXPLAINERS: list[Callable[[BaseException], PromptrevError | None]] = []


def add_explainer(explain: Callable[[BaseException], PromptrevError | None]
                  ) -> Callable[[BaseException], PromptrevError | None]:
    """Register how a lower layer's foreign exceptions (a database driver's) read as a
    :class:`PromptrevError`; the edges ask :func:`explain` before calling one a defect."""
    _EXPLAINERS.append(explain)
    return explain


def explain(exc: BaseException) -> PromptrevError | None:
    """The :class:`PromptrevError` that explains a foreign exception, or None."""
    for explainer in _EXPLAINERS:
        found = explainer(exc)
        if found is not None:
            return found
    return None


def error_from_dict(data: dict[str, Any], status: int) -> PromptrevError:
    """Rebuild an error from the JSON error shape (what HTTP clients receive)."""
    body = data.get("error") if isinstance(data.get("error"), dict) else {}
    code, message = body.get("code", "error"), body.get("message", f"HTTP {status}")
    cls = next((c for c in _all_errors() if c.code == code), PromptrevError)
    exc = cls.__new__(cls)
    PromptrevError.__init__(exc, message, details=body.get("details") or {})
    exc.status = status  # the HTTP status this client received (the core has none)
    if isinstance(exc, ValidationFailed):
        exc.problems = exc.details.get("problems", [])
    return exc


def _all_errors() -> list[type[PromptrevError]]:
    found, todo = [], [PromptrevError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


# ---- what stored content may ask of the server's models and environment (security) ----
class ModelNotConfigured(PromptrevError):
    """Stored content names a model, URL, key or local path the operator did not configure.

    On a server a prompt may only name one of the operator's configured models; its own
    connection fields (``base_url``, ``api_key``, a local path...) are never used.
    """

    code = "model_not_configured"


class ModelUnavailable(Busy):
    """Nothing answers where a model is served (connection refused, no such host): said at
    once, with the setting that points promptrev at the model, rather than after retries."""

    code = "model_unavailable"


class EnvNotAllowed(PromptrevError):
    """A stored file reads ``${env:NAME}`` and NAME is not in ``PROMPTREV_ALLOW_ENV``.

    The message names the variable, never its value.
    """

    code = "env_not_allowed"


# ---- webhook targets (security issue, item 9) ------------------------------------------
class TargetRefused(InvalidRequest):
    """A webhook target on an address the operator does not allow (loopback, private,
    link-local…); ``details['class']`` names the address class when one was found."""

    code = "target_refused"


# ---- slow clients and decompression bombs (issue 14, item 7) ---------------------------
class UnsupportedEncoding(InvalidRequest):
    """A request body in a Content-Encoding this endpoint does not decode."""

    code = "unsupported_encoding"


# ---- accounts hardening (issue 14, items 6 and 10) -------------------------------------
class TooManyAttempts(PromptrevError):
    """Too many failed logins for one account or from one client: wait, then try again.

    ``details["retry_after"]`` is the whole number of seconds to wait (HTTP Retry-After).
    """

    code = "too_many_attempts"

    @property
    def retry_after(self) -> int:
        """Seconds before checking is allowed again."""
        return int(self.details.get("retry_after", 1))

"""The ``promptrev`` exit codes, written once: what a script can tell apart.

:func:`exit_code` maps a core error to its code by the nearest class in its hierarchy (as
the server maps them to HTTP statuses); :data:`EPILOG` is the table ``promptrev --help``
prints.
"""

from __future__ import annotations

from promptrev import errors

OK = 0
FAILURE = 1  # anything not below: storage damaged or full, a remote down, an internal error
USAGE = 2  # click's own code for a bad option or argument
NOT_FOUND = 3
CONFLICT = 4
REFUSED = 5
INVALID = 6

# (code, meaning) in the order ``promptrev --help`` shows them.
TABLE: tuple[tuple[int, str], ...] = (
    (OK, "success"),
    (FAILURE, "failure: storage (damaged, full, locked), a remote, an internal error"),
    (USAGE, "usage: an unknown command or option, a malformed argument"),
    (NOT_FOUND, "not found: no such artifact, version, label or commit, or deleted"),
    (CONFLICT, "conflict: a stale or missing --base, diverged histories, a merge"),
    (REFUSED, "refused: not allowed by role, protected label or operator settings"),
    (INVALID, "invalid: content that does not validate or render, a bad name or value"),
)

# Error class -> code; an error takes the code of the nearest class in its hierarchy.
CODES: dict[type[errors.PromptrevError], int] = {
    errors.PromptrevError: FAILURE,
    errors.NotFound: NOT_FOUND,
    errors.Conflict: CONFLICT,
    errors.PreconditionRequired: CONFLICT,
    errors.Unauthorized: REFUSED,
    errors.Forbidden: REFUSED,
    errors.TooManyAttempts: REFUSED,
    errors.ModelNotConfigured: REFUSED,
    errors.EnvNotAllowed: REFUSED,
    errors.TargetRefused: REFUSED,
    errors.ValidationFailed: INVALID,
    errors.RenderFailed: INVALID,
    errors.InvalidName: INVALID,
    errors.InvalidReference: INVALID,
    errors.AmbiguousReference: INVALID,
    errors.InvalidRequest: INVALID,
    errors.TooLarge: INVALID,
}


def exit_code(exc: errors.PromptrevError) -> int:
    """The exit code that reports ``exc``."""
    return next(CODES[cls] for cls in type(exc).__mro__ if cls in CODES)


EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in TABLE)

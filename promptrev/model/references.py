"""Parsing of references: how users name a version.

``summarize`` (latest), ``summarize@4`` (version 4), ``summarize@production`` (a label),
``summarize@3f2a9c1`` (the version current at that commit), optionally prefixed by the
artifact kind (``dataset:sentiment@2``) when a name exists under several kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from promptrev.errors import InvalidName, InvalidReference

from .names import validate_name

_HEX = re.compile(r"[0-9a-f]{4,40}\Z")
_LABELISH = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}\Z")
_MAX_VERSION_DIGITS = 9  # more digits is no version number (and would overflow SQL integers)


def _is_version_number(selector: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts '²', which ``int`` refuses), not too many."""
    return selector.isascii() and selector.isdigit() and len(selector) <= _MAX_VERSION_DIGITS


@dataclass(frozen=True)
class Reference:
    """A parsed reference. ``selector`` is None for "latest"."""

    name: str
    kind: str | None = None
    selector: str | None = None

    @property
    def number(self) -> int | None:
        """The version number when the selector is ``@N``."""
        if self.selector is not None and _is_version_number(self.selector):
            return int(self.selector)
        return None

    @property
    def may_be_label(self) -> bool:
        """Whether the selector can name a label."""
        return self.selector is not None and bool(_LABELISH.match(self.selector))

    @property
    def may_be_commit(self) -> bool:
        """Whether the selector can name a commit (a hex prefix of at least 4 characters).

        An all-digit selector (``@2718281``) may be either; a version number wins when that
        version exists.
        """
        return self.selector is not None and bool(_HEX.match(self.selector.lower()))

    def __str__(self) -> str:
        prefix = f"{self.kind}:" if self.kind else ""
        suffix = f"@{self.selector}" if self.selector is not None else ""
        return f"{prefix}{self.name}{suffix}"


def parse_reference(text: object, kind: str | None = None) -> Reference:
    """Parse ``[kind:]name[@selector]``; raise :class:`InvalidReference` with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference("a reference must be a non-empty string such as 'summarize@4'")
    raw = text.strip()
    ref_kind = kind
    head, sep, rest = raw.partition(":")
    if sep:
        from .artifacts import KINDS  # kinds register when artifacts is imported

        if head not in KINDS:
            raise InvalidReference(
                f"reference {raw!r}: unknown kind {head!r} (use one of {', '.join(KINDS)})"
            )
        if kind is not None and head != kind:
            raise InvalidReference(f"reference {raw!r} names a {head}, but a {kind} is expected")
        ref_kind, raw = head, rest
    if raw.count("@") > 1:
        raise InvalidReference(f"reference {text!r} has more than one '@'")
    name, at, selector = raw.partition("@")
    try:
        validate_name(name)
    except InvalidName as exc:
        raise InvalidReference(f"reference {text!r}: {exc.message}") from None
    if not at:
        return Reference(name=name, kind=ref_kind)
    if selector == "latest":
        return Reference(name=name, kind=ref_kind)
    if not selector:
        raise InvalidReference(f"reference {text!r} has nothing after '@'")
    if _is_version_number(selector):
        if int(selector) < 1 and len(selector) < 4:
            raise InvalidReference(f"reference {text!r}: versions are numbered from 1")
        # Keep leading zeros when it may be a commit prefix ("0123abc…" minus letters).
        kept = selector if len(selector) >= 4 else str(int(selector))
        return Reference(name=name, kind=ref_kind, selector=kept)
    ref = Reference(name=name, kind=ref_kind, selector=selector)
    if not (ref.may_be_label or ref.may_be_commit):
        raise InvalidReference(
            f"reference {text!r}: after '@' put a version number, a label name or a commit "
            "SHA prefix (at least 4 hex characters)"
        )
    return ref

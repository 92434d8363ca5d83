"""Rules for artifact and label names.

Names are path-like (``support/reply``) so that teams can use folders, but they must never
escape the registry's folders or collide with Git's own conventions.
"""

from __future__ import annotations

import re

from promptrev.errors import InvalidName

MAX_NAME_LENGTH = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}\Z")
RESERVED_LABELS = frozenset({"latest"})


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid artifact name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not name:
        raise InvalidName("an artifact name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"artifact name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    for segment in name.split("/"):
        if not segment:
            raise InvalidName(f"artifact name {name!r} has an empty path segment")
        if not _SEGMENT.match(segment):
            raise InvalidName(
                f"artifact name {name!r}: segment {segment!r} must use only letters, digits, "
                "'.', '_' and '-', and must not start with '.' or '-'"
            )
        if segment.endswith(".lock"):
            raise InvalidName(f"artifact name {name!r}: a segment may not end in '.lock'")
    return name


def validate_label(label: object) -> str:
    """Return ``label`` if it is a valid label name, else raise :class:`InvalidName`."""
    if not isinstance(label, str) or not _LABEL.match(label):
        raise InvalidName(
            f"label {label!r} must start with a letter and use only letters, digits, "
            "'.', '_' and '-' (at most 63 characters)"
        )
    if label in RESERVED_LABELS:
        raise InvalidName(f"label {label!r} is reserved")
    return label

"""The label-map file stored in Git for each artifact that has labels.

``labels/prompts/@e/@7/summarize.yaml`` (in its buckets, :mod:`.fanout`) holds
``production: 4`` lines. Every change of it is a commit, so label moves are audited and
revertable with ordinary Git.
"""

from __future__ import annotations

from promptrev.errors import InvalidName, ValidationFailed

from . import safe_yaml
from .names import validate_label


def parse_label_map(text: str, filename: str) -> dict[str, int]:
    """Parse a label map; raise :class:`ValidationFailed` naming the file if it is malformed."""
    data = safe_yaml.load(text, filename) or {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in data.items()
    ):
        raise ValidationFailed(f"{filename}: a label map must be 'label: version-number' lines")
    _check_names(data, filename)
    return data


def _check_names(labels: dict, filename: str) -> None:
    """Every label of a stored file must be one the API could have set (a push can write
    any text: an empty name or escape sequences would reach every page)."""
    for label in labels:
        try:
            validate_label(label)
        except InvalidName as exc:
            raise ValidationFailed(f"{filename}: {exc.message}") from None


def dump_label_map(labels: dict[str, int]) -> str:
    """Serialise a label map deterministically (sorted, one label per line)."""
    return "".join(f"{label}: {labels[label]}\n" for label in sorted(labels))


def parse_splits(text: str, filename: str) -> dict[str, dict[int, int]]:
    """``label: {version: weight, ...}`` lines; weights are positive integers."""
    data = safe_yaml.load(text, filename) or {}
    ok = isinstance(data, dict) and all(
        isinstance(label, str) and isinstance(arms, dict) and arms and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 and
            isinstance(w, int) and not isinstance(w, bool) and w >= 1 for v, w in arms.items())
        for label, arms in data.items())
    if not ok:
        raise ValidationFailed(f"{filename}: a split file holds 'label: {{version: weight}}' "
                               "entries with positive integers")
    _check_names(data, filename)
    return data


def dump_splits(splits: dict[str, dict[int, int]]) -> str:
    """Serialise splits deterministically."""
    return "".join(f"{label}: {{{', '.join(f'{v}: {w}' for v, w in sorted(arms.items()))}}}\n"
                   for label, arms in sorted(splits.items()))


def assign(kind: str, name: str, label: str, key: str, arms: dict[int, int]) -> int:
    """The version a caller ``key`` gets under a split: stable for the key, by weight.

    SHA-256 of (kind, name, label, key) picks a point in the total weight, so the same key
    always lands on the same arm while the split is unchanged, and keys spread over the
    arms in proportion to their weights.
    """
    import hashlib

    total = sum(arms.values())
    digest = hashlib.sha256(f"{kind}\x00{name}\x00{label}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for version, weight in sorted(arms.items()):
        if point < weight:
            return version
        point -= weight
    raise AssertionError("unreachable: the point lies within the total weight")

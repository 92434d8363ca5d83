"""The label-map file stored in Git for each artifact that has labels.

``labels/prompts/summarize.yaml`` holds ``production: 4`` lines. Every change of it is a
commit, so label moves are audited and revertable with ordinary Git.
"""

from __future__ import annotations

import yaml

from .errors import ValidationFailed


def parse_label_map(text: str, filename: str) -> dict[str, int]:
    """Parse a label map; raise :class:`ValidationFailed` naming the file if it is malformed."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"{filename}: bad YAML: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
        for k, v in data.items()
    ):
        raise ValidationFailed(f"{filename}: a label map must be 'label: version-number' lines")
    return data


def dump_label_map(labels: dict[str, int]) -> str:
    """Serialise a label map deterministically (sorted, one label per line)."""
    return "".join(f"{label}: {labels[label]}\n" for label in sorted(labels))

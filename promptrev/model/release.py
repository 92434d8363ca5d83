"""Release policies: the evidence a label needs before it may move.

``policies/prompts/@e/@7/summarize.yaml`` (in its buckets, like the label map) holds one
rule per gated label of ``summarize``::

    production:
      evaluation:              # an evaluation spec without variants: those are the
        dataset: sentiment@1   # label's current holder (the baseline) and the target
        scorers: [exact]
        model: tiny            # optional: model, params, limit, batch_size, prices
      metric: exact            # one of the scorers' names
      require: non-inferior    # or: superior
      margin: 0.02             # non-inferior only; in the metric's units (0.02 = 2 points)
      alpha: 0.05              # one-sided

A change to the file is a commit like any other, checked where commits arrive; a move is
judged by the policy ``main`` held before the change (see :mod:`promptrev.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptrev.errors import InvalidName, ValidationFailed

from . import safe_yaml
from .names import validate_label

REQUIREMENTS = ("superior", "non-inferior")
_RULE_KEYS = {"evaluation", "metric", "require", "margin", "alpha"}
# What the variants share: the model and parameters, and for a gated adapter the prompt it
# runs under (for a gated prompt, an adapter both versions run with).
_SHARED = {"prompt", "adapter"}
_EVAL_KEYS = {"dataset", "scorers", "model", "params", "limit", "batch_size", "prices",
              "name"} | _SHARED
EXAMPLE = ("production: {evaluation: {dataset: sentiment@1, scorers: [exact]}, metric: exact, "
           "require: non-inferior, margin: 0.02, alpha: 0.05}")


@dataclass(frozen=True)
class ReleaseRule:
    """What one label of one artifact needs before it may move."""

    label: str
    evaluation: dict[str, Any] = field(hash=False)
    metric: str
    require: str
    margin: float = 0.0
    alpha: float = 0.05

    def describe(self) -> str:
        """``non-inferior to the current holder within 0.02 on exact, alpha 0.05``."""
        if self.require == "superior":
            what = "superior to the current holder"
        else:
            what = f"non-inferior to the current holder within {self.margin:g}"
        return f"{what} on {self.metric}, alpha {self.alpha:g}"


def parse_release_policy(text: str, filename: str) -> dict[str, ReleaseRule]:
    """Parse a policy file; raise :class:`ValidationFailed` naming the file and the problem."""
    data = safe_yaml.load(text, filename) or {}
    if not isinstance(data, dict):
        raise ValidationFailed(f"{filename}: a release policy maps labels to rules, e.g. "
                               f"{EXAMPLE}")
    return {label: parse_rule(label, raw, filename) for label, raw in data.items()}


def parse_rule(label: Any, raw: Any, filename: str) -> ReleaseRule:
    """One label's rule (``raw`` as in the file); problems name ``filename`` and the label."""
    if not isinstance(label, str):
        raise ValidationFailed(f"{filename}: {label!r} is not a label name")
    try:
        validate_label(label)
    except InvalidName as exc:
        raise ValidationFailed(f"{filename}: {exc.message}") from None
    where = f"{filename}: label '{label}'"
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{where}: a rule is a mapping, e.g. {EXAMPLE}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValidationFailed(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
                               f" (known: {', '.join(sorted(_RULE_KEYS))})")
    evaluation = _evaluation(raw.get("evaluation"), where)
    require = raw.get("require")
    if require not in REQUIREMENTS:
        raise ValidationFailed(f"{where}: 'require' must be one of {', '.join(REQUIREMENTS)}")
    metric = raw.get("metric")
    names = [n for n in scorer_names(evaluation["scorers"]) if n is not None]
    if not isinstance(metric, str) or metric not in names:
        raise ValidationFailed(f"{where}: 'metric' must name one of the evaluation's scorers "
                               f"({', '.join(names)})")
    margin = _number(raw.get("margin", 0), f"{where}: 'margin'", 0, None)
    if require == "superior" and margin:
        raise ValidationFailed(f"{where}: 'margin' applies to non-inferior only")
    if require == "non-inferior" and "margin" not in raw:
        raise ValidationFailed(f"{where}: non-inferior needs a 'margin' (in the metric's "
                               "units: 0.02 is 2 points of a pass rate)")
    alpha = _number(raw.get("alpha", 0.05), f"{where}: 'alpha'", 0, 0.5)
    if alpha == 0:
        raise ValidationFailed(f"{where}: 'alpha' must be above 0 and below 0.5")
    return ReleaseRule(label, evaluation, metric, require, float(margin), float(alpha))


def _evaluation(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{where}: 'evaluation' is an evaluation spec without "
                               "variants (dataset, scorers, model, params, limit)")
    unknown = set(raw) - _EVAL_KEYS
    if unknown:
        raise ValidationFailed(f"{where}: evaluation has unknown key(s) "
                               f"{', '.join(sorted(map(str, unknown)))} (known: "
                               f"{', '.join(sorted(_EVAL_KEYS))}; the variants are the "
                               "current holder and the target)")
    if not isinstance(raw.get("dataset"), str):
        raise ValidationFailed(f"{where}: evaluation 'dataset' must name a dataset version, "
                               "e.g. sentiment@1")
    if not isinstance(raw.get("scorers"), list) or not raw["scorers"]:
        raise ValidationFailed(f"{where}: evaluation 'scorers' must list at least one scorer")
    limit = raw.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise ValidationFailed(f"{where}: evaluation 'limit' must be a positive number of "
                               "cases")
    return dict(raw)


def scorer_names(scorers: list[Any]) -> list[str | None]:
    """The metric name each scorer reports under: its type, or its ``name`` option (None
    for an entry that is no scorer spec; starting the evaluation names its problem)."""
    names: list[str | None] = []
    for spec in scorers:
        if isinstance(spec, str):
            names.append(spec)
        elif isinstance(spec, dict) and len(spec) == 1:
            kind, options = next(iter(spec.items()))
            named = options.get("name") if isinstance(options, dict) else None
            names.append(str(named if named is not None else kind))
        else:
            names.append(None)
    return names


def _number(value: Any, what: str, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{what} must be a number")
    if value < low or (high is not None and value >= high):
        bound = f"at least {low:g}" + (f" and below {high:g}" if high is not None else "")
        raise ValidationFailed(f"{what} must be {bound}, not {value}")
    return float(value)

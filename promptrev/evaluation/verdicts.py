"""The words of an evaluation report: corrections, verdict sentences, the best variant.

Kept apart from :mod:`.stats` (the numbers): a verdict never contradicts the interval it
quotes, p-values are never rounded across alpha, and "no significant difference" is said
whenever it is the truth.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stats import Comparison, MetricReport

_CORRECTIONS = {"holm": "Holm-Bonferroni", "bonferroni": "Bonferroni", "none": "none"}

# --- report --------------------------------------------------------------------------------


def _best(names: list[str], comparisons: list[Comparison], higher_is_better: bool) -> str | None:
    """The variant significantly better than every other, if there is one."""
    if len(names) < 2:
        return None
    beaten: dict[str, set[str]] = {name: set() for name in names}
    for c in comparisons:
        if c.significant:
            winner, loser = _winner(c, higher_is_better)
            beaten[winner].add(loser)
    for name in names:
        if beaten[name] == set(names) - {name}:
            return name
    return None


def _winner(c: Comparison, higher_is_better: bool) -> tuple[str, str]:
    return (c.b, c.a) if (c.diff > 0) == higher_is_better else (c.a, c.b)


def _correction_text(method: str, m: int, baseline: str | None) -> str:
    if m == 0:
        return "none (no comparisons)"
    if m == 1:
        return "none (one comparison)"
    what = "pairwise comparisons" if baseline is None else f"comparisons with baseline '{baseline}'"
    if method == "none":
        return f"none: {m} {what}, p-values not adjusted"
    return f"{_CORRECTIONS[method]} over {m} {what}"


def _verdict(report: MetricReport, method: str, confidence: float, alpha: float) -> list[str]:
    names, metric = list(report.variants), report.metric
    if len(names) == 1:
        return [f"only one variant ('{names[0]}') on {metric}: nothing to compare"]
    m = len(report.comparisons)
    adjusted = ""
    if m > 1:
        adjusted = ", unadjusted" if method == "none" else f", {_CORRECTIONS[method]}-adjusted"
        adjusted = adjusted.replace("Holm-Bonferroni", "Holm")
    lines = [_sentence(c, report, confidence, alpha, adjusted) for c in report.comparisons]
    if len(names) > 2:
        if report.best is not None:
            lines.append(
                f"{report.best} is significantly better than every other variant on {metric}"
            )
        else:
            lines.append(f"no variant is significantly better than every other on {metric}")
    if m > 1:
        lines.append(f"multiple comparisons: {report.correction}")
    return lines


def _sentence(c: Comparison, report: MetricReport, confidence: float, alpha: float, adjusted: str):
    metric = report.metric if report.higher_is_better else f"{report.metric} (lower is better)"
    if c.n == 0:
        return f"{c.a} and {c.b} cannot be compared on {metric}: no case has a score for both"
    decimals = _decimals(c.high - c.low, c.diff)
    test = "McNemar" if c.test == "mcnemar-exact" else "permutation"
    p = f"{test} {_format_p(c.p_adjusted, alpha)}{adjusted}"
    ci = f"{confidence * 100:g}% CI"
    if c.significant:
        winner, loser = _winner(c, report.higher_is_better)
        sign = 1 if winner == c.b else -1
        diff, low, high = sign * c.diff, *sorted((sign * c.low, sign * c.high))
        return (
            f"{winner} beats {loser} on {metric} by {diff:+.{decimals}f} "
            f"({ci} {low:+.{decimals}f} to {high:+.{decimals}f}, {p})"
        )
    numbers = (
        f"{c.b} vs {c.a}: {c.diff:+.{decimals}f}, "
        f"{ci} {c.low:+.{decimals}f} to {c.high:+.{decimals}f}, {p}"
    )
    if c.p_adjusted < alpha:
        numbers += f", but the {ci} includes 0"
    return f"no significant difference between {c.a} and {c.b} on {metric} ({numbers})"


def _decimals(width: float, value: float) -> int:
    """Decimals that show two significant digits of the interval's width."""
    scale = width if width > 0 else abs(value)
    if not scale > 0:
        return 2
    return int(min(6, max(0, 1 - math.floor(math.log10(scale)))))


def _format_p(p: float, alpha: float) -> str:
    """``p=0.041``, ``p<0.001``; never rounded across alpha."""
    if p < 0.001:
        return "p<0.001"
    for digits in (2, 3, 4, 6):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            break
    return f"p={text}"




"""Statistics for A/B evaluation: bootstrap intervals, paired tests, multiple comparisons.

Scores are per case and paired: ``scores[variant][i]`` is the score of case ``i`` for every
variant, ``None`` where a case has no score. A variant's mean comes with a BCa bootstrap
interval; two variants are compared on the cases both scored, with a bootstrap interval on
the mean difference and a p-value (exact McNemar for pass/fail scores, a paired sign-flip
permutation test otherwise). With several comparisons the p-values are adjusted (Holm by
default), and a difference is called significant only when the adjusted p-value is below
alpha *and* the interval excludes zero, so the verdict never contradicts the numbers shown
beside it. Every random step is seeded: the same inputs and seed give the same report.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import special, stats

from ..errors import InvalidRequest
from .verdicts import _CORRECTIONS, _best, _correction_text, _verdict

Scores = Sequence[float | bool | None] | np.ndarray

# Exact enumeration of the sign-flip distribution while it has at most this many outcomes.
_EXACT_LIMIT = 2**16
# Resampled cells per chunk in the bootstrap: bounds memory whatever the number of cases.
_CHUNK_CELLS = 1_000_000


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` cases with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN (no cases) becomes ``None``."""
        return {
            "mean": _finite_or_none(self.mean),
            "low": _finite_or_none(self.low),
            "high": _finite_or_none(self.high),
            "n": self.n,
        }


@dataclass(frozen=True)
class Comparison:
    """Variant ``b`` against variant ``a`` on the cases both scored.

    ``diff`` is ``mean(b) - mean(a)`` with its interval; ``discordant`` is
    ``(a only passes, b only passes)`` for pass/fail scores, else ``None``.
    """

    a: str
    b: str
    diff: float
    low: float
    high: float
    p_value: float
    p_adjusted: float
    test: str
    n: int
    significant: bool
    discordant: tuple[int, int] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; NaN (no paired cases) becomes ``None``."""
        return {
            "a": self.a,
            "b": self.b,
            "diff": _finite_or_none(self.diff),
            "low": _finite_or_none(self.low),
            "high": _finite_or_none(self.high),
            "p_value": self.p_value,
            "p_adjusted": self.p_adjusted,
            "test": self.test,
            "n": self.n,
            "significant": self.significant,
            "discordant": list(self.discordant) if self.discordant is not None else None,
        }


@dataclass
class MetricReport:
    """Every variant's mean and the comparisons between variants on one metric."""

    metric: str
    higher_is_better: bool
    variants: dict[str, Interval]
    comparisons: list[Comparison]
    correction: str
    verdict: list[str]
    best: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "variants": {name: iv.to_dict() for name, iv in self.variants.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
            "correction": self.correction,
            "verdict": list(self.verdict),
            "best": self.best,
        }


def mean_ci(
    values: Scores, *, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> Interval:
    """Mean of the scores (``None`` dropped) with a BCa bootstrap interval.

    No scores give a NaN interval; one score, or all scores equal, a zero-width interval.
    """
    _check_settings(confidence, n_boot)
    x = _as_scores(values, "values")
    x = x[~np.isnan(x)]
    ((mean, low, high),) = _intervals(x[:, None], confidence, n_boot, np.random.default_rng(seed))
    return Interval(mean, low, high, len(x))


def is_binary(values: Scores) -> bool:
    """Whether the scores (``None`` ignored) are pass/fail: at least one, each 0 or 1."""
    x = _as_scores(values, "values")
    x = x[~np.isnan(x)]
    return x.size > 0 and bool(np.all((x == 0) | (x == 1)))


def paired_test(
    a: Scores,
    b: Scores,
    *,
    binary: bool | None = None,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare ``b`` with ``a`` on the cases both scored (pairs with a ``None`` are dropped).

    Pass/fail scores (``binary``, detected when ``None``) get an exact McNemar test, other
    scores a paired permutation test; the difference gets a bootstrap interval. Alone, a
    comparison is significant when ``p < 1 - confidence`` and its interval excludes zero;
    ``compare`` decides again after adjusting for multiple comparisons.
    """
    _check_settings(confidence, n_resamples)
    xa, xb = _as_scores(a, "a"), _as_scores(b, "b")
    if len(xa) != len(xb):
        raise InvalidRequest(f"paired scores need one score per case: a has {len(xa)}, b {len(xb)}")
    if binary is None:
        binary = is_binary(np.concatenate([xa, xb]))
    d = xb - xa
    d = d[~np.isnan(d)]
    rng = np.random.default_rng(seed)
    ((diff, low, high),) = _intervals(d[:, None], confidence, n_resamples, rng)
    ((p, discordant),) = _pair_tests(d[:, None], binary, n_resamples, rng)
    comparison = _comparison("a", "b", len(d), (diff, low, high), p, discordant, binary)
    return replace(comparison, significant=_significant(p, low, high, 1 - confidence))


def adjust(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """P-values adjusted for multiple comparisons: ``holm``, ``bonferroni`` or ``none``."""
    if method not in _CORRECTIONS:
        raise InvalidRequest(
            f"unknown correction '{method}' (choose from: {', '.join(_CORRECTIONS)})"
        )
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if method == "none" or m == 0:
        return p.tolist()
    if method == "bonferroni":
        return np.minimum(1.0, p * m).tolist()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


def compare(
    scores: dict[str, Scores],
    *,
    metric: str,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    correction: str = "holm",
    confidence: float = 0.95,
    seed: int = 0,
    baseline: str | None = None,
    n_resamples: int = 10_000,
) -> MetricReport:
    """Means of every variant and paired comparisons between them on one metric.

    With a ``baseline`` every other variant is compared with it, else every pair is. A
    comparison is significant when its adjusted p-value is below ``alpha`` and its interval
    excludes zero. Every statistic is computed on the same resamples of the cases (each over
    the cases it has scores for), which keeps three variants of a thousand cases well under a
    second.
    """
    _check_settings(confidence, n_resamples)
    if not 0 < alpha < 1:
        raise InvalidRequest(f"alpha must be between 0 and 1, not {alpha}")
    arrays = _score_arrays(scores, baseline)
    binary = is_binary(np.concatenate(list(arrays.values())))
    pairs = _pairs(list(arrays), baseline)
    variants, comparisons = _estimate(arrays, pairs, binary, confidence, n_resamples, seed)
    p_adjusted = adjust([c.p_value for c in comparisons], correction)
    comparisons = [
        replace(c, p_adjusted=pa, significant=_significant(pa, c.low, c.high, alpha))
        for c, pa in zip(comparisons, p_adjusted, strict=True)
    ]
    best = _best(list(arrays), comparisons, higher_is_better)
    report = MetricReport(
        metric=metric,
        higher_is_better=higher_is_better,
        variants=variants,
        comparisons=comparisons,
        correction=_correction_text(correction, len(comparisons), baseline),
        verdict=[],
        best=best,
    )
    report.verdict = _verdict(report, correction, confidence, alpha)
    return report


# --- inputs --------------------------------------------------------------------------------


def _check_settings(confidence: float, n_resamples: int) -> None:
    if not 0 < confidence < 1:
        raise InvalidRequest(f"confidence must be between 0 and 1, not {confidence}")
    if n_resamples < 1:
        raise InvalidRequest(f"the number of resamples must be positive, not {n_resamples}")


def _as_scores(values: Scores, name: str) -> np.ndarray:
    """Scores as floats, ``None`` (missing) as NaN; anything but a finite number is refused."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        x = values.astype(float).ravel()
    else:
        try:
            x = np.array([np.nan if v is None else _number(v) for v in values], dtype=float)
        except TypeError as exc:
            raise InvalidRequest(f"scores of '{name}' must be numbers or None ({exc})") from None
    if np.isinf(x).any():
        raise InvalidRequest(f"scores of '{name}' must be finite numbers or None")
    return x


def _number(value: Any) -> float:
    if isinstance(value, (bool, int, float, np.number)):
        return float(value)
    raise TypeError(f"got {type(value).__name__} {value!r}")


def _score_arrays(scores: dict[str, Scores], baseline: str | None) -> dict[str, np.ndarray]:
    if not scores:
        raise InvalidRequest("no variants to compare")
    if baseline is not None and baseline not in scores:
        raise InvalidRequest(
            f"baseline '{baseline}' is not a variant (variants: {', '.join(scores)})"
        )
    arrays = {name: _as_scores(values, name) for name, values in scores.items()}
    lengths = {name: len(x) for name, x in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise InvalidRequest(
            f"every variant needs one score per case, in the same order ({listed})"
        )
    return arrays


def _pairs(names: list[str], baseline: str | None) -> list[tuple[str, str]]:
    if baseline is None:
        return list(itertools.combinations(names, 2))
    return [(baseline, name) for name in names if name != baseline]


# --- estimation ----------------------------------------------------------------------------


def _estimate(
    arrays: dict[str, np.ndarray],
    pairs: list[tuple[str, str]],
    binary: bool,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> tuple[dict[str, Interval], list[Comparison]]:
    """Intervals and tests, every statistic computed on the same resamples of the cases.

    A column holds one variant's scores or one pair's differences, NaN where missing: each
    statistic uses the cases it has, and a case nobody scored is left out.
    """
    names = list(arrays)
    diffs = [arrays[b] - arrays[a] for a, b in pairs]
    columns = np.column_stack([arrays[name] for name in names] + diffs)
    columns = columns[~np.isnan(columns).all(axis=1)]
    rng = np.random.default_rng(seed)
    intervals = _intervals(columns, confidence, n_resamples, rng)
    paired = columns[:, len(names) :]
    tests = _pair_tests(paired, binary, n_resamples, rng) if pairs else []
    sizes = (~np.isnan(columns)).sum(axis=0)
    variants = {name: Interval(*intervals[i], int(sizes[i])) for i, name in enumerate(names)}
    comparisons = [
        _comparison(a, b, int(n), interval, p, discordant, binary)
        for (a, b), n, interval, (p, discordant) in zip(
            pairs, sizes[len(names) :], intervals[len(names) :], tests, strict=True
        )
    ]
    return variants, comparisons


def _comparison(
    a: str,
    b: str,
    n: int,
    interval: tuple[float, float, float],
    p: float,
    discordant: tuple[int, int] | None,
    binary: bool,
) -> Comparison:
    diff, low, high = interval
    test = "mcnemar-exact" if binary else "paired-permutation"
    return Comparison(a, b, diff, low, high, p, p, test, n, False, discordant)


def _significant(p: float, low: float, high: float, alpha: float) -> bool:
    """Below alpha and an interval that excludes zero: the two never disagree in a report."""
    return bool(p < alpha and (low > 0 or high < 0))


def _intervals(
    columns: np.ndarray, confidence: float, n_boot: int, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """Mean and BCa bootstrap interval of each column (NaN = missing), from shared resamples.

    No values give NaN; a single value, or all values equal, a zero-width interval.
    """
    present = ~np.isnan(columns)
    sizes = present.sum(axis=0)
    filled = np.where(present, columns, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = filled.sum(axis=0) / sizes
    highest = np.max(columns, axis=0, where=present, initial=-np.inf)
    varies = highest > np.min(columns, axis=0, where=present, initial=np.inf)
    result = [(float(m), float(m), float(m)) for m in means]
    if varies.any():
        boot = _bootstrap_means(filled[:, varies], present[:, varies], n_boot, rng)
        for j, column, resampled in zip(
            np.flatnonzero(varies), columns[:, varies].T, boot.T, strict=True
        ):
            low, high = _bca_bounds(column[~np.isnan(column)], resampled, confidence)
            result[j] = (float(means[j]), low, high)
    return result


def _bootstrap_means(
    filled: np.ndarray, present: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_boot`` means of each column over resampled cases (with replacement, jointly).

    A column's mean in a resample is over the resampled cases it has a value for (NaN if
    none), so complete columns get the ordinary bootstrap. Few distinct rows (pass/fail,
    ratings) are resampled exactly through multinomial counts of the distinct rows; otherwise
    case counts are built in chunks and multiplied in.
    """
    n, k = filled.shape
    joint = np.hstack([filled, present])
    rows, weights = np.unique(joint, axis=0, return_counts=True)
    if 4 * len(rows) <= n:
        sums = rng.multinomial(n, weights / n, size=n_boot) @ rows
    else:
        sums = np.empty((n_boot, 2 * k))
        chunk = max(1, _CHUNK_CELLS // n)
        for start in range(0, n_boot, chunk):
            size = min(chunk, n_boot - start)
            picks = rng.integers(0, n, size=(size, n), dtype=np.int32)
            picks += (np.arange(size, dtype=np.int32) * n)[:, None]
            counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
            sums[start : start + size] = counts @ joint
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, :k] / sums[:, k:]


def _bca_bounds(values: np.ndarray, boot: np.ndarray, confidence: float) -> tuple[float, float]:
    """Bias-corrected and accelerated percentile bounds of the mean of ``values``."""
    boot = boot[~np.isnan(boot)]
    mean = values.mean()
    dev = values - mean
    squares = (dev**2).sum()
    accel = (dev**3).sum() / (6 * squares**1.5)
    tol = 1e-9 * (abs(mean) + math.sqrt(squares / len(values)))
    below = np.mean(boot < mean - tol) + 0.5 * np.mean(np.abs(boot - mean) <= tol)
    z0 = special.ndtri(np.clip(below, 0.5 / len(boot), 1 - 0.5 / len(boot)))
    z = special.ndtri(np.array([(1 - confidence) / 2, (1 + confidence) / 2]))
    levels = special.ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    if not np.isfinite(levels).all():  # sums overflowed (values near the float limit)
        levels = special.ndtr(z)  # the plain percentile interval
    low, high = np.quantile(boot, levels)
    return float(low), float(high)


# --- tests ---------------------------------------------------------------------------------


def _pair_tests(
    diffs: np.ndarray, binary: bool, n_resamples: int, rng: np.random.Generator
) -> list[tuple[float, tuple[int, int] | None]]:
    """P-value (and discordant counts for pass/fail) of each column of paired differences.

    NaN marks a pair with a missing score: it is left out (it adds nothing to a sign flip).
    """
    if binary:
        return [_mcnemar(column) for column in diffs.T]
    p_values = _sign_flip_p_values(np.nan_to_num(diffs, nan=0.0), n_resamples, rng)
    return [(float(p), None) for p in p_values]


def _mcnemar(d: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact McNemar: a two-sided binomial test on the discordant pairs (``b - a`` = ±1)."""
    only_a, only_b = int(np.sum(d < 0)), int(np.sum(d > 0))
    if only_a + only_b == 0:
        return 1.0, (0, 0)
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue), (only_a, only_b)


def _sign_flip_p_values(
    diffs: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Two-sided paired permutation p-values: the sum of differences under random signs.

    Exact where the sign-flip distribution is small enough to enumerate, else sampled, with
    the columns that are sampled sharing their sign flips.
    """
    p_values = np.empty(diffs.shape[1])
    sampled = []
    for j, column in enumerate(diffs.T):
        exact = _exact_sign_flip_p(column)
        if exact is None:
            sampled.append(j)
        else:
            p_values[j] = exact
    if sampled:
        p_values[sampled] = _sampled_sign_flip_p(diffs[:, sampled], n_resamples, rng)
    return p_values


def _exact_sign_flip_p(d: np.ndarray) -> float | None:
    """Exact p-value by enumeration, or None when there are too many outcomes.

    Cases with equal ``|d|`` form a group whose contribution depends only on how many of its
    signs are positive (a binomial), so ties shrink the enumeration.
    """
    values, counts = np.unique(np.abs(d[d != 0]), return_counts=True)
    if len(values) == 0:
        return 1.0
    radix = counts + 1
    if np.prod(radix.astype(float)) > _EXACT_LIMIT:
        return None
    # Every combination of positive-sign counts per group, read as mixed-radix digits.
    strides = np.cumprod(np.concatenate([[1], radix[:-1]]))
    positives = np.arange(np.prod(radix))[:, None] // strides % radix
    table = np.concatenate([_log_half_binomial(np.arange(r), r - 1) for r in radix])
    weights = np.exp(table[positives + np.cumsum(radix) - radix].sum(axis=1))
    null = (2 * positives - counts) @ values
    observed = abs(d.sum())
    tol = 1e-9 * np.abs(d).sum()
    return float(min(1.0, weights @ (np.abs(null) >= observed - tol)))


def _sampled_sign_flip_p(
    diffs: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Monte Carlo p-values, ``(1 + hits) / (1 + resamples)``, which keeps the test valid."""
    magnitudes = np.abs(diffs)
    observed = np.abs(diffs.sum(axis=0))
    tol = 1e-9 * magnitudes.sum(axis=0)
    rows, counts = np.unique(magnitudes, axis=0, return_counts=True)
    hits = np.zeros(diffs.shape[1])
    for null in _sign_flip_null(magnitudes, rows, counts, n_resamples, rng):
        hits += (np.abs(null) >= observed - tol).sum(axis=0)
    return (1 + hits) / (1 + n_resamples)


def _log_half_binomial(k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``log P(K = k)``, ``K ~ Binomial(m, 1/2)``: ``k`` positive signs among ``m``."""
    return (
        special.gammaln(m + 1)
        - special.gammaln(k + 1)
        - special.gammaln(m - k + 1)
        - m * math.log(2)
    )


def _sign_flip_null(magnitudes, rows, counts, n_resamples: int, rng: np.random.Generator):
    """Chunks of sampled sign-flip sums: binomials per group of equal rows, else random bits."""
    n = len(magnitudes)
    if 4 * len(rows) <= n:
        positives = rng.binomial(counts, 0.5, size=(n_resamples, len(rows)))
        yield (2 * positives - counts) @ rows
        return
    total = magnitudes.sum(axis=0)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        random_bytes = rng.integers(0, 256, size=(size, (n + 7) // 8), dtype=np.uint8)
        signs = np.unpackbits(random_bytes, axis=1, count=n).astype(float)
        yield 2 * (signs @ magnitudes) - total


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


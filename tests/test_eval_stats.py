"""A/B statistics checked on data with a known answer: constructed effects are found,
identical variants are rejected at the nominal rate, intervals cover at their level."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from promptrev.errors import InvalidRequest
from promptrev.evaluation.stats import (
    Interval,
    adjust,
    compare,
    is_binary,
    mean_ci,
    paired_test,
)

SEEDS = range(400)


def pass_fail_table(both: int, a_only: int, b_only: int, neither: int):
    """Paired pass/fail scores with the given 2x2 table."""
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return a, b


def mean_difference(x, y, axis):
    return np.mean(y - x, axis=axis)


# --- known answers ---------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    a, b = pass_fail_table(both=50, a_only=8, b_only=20, neither=22)
    c = paired_test(a, b)
    assert c.test == "mcnemar-exact" and c.discordant == (8, 20) and c.n == 100
    by_hand = 2 * sum(math.comb(28, k) for k in range(9)) / 2**28
    assert c.p_value == pytest.approx(by_hand, rel=1e-12)
    assert c.p_value == pytest.approx(stats.binomtest(20, 28, 0.5).pvalue, rel=1e-12)
    assert c.diff == pytest.approx(0.12)
    assert c.low < 0.12 < c.high


def test_mcnemar_without_discordant_pairs_is_p_one():
    a, b = pass_fail_table(both=30, a_only=0, b_only=0, neither=10)
    c = paired_test(a, b)
    assert c.p_value == 1.0 and c.discordant == (0, 0) and not c.significant


def test_constructed_pass_fail_effect_is_significant():
    # 200 cases: a passes 60%, b 80%.
    a, b = pass_fail_table(both=110, a_only=10, b_only=50, neither=30)
    report = compare({"zero-shot": a, "few-shot": b}, metric="accuracy")
    (c,) = report.comparisons
    assert report.variants["zero-shot"].mean == pytest.approx(0.6)
    assert report.variants["few-shot"].mean == pytest.approx(0.8)
    assert c.significant and c.p_value < 1e-6 and c.low > 0
    assert report.best == "few-shot"
    assert report.verdict[0].startswith("few-shot beats zero-shot on accuracy by +0.20 (95% CI")
    assert "McNemar p<0.001" in report.verdict[0]


def test_constructed_continuous_effect_is_significant():
    rng = np.random.default_rng(7)
    a = rng.normal(0.5, 0.2, 150)
    b = a + 0.05 + rng.normal(0, 0.1, 150)
    report = compare({"v1": a.tolist(), "v2": b.tolist()}, metric="similarity")
    (c,) = report.comparisons
    assert c.test == "paired-permutation" and c.significant and c.p_value < 0.001
    assert c.low < 0.05 < c.high
    assert report.best == "v2" and report.verdict[0].startswith("v2 beats v1 on similarity")


def test_permutation_p_value_matches_exact_enumeration():
    rng = np.random.default_rng(3)
    for a, b in [
        (rng.normal(size=12), rng.normal(size=12)),  # all |d| distinct
        (rng.integers(1, 6, 15).astype(float), rng.integers(1, 6, 15).astype(float)),  # ties
    ]:
        ours = paired_test(a, b, binary=False).p_value
        exact = stats.permutation_test(
            (a, b), mean_difference, permutation_type="samples", n_resamples=np.inf
        ).pvalue
        assert ours == pytest.approx(exact, rel=1e-9)
    # Ten improvements, no losses: only all-plus and all-minus are as extreme.
    c = paired_test(np.zeros(10), np.arange(1.0, 11.0))
    assert c.p_value == pytest.approx(2 / 2**10)


def test_sampled_permutation_p_value_is_close_to_the_exact_one():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=18), rng.normal(0.4, 1, 18)  # 2**18 sign patterns: sampled
    d = b - a
    signs = (np.arange(2**18)[:, None] >> np.arange(18)) & 1
    null = np.abs((2 * signs - 1) @ d)
    exact = np.mean(null >= abs(d.sum()) - 1e-9)
    assert paired_test(a, b, n_resamples=40_000).p_value == pytest.approx(exact, abs=0.01)


def test_interval_of_the_difference_covers_the_true_effect():
    binary_hits = continuous_hits = 0
    for seed in range(200):
        rng = np.random.default_rng(10_000 + seed)
        a, b = rng.random(120) < 0.6, rng.random(120) < 0.75
        c = paired_test(a.astype(float), b.astype(float), n_resamples=2000, seed=seed)
        binary_hits += c.low <= 0.15 <= c.high
        x = rng.normal(0, 1, 40)
        c = paired_test(x, x + 0.3 + rng.exponential(1, 40) - 1, n_resamples=2000, seed=seed)
        continuous_hits += c.low <= 0.3 <= c.high
    assert 0.90 <= binary_hits / 200 <= 0.98
    assert 0.90 <= continuous_hits / 200 <= 0.98


# --- identical variants: the false-positive rate stays nominal -------------------------------


def rejection_rates(draw) -> tuple[float, float]:
    """Share of seeds where paired_test has p < 0.05, and where compare says significant."""
    raw = reported = 0
    for seed in SEEDS:
        a, b = draw(np.random.default_rng(seed))
        raw += paired_test(a, b, n_resamples=2000, seed=seed).p_value < 0.05
        report = compare({"a": a, "b": b}, metric="m", n_resamples=2000, seed=seed)
        reported += report.comparisons[0].significant
    return raw / len(SEEDS), reported / len(SEEDS)


def test_identical_pass_fail_variants_are_rarely_significant():
    raw, reported = rejection_rates(lambda rng: (rng.random((2, 100)) < 0.6).astype(float))
    assert raw <= 0.06 and reported <= 0.06  # exact McNemar is conservative
    assert reported <= raw


def test_identical_continuous_variants_are_rejected_at_the_nominal_rate():
    raw, reported = rejection_rates(lambda rng: rng.normal(0.5, 0.2, (2, 40)))
    assert 0.02 <= raw <= 0.08 and 0.02 <= reported <= 0.08


def test_identical_small_samples_use_the_exact_permutation_distribution():
    raw, reported = rejection_rates(lambda rng: rng.exponential(1, (2, 12)))
    assert 0.02 <= raw <= 0.08 and reported <= raw


# --- bootstrap interval of a mean ------------------------------------------------------------


@pytest.mark.parametrize(
    ("draw", "true_mean"),
    [
        (lambda rng: rng.normal(1, 2, 30), 1.0),
        (lambda rng: rng.exponential(1, 40), 1.0),  # skewed: where BCa earns its keep
        (lambda rng: (rng.random(100) < 0.3).astype(float), 0.3),
    ],
)
def test_bootstrap_interval_covers_the_mean_about_95_percent_of_the_time(draw, true_mean):
    hits = 0
    for seed in range(300):
        iv = mean_ci(draw(np.random.default_rng(20_000 + seed)), n_boot=2000, seed=seed)
        hits += iv.low <= true_mean <= iv.high
    assert 0.90 <= hits / 300 <= 0.98


def test_mean_ci_edge_cases_do_not_crash():
    empty = mean_ci([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low)
    assert empty.to_dict() == {"mean": None, "low": None, "high": None, "n": 0}
    assert mean_ci([0.7]) == Interval(0.7, 0.7, 0.7, 1)
    assert mean_ci([2, 2, 2, None]) == Interval(2.0, 2.0, 2.0, 3)
    iv = mean_ci([1, 2, 3, 4, 5])
    assert iv.low < 3 < iv.high and iv.n == 5
    assert mean_ci(np.arange(10.0), confidence=0.5).high < mean_ci(np.arange(10.0)).high


# --- multiple comparisons --------------------------------------------------------------------


def test_holm_matches_a_hand_computed_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> kept monotone: 0.06.
    assert adjust(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert adjust(p, "none") == p
    assert adjust([0.5, 0.9], "holm") == [1.0, 1.0]
    assert adjust([]) == []
    with pytest.raises(InvalidRequest, match="unknown correction 'fdr'"):
        adjust(p, "fdr")


def three_variants(seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    rates = {"zero-shot": 0.55, "few-shot": 0.75, "cot": 0.57}
    return {name: (rng.random(300) < r).astype(float).tolist() for name, r in rates.items()}


def test_three_variants_say_how_comparisons_were_corrected():
    report = compare(three_variants(), metric="accuracy")
    assert [(c.a, c.b) for c in report.comparisons] == [
        ("zero-shot", "few-shot"),
        ("zero-shot", "cot"),
        ("few-shot", "cot"),
    ]
    assert report.correction == "Holm-Bonferroni over 3 pairwise comparisons"
    assert report.verdict[-1] == "multiple comparisons: Holm-Bonferroni over 3 pairwise comparisons"
    raw = [c.p_value for c in report.comparisons]
    assert [c.p_adjusted for c in report.comparisons] == pytest.approx(adjust(raw))
    assert all(c.p_adjusted >= c.p_value for c in report.comparisons)
    assert all("Holm-adjusted" in line for line in report.verdict[:3])
    assert report.best == "few-shot"
    assert "few-shot is significantly better than every other variant" in report.verdict[3]
    assert "no significant difference between zero-shot and cot" in report.verdict[1]

    unadjusted = compare(three_variants(), metric="accuracy", correction="none")
    assert unadjusted.correction == "none: 3 pairwise comparisons, p-values not adjusted"
    bonferroni = compare(three_variants(), metric="accuracy", correction="bonferroni")
    assert bonferroni.correction == "Bonferroni over 3 pairwise comparisons"


def test_baseline_compares_every_other_variant_with_it():
    report = compare(three_variants(), metric="accuracy", baseline="zero-shot")
    assert [(c.a, c.b) for c in report.comparisons] == [
        ("zero-shot", "few-shot"),
        ("zero-shot", "cot"),
    ]
    assert report.correction == "Holm-Bonferroni over 2 comparisons with baseline 'zero-shot'"
    assert report.best is None  # few-shot was never compared with cot


def test_two_variants_need_no_correction():
    report = compare({"a": [1, 0, 1], "b": [1, 1, 1]}, metric="accuracy")
    assert report.correction == "none (one comparison)"
    assert "adjusted" not in report.verdict[0]


def test_significance_agrees_with_the_interval_and_the_adjusted_p_value():
    for seed in range(20):
        report = compare(three_variants(seed), metric="accuracy", seed=seed)
        for c in report.comparisons:
            excludes_zero = c.low > 0 or c.high < 0
            assert c.significant == (c.p_adjusted < 0.05 and excludes_zero)


# --- verdicts ---------------------------------------------------------------------------------


def test_identical_variants_get_no_significant_difference():
    rng = np.random.default_rng(5)
    a, b = (rng.random((2, 200)) < 0.7).astype(float)
    report = compare({"zero-shot": a.tolist(), "few-shot": b.tolist()}, metric="accuracy")
    assert report.verdict[0].startswith(
        "no significant difference between zero-shot and few-shot on accuracy ("
    )
    assert report.best is None

    same = compare({"x": a.tolist(), "y": a.tolist()}, metric="accuracy")
    (c,) = same.comparisons
    assert c.diff == 0 and c.p_value == 1 and (c.low, c.high) == (0, 0)
    assert same.verdict[0].startswith("no significant difference between x and y")


def test_lower_is_better_metrics_pick_the_lower_variant():
    rng = np.random.default_rng(2)
    slow = rng.normal(900, 100, 80)
    fast = slow - 150 + rng.normal(0, 50, 80)
    report = compare({"slow": slow, "fast": fast}, metric="latency_ms", higher_is_better=False)
    assert report.best == "fast"
    assert report.verdict[0].startswith("fast beats slow on latency_ms (lower is better) by -1")


def test_p_values_are_never_rounded_across_alpha():
    report = compare({"a": [0.0] * 5, "b": [1.0] * 5}, metric="m", alpha=0.0624)
    # Exact sign test: p = 2/32 = 0.0625, shown as 0.0625 rather than 0.062 or 0.063.
    assert "p=0.0625" in report.verdict[0]


# --- missing values, edge cases, determinism --------------------------------------------------


def test_missing_values_are_dropped_pairwise():
    scores = {
        "a": [1, None, 0, 1, 1, 0, 1],
        "b": [1, 1, None, 0, 1, 1, 1],
        "c": [0, 1, 1, None, None, 1, 1],
    }
    report = compare(scores, metric="accuracy")
    assert {name: iv.n for name, iv in report.variants.items()} == {"a": 6, "b": 6, "c": 5}
    assert report.variants["a"].mean == pytest.approx(4 / 6)
    ab, ac, bc = report.comparisons
    assert (ab.n, ac.n, bc.n) == (5, 4, 4)
    # a vs b on cases 0, 3, 4, 5, 6: a = 1,1,1,0,1 and b = 1,0,1,1,1.
    assert ab.diff == pytest.approx(0.0) and ab.discordant == (1, 1)
    alone = paired_test(scores["a"], scores["b"])
    assert (alone.n, alone.p_value, alone.discordant) == (5, ab.p_value, ab.discordant)


def test_scattered_missing_values_share_the_resamples_and_stay_sensible():
    rng = np.random.default_rng(4)
    full = {name: rng.normal(mu, 1, 300) for name, mu in (("a", 0), ("b", 0.5), ("c", 0))}
    scores = {
        name: [None if rng.random() < 0.1 else float(v) for v in x] for name, x in full.items()
    }
    report = compare(scores, metric="m")
    for name, values in scores.items():
        alone = mean_ci(values)
        iv = report.variants[name]
        assert (iv.n, iv.mean) == (alone.n, pytest.approx(alone.mean))
        assert iv.low == pytest.approx(alone.low, abs=0.03)
        assert iv.high == pytest.approx(alone.high, abs=0.03)
    ab, ac, bc = report.comparisons
    assert ab.significant and bc.significant
    assert report.best == "b"
    for c, (x, y) in zip(report.comparisons, [("a", "b"), ("a", "c"), ("b", "c")], strict=True):
        alone = paired_test(scores[x], scores[y])
        assert c.n == alone.n and c.diff == pytest.approx(alone.diff)
        assert c.p_value == pytest.approx(alone.p_value, abs=0.01)


def test_edge_cases_do_not_crash():
    flat = compare({"a": [0.5] * 10, "b": [0.5] * 10}, metric="m")
    assert flat.comparisons[0].p_value == 1 and flat.best is None

    single_case = compare({"a": [0.2], "b": [0.9]}, metric="m")
    (c,) = single_case.comparisons
    assert c.n == 1 and c.p_value == 1 and not c.significant

    empty = compare({"a": [], "b": []}, metric="m")
    assert empty.comparisons[0].n == 0 and not empty.comparisons[0].significant
    assert "cannot be compared" in empty.verdict[0]
    json.dumps(empty.to_dict(), allow_nan=False)

    disjoint = compare({"a": [1, None], "b": [None, 0]}, metric="m")
    assert disjoint.comparisons[0].n == 0 and disjoint.variants["a"].n == 1

    rng = np.random.default_rng(0)
    sparse = compare({"a": [1.0, 2.0] + [None] * 998, "b": rng.normal(size=1000)}, metric="m")
    assert sparse.variants["a"].n == 2 and 1 <= sparse.variants["a"].low <= 1.5
    assert sparse.comparisons[0].n == 2 and not sparse.comparisons[0].significant

    alone = compare({"only": [1, 0, 1]}, metric="m")
    assert alone.comparisons == [] and alone.best is None
    assert alone.verdict == ["only one variant ('only') on m: nothing to compare"]


def test_inputs_are_checked():
    with pytest.raises(InvalidRequest, match="one score per case"):
        compare({"a": [1, 0], "b": [1]}, metric="m")
    with pytest.raises(InvalidRequest, match="baseline 'z' is not a variant"):
        compare({"a": [1], "b": [1]}, metric="m", baseline="z")
    with pytest.raises(InvalidRequest, match="scores of 'a' must be numbers"):
        compare({"a": ["1"], "b": [1]}, metric="m")
    with pytest.raises(InvalidRequest, match="finite"):
        mean_ci([1.0, math.inf])
    with pytest.raises(InvalidRequest, match="no variants"):
        compare({}, metric="m")


def test_is_binary():
    assert is_binary([1, 0, None, True]) and is_binary(np.array([0.0, 1.0]))
    assert not is_binary([0, 0.5, 1]) and not is_binary([]) and not is_binary([None])


def test_reports_are_deterministic_given_the_seed_and_json_ready():
    scores = {"a": np.random.default_rng(1).normal(size=50), "b": np.zeros(50)}
    first = compare(scores, metric="m", seed=3).to_dict()
    assert compare(scores, metric="m", seed=3).to_dict() == first
    assert compare(scores, metric="m", seed=4).to_dict() != first
    assert json.loads(json.dumps(first, allow_nan=False)) == first

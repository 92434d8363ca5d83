"""Anytime-valid inference for live splits: mSPRT p-values and confidence sequences.

A fixed-horizon test (Fisher, Welch) is valid once, at a sample size chosen in advance.
Looked at after every outcome, it will sooner or later show p < alpha by chance alone:
peeking inflates false positives (``bench/bench_sequential.py`` measures by how much).
The figures here stay valid however often they are looked at, and whenever the
experiment is stopped.

The statistic is the mixture sequential probability ratio test (mSPRT) of Johari, Koomen,
Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests",
*Operations Research* 70(3), 2022, with a normal mixture over the difference of means
``θ = mean(b) − mean(a)``. With ``θ̂`` the observed difference, ``V`` its variance and
``r = τ²/V`` the ratio of the mixture's variance to it::

    log Λ = −½ log(1 + r) + r/(1 + r) · θ̂²/(2V)

The always-valid p-value is the running minimum of ``1/Λ`` (so it never goes up), and
inverting the test gives the confidence sequence::

    θ̂ ± sqrt(V · (1 + r)/r · (2 log(1/α) + log(1 + r)))

intersected over time. This is the normal-mixture boundary of Howard, Ramdas, McAuliffe
and Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
*Annals of Statistics* 49(2), 2021, used with a plug-in variance as the asymptotic
confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas, "Time-uniform
central limit theory and asymptotic confidence sequences", *Annals of Statistics* 2024.
Its coverage holds as the arms grow; the tests and the benchmark check it by simulation.

``V`` is a plug-in: the larger of ``s_a²/n_a + s_b²/n_b`` and the pooled variance of both
arms times ``1/n_a + 1/n_b`` (for pass/fail outcomes each rate is ``(s+1)/(n+2)``, so no
arm has variance 0). The pooled one is the variance when the arms agree, which is when a
false positive can happen: the small arm of a lopsided split (90/10) underestimates its
own variance while it is small, most of all for skewed outcomes, and in simulation
(log-normal outcomes, 90/10) the unpooled variance alone let 9% of A/A experiments cross
alpha = 5%; with the larger of the two, 0.1%. Under a real difference the pooled one is
the larger, which only widens the interval.

The mixture is tuned to be tightest at a sample size fixed in advance (the split's
planned size, else :data:`DEFAULT_TUNING_PER_ARM`): ``τ² = ρ²·(s_a² n_eff/n_a + s_b²
n_eff/n_b)`` with ``n_eff`` the harmonic mean of the arm sizes and ``ρ²`` from Howard et
al.'s rule, ``(−2 log α + log(1 − 2 log α)) / n``. Before :data:`MIN_PER_ARM` outcomes in
each arm, the plug-in variance is too rough to lean on: the p-value stays 1 and the
interval unbounded.

Every function works along the last axis of its arrays, so the benchmark runs thousands
of simulated experiments through the same code the live page uses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidRequest

# Outcomes each arm needs before the sequence starts: the plug-in variance and the normal
# approximation need this many (with 10, a 90/10 split of pass/fail outcomes went over
# alpha in simulation; skewed continuous outcomes in a lopsided split need more still).
MIN_PER_ARM = 30
# Where the mixture is tightest when a split has no planned size (outcomes per arm).
DEFAULT_TUNING_PER_ARM = 1000
METHOD = "mSPRT (normal mixture), always valid"


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float in (0, 0.5], or a clear error."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not 0 < alpha <= 0.5:
        raise InvalidRequest(f"'alpha' must be a number above 0 and at most 0.5, not {alpha!r}")
    return float(alpha)


def mixture_rho2(alpha: float, tuned_per_arm: int) -> float:
    """ρ² of the normal mixture whose boundary is tightest after ``tuned_per_arm`` outcomes.

    Howard et al. (2021), section 3.5: ``ρ² = (−2 log α + log(1 − 2 log α)) / n``.
    """
    check_alpha(alpha)
    if not isinstance(tuned_per_arm, int) or tuned_per_arm < 1:
        raise InvalidRequest(f"the tuning size must be a positive number of outcomes, not "
                             f"{tuned_per_arm!r}")
    log_alpha = math.log(alpha)
    return (-2 * log_alpha + math.log(1 - 2 * log_alpha)) / tuned_per_arm


def log_likelihood_ratio(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    """log Λ of the mSPRT for a standardised difference ``z = θ̂/√V`` and ``r = τ²/V``."""
    return -0.5 * np.log1p(r) + r / (1 + r) * np.square(z) / 2


def radius(variance: np.ndarray, r: np.ndarray, alpha: float) -> np.ndarray:
    """Half-width of the confidence sequence at level ``1 − alpha`` (inverting the mSPRT)."""
    return np.sqrt(variance * (1 + r) / r * (2 * math.log(1 / alpha) + np.log1p(r)))


def sequence(in_b: np.ndarray, values: np.ndarray, *, binary: bool, alpha: float = 0.05,
             tuned_per_arm: int = DEFAULT_TUNING_PER_ARM, interval_alpha: float | None = None
             ) -> dict[str, np.ndarray]:
    """The mSPRT after every outcome, in arrival order, along the last axis.

    ``in_b`` says which outcome went to arm b (else a), ``values`` what it was. Returns
    arrays of the same shape: ``n_a``, ``n_b``, ``diff`` (mean b − mean a), ``p_value``
    (always valid: the running minimum), ``low`` and ``high`` (the confidence sequence at
    ``interval_alpha``, default ``alpha``, intersected over time; ±inf before it starts).
    """
    rho2 = mixture_rho2(alpha, tuned_per_arm)
    level = check_alpha(alpha if interval_alpha is None else interval_alpha)
    n_a, n_b, mean_a, mean_b, var_a, var_b = _running_moments(in_b, values, binary,
                                                               smoothed=True)
    diff = mean_b - mean_a
    started = (n_a >= MIN_PER_ARM) & (n_b >= MIN_PER_ARM)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.maximum(var_a / n_a + var_b / n_b,
                       _pooled_variance(n_a, n_b, mean_a, mean_b, var_a, var_b, binary)
                       * (1 / n_a + 1 / n_b))
        r = rho2 * 2 / (1 / n_a + 1 / n_b)  # n_eff · ρ²
        z = np.where(v > 0, diff / np.sqrt(v), np.where(diff == 0, 0.0, np.inf))
        p_now = np.where(started, np.minimum(1.0, np.exp(-log_likelihood_ratio(z, r))), 1.0)
        half = np.where(started, radius(v, r, level), np.inf)
    p_value = np.minimum.accumulate(p_now, axis=-1)
    low = np.maximum.accumulate(np.where(started, diff - half, -np.inf), axis=-1)
    high = np.minimum.accumulate(np.where(started, diff + half, np.inf), axis=-1)
    # An empty intersection means the plug-in variance misled an earlier look: fall back
    # to the interval of now rather than report an impossible one.
    crossed = low > high
    low = np.where(crossed, diff - half, low)
    high = np.where(crossed, diff + half, high)
    return {"n_a": n_a, "n_b": n_b, "diff": diff, "p_value": p_value, "low": low,
            "high": high}


def fixed_horizon_p(in_b: np.ndarray, values: np.ndarray, *, binary: bool) -> np.ndarray:
    """What a fixed-horizon test says after every outcome: the p-values that peeking sees.

    The normal approximation of the tests the live page shows at the planned size (a
    pooled two-proportion z-test for pass/fail outcomes, Welch's z otherwise), from
    :data:`MIN_PER_ARM` outcomes per arm like the sequential test. Only for comparison
    (``bench/bench_sequential.py``): each value is valid alone, their minimum is not.
    """
    from scipy.special import ndtr

    n_a, n_b, mean_a, mean_b, var_a, var_b = _running_moments(in_b, values, binary,
                                                               smoothed=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        if binary:
            pooled = (mean_a * n_a + mean_b * n_b) / (n_a + n_b)
            v = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
        else:
            v = var_a / n_a + var_b / n_b
        diff = mean_b - mean_a
        z = np.where(v > 0, diff / np.sqrt(v), np.where(diff == 0, 0.0, np.inf))
    started = (n_a >= MIN_PER_ARM) & (n_b >= MIN_PER_ARM)
    return np.where(started, 2 * ndtr(-np.abs(z)), 1.0)


def _pooled_variance(n_a, n_b, mean_a, mean_b, var_a, var_b, binary: bool) -> np.ndarray:
    """The variance of one outcome with both arms pooled (what it is when they agree)."""
    n = n_a + n_b
    if binary:
        rate = (mean_a * n_a + mean_b * n_b + 1) / (n + 2)
        return rate * (1 - rate)
    mean = (mean_a * n_a + mean_b * n_b) / n
    return (var_a * (n_a - 1) + var_b * (n_b - 1) + n_a * np.square(mean_a - mean)
            + n_b * np.square(mean_b - mean)) / (n - 1)


def _running_moments(in_b: np.ndarray, values: np.ndarray, binary: bool, *, smoothed: bool
                     ) -> tuple[np.ndarray, ...]:
    """Arm sizes, means and variances after every outcome: ``n_a, n_b, mean_a, mean_b,
    var_a, var_b`` (pass/fail variances from ``(s+1)/(n+2)`` when ``smoothed``)."""
    in_b = np.asarray(in_b, bool)
    x = np.asarray(values, float)
    # Centre on the overall mean: the running sums of squares then lose no precision.
    x = x - x.mean(axis=-1, keepdims=True) if x.shape[-1] and not binary else x
    counts, means, variances = [], [], []
    for member in (~in_b, in_b):
        own = x * member
        n = np.cumsum(member, axis=-1)
        total = np.cumsum(own, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / n
            if binary:
                rate = (total + 1) / (n + 2) if smoothed else mean
                var = rate * (1 - rate)
            else:
                squares = np.cumsum(own * x, axis=-1)
                var = np.maximum(squares - n * np.square(mean), 0) / (n - 1)
        counts.append(n)
        means.append(mean)
        variances.append(var)
    return (*counts, *means, *variances)


def always_valid_test(order: list[bool], values: list[float], *, binary: bool,
                      alpha: float = 0.05, tuned_per_arm: int = DEFAULT_TUNING_PER_ARM,
                      interval_alpha: float | None = None) -> dict[str, Any]:
    """The mSPRT as it stands after the last outcome: p-value, interval, arm sizes.

    ``order[i]`` is whether outcome ``i`` (in arrival order) went to arm b.
    """
    if not values:
        return {"diff": None, "low": None, "high": None, "p_value": 1.0,
                "n": [0, 0], "started": False}
    run = sequence(np.asarray(order), np.asarray(values), binary=binary, alpha=alpha,
                   tuned_per_arm=tuned_per_arm, interval_alpha=interval_alpha)
    n_a, n_b = int(run["n_a"][-1]), int(run["n_b"][-1])
    diff = float(run["diff"][-1]) if n_a and n_b else None
    low, high = float(run["low"][-1]), float(run["high"][-1])
    return {"diff": diff, "low": low if math.isfinite(low) else None,
            "high": high if math.isfinite(high) else None,
            "p_value": float(run["p_value"][-1]), "n": [n_a, n_b],
            "started": bool(n_a >= MIN_PER_ARM and n_b >= MIN_PER_ARM)}

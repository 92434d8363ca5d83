"""How many outcomes a split needs: the fixed-horizon sample size per arm, planned ahead.

The usual normal approximation for a two-sided test of two independent samples (the one
statsmodels' ``NormalIndPower`` and most A/B calculators use):

- pass/fail outcomes, baseline rate ``p₁`` and ``p₂ = p₁ + mde``::

      n = (z₁₋α/2 · √(2 p̄ q̄) + z₁₋β · √(p₁q₁ + p₂q₂))² / mde²,  p̄ = (p₁ + p₂)/2

- continuous outcomes with standard deviation ``sd``::

      n = 2 (z₁₋α/2 + z₁₋β)² sd² / mde²

With more than two arms every pair is compared, so alpha is divided by the number of
pairs (Bonferroni: the plan stays valid under the Holm correction the report applies).
The fixed-horizon p-values of a split are shown once each arm reaches the planned size;
the sequential figures are valid at any size and are tuned to be tightest there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidRequest
from .sequential import check_alpha

MAX_PER_ARM = 10**9
MAX_ARMS = 20


def check_per_arm(value: Any) -> int:
    """A planned number of outcomes per arm, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_ARM:
        raise InvalidRequest(f"the planned size must be a whole number of outcomes per arm "
                             f"from 1 to {MAX_PER_ARM}, not {value!r}")
    return value


def sample_size(*, mde: float, baseline: float | None = None, sd: float | None = None,
                alpha: float = 0.05, power: float = 0.8, arms: int = 2) -> dict[str, Any]:
    """Outcomes needed per arm to detect a difference ``mde`` with the given power.

    Give ``baseline`` (a rate, for pass/fail outcomes) or ``sd`` (for continuous ones).
    """
    from scipy.stats import norm

    alpha, power, arms, mde = _checked(alpha, power, arms, mde)
    if (baseline is None) == (sd is None):
        raise InvalidRequest("give either a baseline rate (pass/fail outcomes) or a standard "
                             "deviation (continuous outcomes)")
    pairs = arms * (arms - 1) // 2
    z_alpha, z_power = norm.ppf(1 - alpha / pairs / 2), norm.ppf(power)
    with np.errstate(all="ignore"):  # numpy floats: an absurd input overflows to inf, checked
        n = _per_arm(np.float64(mde), baseline, sd, z_alpha, z_power)
    if not n <= MAX_PER_ARM:  # NaN and overflow included
        raise InvalidRequest(f"that effect needs {n:.3g} outcomes per arm, more than "
                             f"{MAX_PER_ARM}: plan for a larger minimum detectable effect")
    per_arm = max(1, math.ceil(n - 1e-9))
    return {"per_arm": per_arm, "total": per_arm * arms, "alpha": alpha, "power": power,
            "mde": mde, "baseline": baseline, "sd": sd, "arms": arms,
            "method": "normal approximation, two-sided"
                      + (f", alpha/{pairs} for {pairs} pairs" if pairs > 1 else "")}


def _per_arm(mde: np.float64, baseline: Any, sd: Any, z_alpha: float, z_power: float
             ) -> float:
    if baseline is not None:
        p1 = _number(baseline, "baseline")
        p2 = p1 + mde
        if not (0 < p1 < 1 and 0 < p2 < 1):
            raise InvalidRequest(f"the baseline rate and baseline + mde must lie between 0 "
                                 f"and 1 (got {p1:g} and {p2:g})")
        mean = (p1 + p2) / 2
        return float((z_alpha * math.sqrt(2 * mean * (1 - mean))
                      + z_power * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / mde**2)
    else:
        spread = _number(sd, "sd")
        if spread <= 0:
            raise InvalidRequest(f"'sd' must be a standard deviation above 0, not {spread:g}")
        return float(2 * (z_alpha + z_power) ** 2 * (np.float64(spread) / mde) ** 2)


def _checked(alpha: Any, power: Any, arms: Any, mde: Any) -> tuple[float, float, int, float]:
    alpha = check_alpha(alpha)
    power = _number(power, "power")
    if not 0.5 <= power < 1:
        raise InvalidRequest(f"'power' must be at least 0.5 and below 1, not {power:g}")
    if isinstance(arms, bool) or not isinstance(arms, int) or not 2 <= arms <= MAX_ARMS:
        raise InvalidRequest(f"'arms' must be a whole number from 2 to {MAX_ARMS}, "
                             f"not {arms!r}")
    mde = _number(mde, "mde")
    if mde == 0:
        raise InvalidRequest("'mde' (the minimum detectable effect) must not be 0")
    return alpha, power, arms, mde


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a finite number, not {value!r}")
    return float(value)


PLAN_FIELDS = {"per_arm", "mde", "baseline", "sd", "alpha", "power"}
AUTO_STOPS = ("promote", "rollback")
STOP_FIELDS = {"auto_stop", "stop_metric"}


def plan_from(spec: Any, arms: int = 2) -> dict[str, Any]:
    """A split's plan from what its maker gave: ``per_arm`` as such, or the planner's inputs.

    ``{"per_arm": 4000}`` (with an optional ``alpha``) is taken as it is;
    ``{"mde": 0.02, "baseline": 0.1}`` (or ``sd``, with optional ``alpha`` and ``power``)
    is worked out with :func:`sample_size` for ``arms`` arms. ``auto_stop`` (promote or
    rollback) with an optional ``stop_metric`` makes the split end itself
    (:mod:`.auto_stop`).
    """
    if not isinstance(spec, dict) or not spec:
        raise InvalidRequest("a plan is {'per_arm': N} or the planner's inputs, e.g. "
                             "{'mde': 0.02, 'baseline': 0.1, 'power': 0.8}")
    stop = _auto_stop(spec)
    spec = {k: v for k, v in spec.items() if k not in STOP_FIELDS}
    return {**_plan(spec, arms), **stop}


def _auto_stop(spec: dict[str, Any]) -> dict[str, Any]:
    """The plan's automatic stop: ``auto_stop`` (promote or rollback, or none) and the
    ``stop_metric`` whose always-valid test decides (default ``success``)."""
    mode, metric = spec.get("auto_stop"), spec.get("stop_metric")
    if mode is None:
        if metric is not None:
            raise InvalidRequest("'stop_metric' goes with 'auto_stop' (promote or rollback)")
        return {"auto_stop": None, "stop_metric": None}
    if mode not in AUTO_STOPS:
        raise InvalidRequest(f"'auto_stop' must be one of {', '.join(AUTO_STOPS)}, not "
                             f"{str(mode)[:40]!r}")
    metric = "success" if metric is None else metric
    if not isinstance(metric, str) or not metric or len(metric) > 100:
        raise InvalidRequest("'stop_metric' must be a short outcome metric name, e.g. "
                             "'success'")
    return {"auto_stop": mode, "stop_metric": metric}


def _plan(spec: dict[str, Any], arms: int) -> dict[str, Any]:
    if not spec:
        raise InvalidRequest("an automatic stop goes with a plan: give 'per_arm', or 'mde' "
                             "with 'baseline' or 'sd'")
    unknown = sorted(set(spec) - PLAN_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown plan field '{unknown[0]}' (fields: "
                             f"{', '.join(sorted(PLAN_FIELDS | STOP_FIELDS))})")
    alpha = check_alpha(spec.get("alpha", 0.05))
    if "per_arm" in spec:
        extra = sorted(set(spec) - {"per_arm", "alpha"})
        if extra:
            raise InvalidRequest(f"give 'per_arm' or the planner's inputs, not both "
                                 f"('{extra[0]}' as well)")
        return {"per_arm": check_per_arm(spec["per_arm"]), "alpha": alpha, "power": None,
                "mde": None, "baseline": None, "sd": None}
    if "mde" not in spec:
        raise InvalidRequest("a plan needs 'per_arm', or 'mde' with 'baseline' or 'sd'")
    planned = sample_size(mde=spec["mde"], baseline=spec.get("baseline"), sd=spec.get("sd"),
                          alpha=alpha, power=spec.get("power", 0.8), arms=arms)
    return {key: planned[key] for key in ("per_arm", "alpha", "power", "mde", "baseline",
                                          "sd")}

"""Online A/B: outcomes posted back for split labels, and live statistics per arm.

A label split (``Registry.set_split``) sends each caller key to one version; the
application reports what happened (a thumbs-up, a conversion, a latency) with the same
key, and the outcome is recorded against the version that key was assigned. Arms are
independent samples (different callers).

People watch live statistics every day, so the comparisons shown are always valid
(:mod:`.sequential`: an mSPRT p-value and confidence sequence per pair of arms, Holm over
the pairs), whenever they are looked at. The fixed-horizon tests (Fisher's exact test for
pass/fail outcomes, Welch's t-test otherwise, each with a bootstrap interval) are valid
only at a size fixed in advance: they are computed once every arm has the split's planned
size (``ab_plan``, set with the split; :mod:`.planning` works it out) and hidden before,
with the reason.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..errors import InvalidRequest
from ..model.outcomes import MAX_OUTCOME, outcome_value, usable_outcome
from ..storage.sql import OnDatabase, writing
from ..storage.tables import T_OUTCOME, T_PLAN
from . import sequential, stats
from .sequential import check_alpha


class Outcomes(OnDatabase):
    """Outcomes in the registry's SQL database (not derived from Git; reindex keeps them)."""

    def __init__(self, registry: Any):
        self._source = registry  # a Registry (or, in the core, its engine)

    def record(self, registry, ref: str, key: str, value: Any, metric: str = "success",
               kind: str = "prompt") -> dict[str, Any]:
        """Record an outcome for ``key`` against the version the split assigns it."""
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InvalidRequest("'key' must be the caller key (1 to 200 characters) used "
                                 "to resolve the prompt")
        number = outcome_value(value)
        if not isinstance(metric, str) or not metric or len(metric) > 100:
            raise InvalidRequest("'metric' must be a short name, e.g. 'success'")
        parsed_ref = registry.resolve_for(ref, key, kind)
        label = ref.split("@", 1)[1] if "@" in ref else None
        if not label or not registry.splits(parsed_ref.name, kind).get(label):
            raise InvalidRequest(f"'{ref}' is not a label with a traffic split; set one with "
                                 "'promptrev label split'")
        with writing(self.engine) as conn:
            conn.execute(T_OUTCOME.insert().values(
                kind=parsed_ref.kind, name=parsed_ref.name, label=label,
                version=parsed_ref.number, key=key, metric=metric, value=number,
                created=int(time.time())))
        return {"name": parsed_ref.name, "label": label, "version": parsed_ref.number,
                "metric": metric, "value": number}

    def set_plan(self, name: str, label: str, plan: dict[str, Any],
                 kind: str = "prompt") -> dict[str, Any]:
        """Store the planned size of ``label``'s experiment (a :func:`planning.plan_from`)."""
        row = {**plan, "kind": kind, "name": name, "label": label,
               "created": int(time.time())}
        with writing(self.engine) as conn:
            conn.execute(T_PLAN.delete().where(*_plan_of(kind, name, label)))
            conn.execute(T_PLAN.insert().values(**row))
        return self.plan(name, label, kind)

    def plan(self, name: str, label: str, kind: str = "prompt") -> dict[str, Any] | None:
        """The planned size of ``label``'s experiment, or ``None`` when none was set."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*(T_PLAN.c[c] for c in _PLAN_COLUMNS)).where(
                *_plan_of(kind, name, label))).first()
        return dict(row._mapping) if row else None

    def end_plan(self, name: str, label: str, kind: str = "prompt") -> None:
        """Forget the plan of ``label``'s experiment (its split ended)."""
        with writing(self.engine) as conn:
            conn.execute(T_PLAN.delete().where(*_plan_of(kind, name, label)))

    def ordered(self, name: str, label: str, metric: str, kind: str = "prompt"
                ) -> list[tuple[int, float]]:
        """``(version, value)`` of ``label``'s outcomes on ``metric``, in arrival order."""
        with self.engine.connect() as conn:
            return [(v, float(x)) for v, x in conn.execute(
                sa.select(T_OUTCOME.c.version, T_OUTCOME.c.value).where(
                    T_OUTCOME.c.kind == kind, T_OUTCOME.c.name == name,
                    T_OUTCOME.c.label == label, T_OUTCOME.c.metric == metric)
                .order_by(T_OUTCOME.c.id))]

    def auto_stop(self, registry, policy, name: str, label: str, kind: str = "prompt"
                  ) -> dict[str, Any] | None:
        """End or trim ``label``'s split if its plan asks and the always-valid test has
        decided (:mod:`.auto_stop`); what was done, or None."""
        from .auto_stop import apply

        return apply(registry, policy, self, name, label, kind)

    def report(self, registry, name: str, label: str, kind: str = "prompt",
               alpha: float | None = None) -> dict[str, Any]:
        """Live statistics per arm and metric, with the split as it stands now.

        Comparisons are always valid (:mod:`.sequential`); the fixed-horizon test is shown
        only once every arm has the planned number of outcomes. ``alpha`` defaults to the
        plan's, else 0.05.
        """
        arms = registry.splits(name, kind).get(label, {})
        plan = self.plan(name, label, kind)
        alpha = check_alpha(alpha if alpha is not None else plan["alpha"] if plan else 0.05)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_OUTCOME.c.metric, T_OUTCOME.c.version,
                                          T_OUTCOME.c.value).where(
                T_OUTCOME.c.kind == kind, T_OUTCOME.c.name == name,
                T_OUTCOME.c.label == label).order_by(T_OUTCOME.c.id)).all()
        values: dict[str, list[tuple[int, float]]] = {}
        left_out: dict[str, int] = {}
        for metric, version, value in rows:
            if usable_outcome(value):
                values.setdefault(metric, []).append((version, float(value)))
            else:
                left_out[metric] = left_out.get(metric, 0) + 1
        metrics = [_metric_report(metric, values.get(metric, []), alpha, plan,
                                  left_out.get(metric, 0))
                   for metric in sorted(values.keys() | left_out.keys())]
        return {"name": name, "label": label, "kind": kind,
                "split": {str(v): w for v, w in sorted(arms.items())}, "plan": plan,
                "alpha": alpha, "method": sequential.METHOD, "metrics": metrics,
                "verdict": [line for m in metrics for line in m["verdict"]]}


def independent_test(a: list[float], b: list[float], *, confidence: float = 0.95,
                     n_boot: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Compare two independent samples: difference of means (b − a), interval, p-value."""
    from scipy import stats as sps

    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or len(y) < 2:
        return {"diff": math.nan, "low": math.nan, "high": math.nan, "p_value": 1.0,
                "test": "too few outcomes", "n": [len(x), len(y)]}
    binary = stats.is_binary(list(x)) and stats.is_binary(list(y))
    if binary:
        table = [[int(x.sum()), int(len(x) - x.sum())], [int(y.sum()), int(len(y) - y.sum())]]
        p_value, test = float(sps.fisher_exact(table).pvalue), "fisher-exact"
    elif np.ptp(x) == 0 and np.ptp(y) == 0:
        p_value, test = (1.0 if x[0] == y[0] else 0.0), "constant"
    else:
        p_value, test = float(sps.ttest_ind(x, y, equal_var=False).pvalue), "welch-t"
    rng = np.random.default_rng(seed)
    boot = (rng.choice(y, (n_boot, len(y))).mean(axis=1)
            - rng.choice(x, (n_boot, len(x))).mean(axis=1))
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    return {"diff": float(y.mean() - x.mean()), "low": float(low), "high": float(high),
            "p_value": p_value, "test": test, "n": [len(x), len(y)]}


_PLAN_COLUMNS = ("per_arm", "alpha", "power", "mde", "baseline", "sd", "auto_stop",
                 "stop_metric", "created")


def _plan_of(kind: str, name: str, label: str) -> tuple:
    return T_PLAN.c.kind == kind, T_PLAN.c.name == name, T_PLAN.c.label == label


def _metric_report(metric: str, ordered: list[tuple[int, float]], alpha: float,
                   plan: dict[str, Any] | None, left_out: int = 0) -> dict[str, Any]:
    by_version: dict[int, list[float]] = {}
    for version, value in ordered:
        by_version.setdefault(version, []).append(value)
    versions = sorted(by_version)
    arms = {f"v{v}": stats.mean_ci(by_version[v], n_boot=2000).to_dict() for v in versions}
    pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1:]]
    binary = bool(ordered) and stats.is_binary([value for _, value in ordered])
    tuned = plan["per_arm"] if plan else sequential.DEFAULT_TUNING_PER_ARM
    level = alpha / max(len(pairs), 1)  # Bonferroni intervals beside Holm p-values
    tests = [_pair_sequence(ordered, a, b, binary, alpha, tuned, level) for a, b in pairs]
    adjusted = stats.adjust([t["p_value"] for t in tests], "holm")
    fixed = _fixed_horizon(by_version, pairs, plan)
    comparisons, verdict = [], []
    for (a, b), test, p_adj, shown in zip(pairs, tests, adjusted, fixed["tests"], strict=True):
        test["p_adjusted"] = p_adj
        test["significant"] = significant = bool(
            p_adj < alpha and test["low"] is not None
            and not (test["low"] <= 0 <= test["high"]))
        comparisons.append({
            "a": f"v{a}", "b": f"v{b}", "diff": test["diff"], "n": test["n"],
            "test": "fisher-exact" if binary else "welch-t",
            "low": None, "high": None, "p_value": None, "p_adjusted": None,
            **(shown or {}), "significant": significant, "sequential": test,
            "fixed_horizon": {"shown": shown is not None, "reason": fixed["reason"],
                              "significant": shown["significant"] if shown else None}})
        verdict.append(_sequential_line(metric, a, b, test, 1 - level))
        if shown:
            verdict.append(_fixed_line(metric, a, b, shown, plan["per_arm"]))
    correction = (f"Holm over {len(pairs)} comparisons, intervals at {1 - level:.4g} each "
                  "(Bonferroni)" if len(pairs) > 1 else "none (one comparison)")
    if left_out:
        verdict.append(f"{metric}: {left_out} stored outcome{'s' if left_out > 1 else ''} "
                       f"outside ±{MAX_OUTCOME:g} or not finite left out (recorded by an "
                       "older version)")
    return {"metric": metric, "arms": arms, "comparisons": comparisons,
            "correction": correction, "method": sequential.METHOD,
            "fixed_horizon": {"shown": fixed["shown"], "reason": fixed["reason"]},
            "verdict": verdict, "left_out": left_out}


def _pair_sequence(ordered: list[tuple[int, float]], a: int, b: int, binary: bool,
                   alpha: float, tuned: int, level: float) -> dict[str, Any]:
    """The always-valid test of ``b`` against ``a`` over their outcomes in arrival order."""
    pair = [(version == b, value) for version, value in ordered if version in (a, b)]
    test = sequential.always_valid_test([in_b for in_b, _ in pair],
                                        [value for _, value in pair], binary=binary,
                                        alpha=alpha, tuned_per_arm=tuned,
                                        interval_alpha=level)
    return {"method": sequential.METHOD, **test, "confidence": 1 - level,
            "tuned_per_arm": tuned}


def _fixed_horizon(by_version: dict[int, list[float]], pairs: list[tuple[int, int]],
                   plan: dict[str, Any] | None) -> dict[str, Any]:
    """The fixed-horizon tests, only once every arm has its planned size (else why not)."""
    smallest = min((len(v) for v in by_version.values()), default=0)
    if not pairs:
        return {"shown": False, "reason": None, "tests": []}
    if plan is None:
        reason = ("hidden: this split has no planned size, and a fixed-horizon p-value "
                  "looked at before one is reached overstates the evidence (set a plan "
                  "with the split)")
    elif smallest < plan["per_arm"]:
        reason = (f"hidden until every arm has the planned {plan['per_arm']} outcomes "
                  f"(smallest arm: {smallest}): looked at sooner, a fixed-horizon p-value "
                  "overstates the evidence")
    else:
        tests = [independent_test(by_version[a], by_version[b]) for a, b in pairs]
        adjusted = stats.adjust([t["p_value"] for t in tests], "holm")
        shown = [{**t, "p_adjusted": p, "significant": bool(
            p < plan["alpha"] and not (t["low"] <= 0 <= t["high"]))}
            for t, p in zip(tests, adjusted, strict=True)]
        return {"shown": True, "reason": None, "tests": shown}
    return {"shown": False, "reason": reason, "tests": [None] * len(pairs)}


def _sequential_line(metric: str, a: int, b: int, test: dict[str, Any],
                     confidence: float) -> str:
    n_a, n_b = test["n"]
    if not test["started"]:
        return (f"{metric}: v{a} and v{b} are compared once each has "
                f"{sequential.MIN_PER_ARM} outcomes (n={n_a} and {n_b})")
    if test["significant"]:
        better, worse = (f"v{b}", f"v{a}") if test["diff"] > 0 else (f"v{a}", f"v{b}")
        return (f"{metric}: {better} is higher than {worse} by {abs(test['diff']):.3g} "
                f"(always-valid {confidence:.0%} CI {test['low']:+.3g} to "
                f"{test['high']:+.3g}, mSPRT p={test['p_adjusted']:.3g})")
    return (f"{metric}: no significant difference between v{a} and v{b} yet (always-valid "
            f"p={test['p_adjusted']:.3g}, n={n_a} and {n_b}; safe to keep watching)")


def _fixed_line(metric: str, a: int, b: int, test: dict[str, Any], per_arm: int) -> str:
    outcome = "significant" if test["significant"] else "not significant"
    return (f"{metric}: fixed-horizon at the planned {per_arm} per arm, v{b} − v{a} = "
            f"{test['diff']:+.3g} (95% CI {test['low']:+.3g} to {test['high']:+.3g}, "
            f"{test['test']} p={test['p_adjusted']:.3g}): {outcome}")

"""Online A/B: outcomes posted back for split labels, and live statistics per arm.

A label split (``Registry.set_split``) sends each caller key to one version; the
application reports what happened (a thumbs-up, a conversion, a latency) with the same
key, and the outcome is recorded against the version that key was assigned. Arms are
independent samples (different callers), so they are compared with tests for
independent samples: Fisher's exact test for pass/fail outcomes, Welch's t-test
otherwise, each with a bootstrap interval for the difference, Holm-corrected when a
split has more than two arms.
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
from ..storage.tables import T_OUTCOME
from . import stats


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

    def report(self, registry, name: str, label: str, kind: str = "prompt",
               alpha: float = 0.05) -> dict[str, Any]:
        """Live statistics per arm and metric, with the split as it stands now."""
        arms = registry.splits(name, kind).get(label, {})
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T_OUTCOME.c.metric, T_OUTCOME.c.version,
                                          T_OUTCOME.c.value).where(
                T_OUTCOME.c.kind == kind, T_OUTCOME.c.name == name,
                T_OUTCOME.c.label == label)).all()
        values: dict[str, dict[int, list[float]]] = {}
        left_out: dict[str, int] = {}
        for metric, version, value in rows:
            if usable_outcome(value):
                values.setdefault(metric, {}).setdefault(version, []).append(float(value))
            else:
                left_out[metric] = left_out.get(metric, 0) + 1
        metrics = [_metric_report(metric, values.get(metric, {}), alpha, left_out.get(metric, 0))
                   for metric in sorted(values.keys() | left_out.keys())]
        return {"name": name, "label": label, "kind": kind,
                "split": {str(v): w for v, w in sorted(arms.items())}, "metrics": metrics,
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


def _metric_report(metric: str, by_version: dict[int, list[float]], alpha: float,
                   left_out: int = 0) -> dict[str, Any]:
    versions = sorted(by_version)
    arms = {f"v{v}": stats.mean_ci(by_version[v], n_boot=2000).to_dict() for v in versions}
    pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1:]]
    tests = [independent_test(by_version[a], by_version[b]) for a, b in pairs]
    adjusted = stats.adjust([t["p_value"] for t in tests], "holm")
    comparisons, verdict = [], []
    for (a, b), test, p_adj in zip(pairs, tests, adjusted, strict=True):
        significant = p_adj < alpha and not (test["low"] <= 0 <= test["high"])
        comparisons.append({"a": f"v{a}", "b": f"v{b}", **test, "p_adjusted": p_adj,
                            "significant": significant})
        if significant:
            better, worse = (f"v{b}", f"v{a}") if test["diff"] > 0 else (f"v{a}", f"v{b}")
            verdict.append(f"{metric}: {better} is higher than {worse} by "
                           f"{abs(test['diff']):.3g} (95% CI {test['low']:+.3g} to "
                           f"{test['high']:+.3g}, {test['test']} p={p_adj:.3g})")
        else:
            verdict.append(f"{metric}: no significant difference between v{a} and v{b} "
                           f"(p={p_adj:.3g}, n={test['n'][0]} and {test['n'][1]})")
    correction = ("Holm-Bonferroni over " f"{len(pairs)} comparisons" if len(pairs) > 1
                  else "none (one comparison)")
    if left_out:
        verdict.append(f"{metric}: {left_out} stored outcome{'s' if left_out > 1 else ''} "
                       f"outside ±{MAX_OUTCOME:g} or not finite left out (recorded by an "
                       "older version)")
    return {"metric": metric, "arms": arms, "comparisons": comparisons,
            "correction": correction, "verdict": verdict, "left_out": left_out}

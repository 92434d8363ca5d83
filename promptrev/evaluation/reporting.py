"""The report of an evaluation run: statistics per metric, cost, break-even, verdict."""

from __future__ import annotations

from typing import Any

_OPERATIONS = (("latency_s", "latency (s)"), ("prompt_tokens", "input tokens"),
               ("completion_tokens", "output tokens"), ("cost", "cost per request"))


def build_report(registry, run: dict[str, Any], results: list[dict[str, Any]],
                 scorer_meta: dict[str, dict[str, bool]]) -> dict[str, Any]:
    """Everything the run page, ``eval show`` and ``--json`` print."""
    from . import stats

    spec = run["spec"]
    names = [v["name"] for v in spec["variants"]]
    n = run["cases"]
    rows: dict[str, list[dict | None]] = {v: [None] * n for v in names}
    for r in results:
        if r["variant"] in rows and r["case_index"] < n:
            rows[r["variant"]][r["case_index"]] = r
    alpha = float(spec.get("alpha") or 0.05)
    baseline = spec.get("baseline")
    metrics = []
    for metric, meta in scorer_meta.items():
        scores = {v: [None if r is None else r["scores"].get(metric) for r in rows[v]]
                  for v in names}
        metrics.append(stats.compare(scores, metric=metric,
                                     higher_is_better=meta["higher_is_better"], alpha=alpha,
                                     baseline=baseline).to_dict())
    operations = {}
    for key, label in _OPERATIONS:
        operations[key] = {"label": label, "variants": {
            v: stats.mean_ci([r[key] for r in rows[v] if r is not None and r[key] is not None],
                             n_boot=2000).to_dict() for v in names}}
    costs = _costs(registry, spec, rows, names)
    verdict = [line for m in metrics for line in m["verdict"]]
    verdict += [c["text"] for c in costs["break_even"]]
    return {
        "run": run["id"], "name": run["name"], "dataset": spec["dataset"],
        "variants": spec["variants"], "cases": n, "alpha": alpha, "baseline": baseline,
        "scored": {v: sum(r is not None for r in rows[v]) for v in names},
        "errors": {v: sum(1 for r in rows[v] if r is not None and r["error"]) for v in names},
        "metrics": metrics, "operations": operations, "costs": costs, "verdict": verdict,
    }


def _costs(registry, spec: dict[str, Any], rows: dict[str, list], names: list[str]
           ) -> dict[str, Any]:
    """Cost per 1,000 requests, training cost of adapters, break-even against prompts."""
    from .costs import break_even_table, per_thousand, training_cost

    per_1k = {v: per_thousand([r["cost"] for r in rows[v] if r is not None]) for v in names}
    training = {v["name"]: training_cost(registry.adapter(v["adapter"]).card,
                                         spec.get("training_prices") or {})
                for v in spec["variants"] if v.get("adapter")}
    lines = []
    for name, row in break_even_table(per_1k, training).items():
        for other, count in row.items():
            if None in (per_1k[name], per_1k[other], training[name]):
                continue
            lines.append({"adapter_variant": name, "prompt_variant": other,
                          "requests": count, "text": _break_even_text(
                              name, other, count, per_1k, training[name])})
    return {"per_1k": per_1k, "training": training, "break_even": lines}


def _break_even_text(adapter: str, prompt: str, count: int | None, per_1k: dict,
                     training: float) -> str:
    head = (f"{adapter} costs {per_1k[adapter]:.4g} per 1,000 requests plus {training:.4g} "
            f"to train; {prompt} costs {per_1k[prompt]:.4g} per 1,000")
    if count is None:
        return head + f": {adapter} never becomes cheaper"
    return head + f": {adapter} is cheaper in total after {count:,} requests"

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
    units = shared_latency_units(rows, names, n)
    metrics = []
    for metric, meta in scorer_meta.items():
        scores = {v: [None if r is None else r["scores"].get(metric) for r in rows[v]]
                  for v in names}
        batched = bool(meta.get("batch_shared")) and units is not None
        if batched:
            scores = {v: unit_means(values, units) for v, values in scores.items()}
        report = stats.compare(scores, metric=metric, higher_is_better=meta["higher_is_better"],
                               alpha=alpha, baseline=baseline).to_dict()
        if batched:
            report["measured"] = _batch_note(metric, n, units)
            report["verdict"].insert(0, report["measured"]["note"])
        metrics.append(report)
    operations = {}
    for key, label in _OPERATIONS:
        operations[key] = {"label": label, "variants": {
            v: _operation(rows[v], key, units if key == "latency_s" else None) for v in names}}
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


def shared_latency_units(rows: dict[str, list], names: list[str], n: int
                         ) -> list[list[int]] | None:
    """The independent latency measurements of a run, as groups of case indices.

    A batched call gives every case of the batch the batch's wall time (the results share
    a ``latency_batch`` key), so those cases are one measurement, not several. Cases that
    share a batch in any variant are joined; each group is then a set of whole batches in
    every variant, measured apart from the other groups, and the groups pair across
    variants. None when every latency was measured alone (one call per case).
    """
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    shared = False
    for name in names:
        first: dict[str, int] = {}
        for index, row in enumerate(rows[name]):
            key = row.get("latency_batch") if row is not None else None
            if not key:
                continue
            if key in first:
                shared = True
                parent[root(index)] = root(first[key])
            else:
                first[key] = index
    if not shared:
        return None
    groups: dict[int, list[int]] = {}
    for index in range(n):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


def unit_means(values: list, units: list[list[int]]) -> list[float | None]:
    """The mean of each group's values (None where a group has none)."""
    out: list[float | None] = []
    for unit in units:
        present = [values[i] for i in unit if values[i] is not None]
        out.append(sum(present) / len(present) if present else None)
    return out


def _batch_note(metric: str, cases: int, units: list[list[int]]) -> dict[str, Any]:
    count = len(units)
    some = "one measurement" if count == 1 else f"{count} measurements"
    over = ("nothing can be compared from one" if count == 1 else
            f"means, intervals and tests are over those {count}")
    note = (f"{metric}: the {cases} cases were answered in batches, and every case of a batch "
            f"carries the batch's wall time, so they are {some} per variant, not {cases}: "
            f"{over} (run with batch_size: 1 to measure each case)")
    return {"unit": "batch", "units": len(units), "cases": cases, "note": note}


def _operation(rows: list, key: str, units: list[list[int]] | None) -> dict[str, Any]:
    """Mean per request with its interval; over batches where cases share a measurement."""
    from . import stats

    values = [None if r is None else r[key] for r in rows]
    if units is not None:
        values = unit_means(values, units)
    return stats.mean_ci([v for v in values if v is not None], n_boot=2000).to_dict()


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


def pair_break_even(report: dict[str, Any] | None, a: dict[str, Any], b: dict[str, Any]
                    ) -> dict[str, Any] | None:
    """What an adapter variant and a prompt-only variant cost against each other, for the
    diff of the two variants' configurations: the break-even the report computed, with the
    input tokens each sends per request (the long prompt the adapter replaces). None when
    the pair is not one adapter variant and one prompt-only variant, or the run has no
    report yet."""
    if report is None or bool(a.get("adapter")) == bool(b.get("adapter")):
        return None
    adapter, prompt = (a, b) if a.get("adapter") else (b, a)
    tokens = report["operations"]["prompt_tokens"]["variants"]
    out: dict[str, Any] = {
        "adapter_variant": adapter["name"], "prompt_variant": prompt["name"],
        "prompt_tokens": {v["name"]: (tokens.get(v["name"]) or {}).get("mean")
                          for v in (prompt, adapter)}}
    line = next((c for c in report["costs"]["break_even"]
                 if (c["adapter_variant"], c["prompt_variant"])
                 == (adapter["name"], prompt["name"])), None)
    if line is not None:
        return {**out, "requests": line["requests"], "text": line["text"]}
    training = report["costs"]["training"].get(adapter["name"])
    why = ("the run has no price for these variants (the spec's prices:)" if training is not
           None else "the adapter's training cost is unknown (its card records no training "
           "time or cost, or the spec has no training_prices:)")
    return {**out, "requests": None, "text": f"no break-even for {adapter['name']} against "
            f"{prompt['name']}: {why}"}

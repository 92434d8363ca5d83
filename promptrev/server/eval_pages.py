"""Evaluation pages: the run list, a run's page and a form that starts a run.

A run page shows the verdict on top, one interval chart per metric (server-rendered SVG:
no JavaScript, no CDN), the paired comparisons, cost and latency, the prompts of the
variants with their diff, and a per-case table with every variant's output side by side,
filterable to the cases where the variants disagree.

A run started from the form goes on the job queue (:mod:`promptrev.jobs`) and a
``promptrev worker`` executes it (``promptrev serve`` starts one of its own); the page
shows whether it waits for a worker, which worker holds it and when it last beat, and
refreshes itself until the run is done. A worker that dies leaves the run to another,
which resumes it from the stored results.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass
from typing import Any

import yaml
from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from promptrev.errors import InvalidRequest, PromptrevError
from promptrev.evaluation.runs import Evaluator, load_spec
from promptrev.evaluation.scorers import scorer_names
from promptrev.evaluation.store import EvalStore
from promptrev.model.datasets import parse_dataset
from promptrev.runner.execute import Runner

from .auth import state
from .errors import http_status
from .params import MAX_INT_FIELD, to_int
from .web import reader, writer

bp = Blueprint("eval", __name__, url_prefix="/eval")
log = logging.getLogger("promptrev.server")
PAGE_SIZE = 50
REFRESH_S = 3
# Scorers that measure what an answer took rather than what it said: they differ on every
# case, so they never count as a disagreement between variants.
_OPERATIONAL = {"latency", "input_tokens", "output_tokens", "cost"}


def _store() -> EvalStore:
    return EvalStore(state().registry)


def _runner(registry) -> Runner:
    return state().runner(registry)


# ---- the run list -------------------------------------------------------------------
@bp.get("/")
@reader
def runs(user) -> str:
    """Recent runs and fine-tuning jobs, newest first, with where each stands."""
    from promptrev.jobs import FinetuneJobs

    found = _store().runs()
    jobs = FinetuneJobs(state().registry).jobs()
    return render_template("eval_list.html", user=user, runs=found, jobs=jobs,
                           queue={("run", r["id"]): queue_state(r) for r in found}
                           | {("job", j["id"]): queue_state(j) for j in jobs})


# ---- one run ------------------------------------------------------------------------
@bp.get("/<int(max=2147483647):run_id>")  # beyond: 404, not a SQL overflow
@reader
def run(user, run_id: int) -> str:
    """Verdict, interval charts, comparisons, cost and latency, prompts, per-case table."""
    reg = state().registry
    store = EvalStore(reg)
    record = store.run(run_id)
    results = store.results(run_id)
    spec, report = record["spec"], record["report"]
    names = [v["name"] for v in spec["variants"]]
    values = _values_by_metric(results)
    quality = _quality_metrics(spec)
    charts = [interval_chart(m, binary=_is_binary(values.get(m["metric"], [])),
                             baseline=report.get("baseline"))
              for m in report["metrics"]] if report else []
    return render_template(
        "eval_run.html", user=user, run=record, spec=spec, names=names, report=report,
        charts=charts, done=len(results), total=record["cases"] * len(names),
        last=max((r["created"] for r in results), default=None),
        pass_fail={m for m in quality if _is_binary(values.get(m, []))},
        refresh=REFRESH_S if record["status"] == "running" else None,
        queue=queue_state(record),
        **_case_table(reg, spec["dataset"], case_rows(results, names, quality)),
        **_prompts(reg, spec["variants"], report))


def _case_table(reg, dataset: str, rows: list[CaseRow]) -> dict[str, Any]:
    """One page of cases (``?page=``), all or only disagreements (``?disagree=1``)."""
    disagree = request.args.get("disagree") == "1"
    shown = [r for r in rows if r.disagree] if disagree else rows
    pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
    page = min(max(_page_arg(), 1), pages)
    shown = shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    _attach_cases(reg, dataset, shown)
    return {"rows": shown, "total_rows": len(rows), "disagree": disagree, "page": page,
            "pages": pages, "disagreements": sum(r.disagree for r in rows)}


def _prompts(reg, variants: list[dict[str, Any]], report: dict[str, Any] | None
             ) -> dict[str, Any]:
    """The two variants whose configurations are compared, the diff of their prompt
    versions, and (an adapter against a prompt) the break-even the run computed."""
    from promptrev.evaluation.reporting import pair_break_even

    pair = _prompt_pair(variants)
    prompt_diff = None
    if pair and pair[0]["prompt"] != pair[1]["prompt"]:
        prompt_diff = reg.diff(pair[0]["prompt"], pair[1]["prompt"], kind="prompt")
    same_name = bool(pair) and _name(pair[0]["prompt"]) == _name(pair[1]["prompt"])
    return {"pair": pair, "prompt_diff": prompt_diff, "same_name": same_name,
            "pair_cost": pair_break_even(report, *pair) if pair else None}


def _page_arg() -> int:
    value = request.args.get("page", "1")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 7 else 1


def _quality_metrics(spec: dict[str, Any]) -> list[str]:
    """Metric names of the scorers that judge what an answer said (not what it took).

    A metric is named after its scorer's type, or the ``name`` option it was given.
    """
    out = []
    for raw in spec.get("scorers") or []:
        kind, options = (raw, {}) if isinstance(raw, str) else next(iter(raw.items()))
        if kind not in _OPERATIONAL:
            out.append(str((options or {}).get("name", kind)))
    return out


@dataclass
class CaseRow:
    """One case of a run: every variant's result, and whether the variants disagree."""

    index: int
    case_id: str
    results: dict[str, dict[str, Any]]
    disagree: bool
    vars: dict[str, Any] | None = None
    expected: Any = None


def case_rows(results: list[dict[str, Any]], names: list[str], metrics: list[str]
              ) -> list[CaseRow]:
    """Results grouped by case, in dataset order.

    Variants disagree on a case when their outputs (ignoring surrounding white space) or
    their scores on ``metrics`` differ; a case not every variant has reached yet does not
    count.
    """
    by_case: dict[int, CaseRow] = {}
    for r in results:
        row = by_case.setdefault(r["case_index"], CaseRow(r["case_index"], r["case_id"], {},
                                                          False))
        row.results[r["variant"]] = r
    for row in by_case.values():
        got = [row.results[n] for n in names if n in row.results]
        if len(got) == len(names) > 1:
            outputs = {r["output"].strip() for r in got}
            scores = {tuple(r["scores"].get(m) for m in metrics) for r in got}
            row.disagree = len(outputs) > 1 or len(scores) > 1
    return [by_case[i] for i in sorted(by_case)]


def _attach_cases(reg, dataset: str, rows: list[CaseRow]) -> None:
    """Give the shown rows their inputs and expected answers from the dataset version."""
    if not rows:
        return
    try:
        cases = parse_dataset(reg.get(dataset, "dataset").text, f"{dataset}.jsonl")
    except PromptrevError as exc:  # the table still shows outputs without the inputs
        log.warning("evaluation page: cannot read dataset %s: %s", dataset, exc)
        return
    by_id = {c.id: c for c in cases}
    for row in rows:
        case = by_id.get(row.case_id)
        if case is not None:
            row.vars, row.expected = case.vars, case.expected


def _values_by_metric(results: list[dict[str, Any]]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for r in results:
        for metric, value in r["scores"].items():
            if value is not None:
                values.setdefault(metric, []).append(value)
    return values


def _is_binary(values: list[float]) -> bool:
    return bool(values) and all(v in (0, 1) for v in values)


def _prompt_pair(variants: list[dict[str, Any]]) -> tuple[dict, dict] | None:
    """The two variants whose prompts are compared: ``?pa=&pb=``, else the first two."""
    by_name = {v["name"]: v for v in variants}
    a = by_name.get(request.args.get("pa", ""), variants[0])
    b = by_name.get(request.args.get("pb", ""))
    if b is None:
        b = next((v for v in variants if v["prompt"] != a["prompt"]),
                 next((v for v in variants if v is not a), None))
    return (a, b) if b is not None else None


def _name(ref: str) -> str:
    return ref.rpartition("@")[0] or ref


def _version(ref: str) -> int | None:
    number = ref.rpartition("@")[2]
    return int(number) if number.isascii() and number.isdigit() and len(number) < 10 \
        else None


# ---- interval charts ----------------------------------------------------------------
@dataclass
class ChartRow:
    """One variant's bar: the mean as a point, the interval as a line (x in SVG units)."""

    name: str
    y: float
    mean: float | None
    low: float | None
    high: float | None
    n: int
    x_mean: float | None = None
    x_low: float | None = None
    x_high: float | None = None
    best: bool = False


@dataclass
class Chart:
    """Geometry of one metric's interval chart, ready for ``_charts.html``."""

    metric: str
    binary: bool
    higher_is_better: bool
    rows: list[ChartRow]
    ticks: list[tuple[float, str]]
    width: int = 720
    height: int = 0
    left: int = 160
    right: int = 520
    top: int = 8
    baseline_x: float | None = None
    axis_y: float = 0.0


ROW_H = 26


def interval_chart(metric: dict[str, Any], *, binary: bool, baseline: str | None = None
                   ) -> Chart:
    """One row per variant on a common axis: 0..1 for pass/fail metrics, else the data."""
    variants = metric["variants"]
    numbers = [x for iv in variants.values() for x in (iv["low"], iv["mean"], iv["high"])
               if x is not None]
    lo, hi, ticks = axis(numbers, binary)
    chart = Chart(metric["metric"], binary, metric.get("higher_is_better", True), [], [])

    def x(value: float) -> float:
        return round(chart.left + (value - lo) / (hi - lo) * (chart.right - chart.left), 2)

    for i, (name, iv) in enumerate(variants.items()):
        row = ChartRow(name, chart.top + i * ROW_H + ROW_H / 2, iv["mean"], iv["low"],
                       iv["high"], iv["n"], best=name == metric.get("best"))
        if iv["mean"] is not None:
            row.x_mean = x(iv["mean"])
            row.x_low = x(iv["low"] if iv["low"] is not None else iv["mean"])
            row.x_high = x(iv["high"] if iv["high"] is not None else iv["mean"])
        chart.rows.append(row)
    chart.axis_y = chart.top + len(chart.rows) * ROW_H + 4
    chart.height = int(chart.axis_y + 24)
    chart.ticks = [(x(t), label) for t, label in ticks]
    base = variants.get(baseline) if baseline else None
    if base and base["mean"] is not None:
        chart.baseline_x = x(base["mean"])
    return chart


def axis(values: list[float], binary: bool) -> tuple[float, float, list[tuple[float, str]]]:
    """Axis bounds and labelled ticks: 0..1 for pass/fail, else nice steps over the data."""
    values = [v for v in map(_finite, values) if v is not None]
    unit = 0.0, 1.0, [(t, f"{t:g}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)]
    if binary or not values:
        return unit
    lo, hi = min(values), max(values)
    span = (hi - lo) or abs(hi) * 0.2 or 1.0
    low, high = lo - span * 0.1, hi + span * 0.1
    if not math.isfinite(high - low):  # values near the float limit: no axis can hold them
        return unit
    if lo >= 0 > low:  # never below zero for data that cannot be negative
        low = 0.0
    step = _nice_step((high - low) / 4)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    count = round((high - low) / step)
    ticks = [round(low + i * step, 12) for i in range(count + 1)]
    return low, high, [(t, f"{t:g}") for t in ticks]


def _nice_step(raw: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``raw``."""
    power = 10 ** math.floor(math.log10(raw))
    for nice in (1, 2, 5, 10):
        if raw <= nice * power * (1 + 1e-9):
            return nice * power
    return 10 * power


# ---- starting a run -----------------------------------------------------------------
@bp.route("/new", methods=["GET", "POST"])
@writer
def new(user) -> str | Response | tuple[str, int]:
    """A spec in a textarea; a valid one starts a run in the background."""
    state().policy.require(user, "write", "starting an evaluation")
    error = None
    if request.method == "POST":
        text = request.form.get("spec", "").replace("\r\n", "\n")
        try:
            spec = load_spec(text, "spec")
            reg = state().registry
            run_id = Evaluator(reg, _runner(reg), env=state().settings.env).start(
                spec, author=user.author)
        except PromptrevError as exc:
            error = exc
        else:
            launch(run_id)
            flash(f"started evaluation run {run_id}")
            return redirect(url_for("eval.run", run_id=run_id))
    else:
        text = _spec_of(request.args.get("from", "")) or example_spec(sorted(state().models))
    page = render_template(
        "eval_new.html", user=user, text=text, error=error, models=sorted(state().models),
        scorers=scorer_names(),
        datasets=[r.name for r in state().registry.list(kind="dataset")])
    if error is None:
        return page
    status = http_status(error)
    return page, status if status < 500 else 400


@bp.post("/release")
@writer
def release(user) -> Response:
    """Start the evaluation a label's release policy asks for before a move (the label
    confirmation page's button), then show the run; the move is confirmed once it is done."""
    from promptrev.errors import EvidenceRequired
    from promptrev.evaluation.gate import producible, queue_evidence
    from promptrev.model.names import validate_label

    name, kind = _form("name"), request.form.get("kind") or None
    label_name = validate_label(_form("label"))
    to = to_int(_form("to"), "to", 1, MAX_INT_FIELD)
    st, reg = state(), state().registry
    st.policy.require(user, "write", "starting an evaluation")
    try:
        st.policy.require_move(user, reg, name, label_name, to, kind=kind)
    except EvidenceRequired as refusal:
        if not producible(refusal):
            raise
    else:  # the evidence is there already: back to the confirmation
        return redirect(url_for("web.label", name=name, kind=kind, label=label_name, to=to))
    evaluator = Evaluator(reg, _runner(reg), env=st.settings.env)
    run, started = queue_evidence(evaluator, kind, name, label_name, to, author=user.author)
    if started:
        launch(run["id"])
    flash(f"{'started' if started else 'already running:'} evaluation run {run['id']} for "
          f"moving {name}@{label_name} to version {to}; confirm the move once it is done")
    return redirect(url_for("eval.run", run_id=run["id"]))


def _form(name: str) -> str:
    value = request.form.get(name, "").strip()
    if not value:
        raise InvalidRequest(f"form field '{name}' is required")
    return value


def _spec_of(run_id: str) -> str | None:
    """The spec of an earlier run as YAML (its references pinned to exact versions)."""
    if not (run_id.isascii() and run_id.isdigit()) or len(run_id) > 12:
        return None
    try:
        spec = dict(_store().run(int(run_id))["spec"])
    except PromptrevError:
        return None
    spec.pop("dataset_commit", None)
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def example_spec(models: list[str]) -> str:
    """A spec for the starter sentiment dataset, on the first configured model if any."""
    model = models[0] if models else None
    lines = ["name: sentiment, zero-shot vs few-shot", "dataset: sentiment", "limit: 20"]
    if model:
        lines.append(f"model: {model}")
    else:
        lines.append("# model: NAME        # a configured model; else each prompt's own model")
    lines += ["params:", "  max_tokens: 3", "variants:",
              "  - name: zero-shot", "    prompt: sentiment/zero-shot",
              "  - name: few-shot", "    prompt: sentiment/few-shot",
              "scorers:", "  - exact", "  - contains: {ignore_case: true}", "  - latency",
              "baseline: zero-shot", "alpha: 0.05"]
    if model:
        lines += ["prices:", f"  {model}: {{input_per_1k: 0.5, output_per_1k: 1.5}}"]
    return "\n".join(lines) + "\n"


def launch(run_id: int) -> None:
    """Put a started run on the job queue; a ``promptrev worker`` executes it."""
    state().jobs.evaluate(state().registry, run_id)


def queue_state(run: dict[str, Any]) -> dict[str, Any] | None:
    """Where a run stands on the job queue (queued, running on a worker, stalled)."""
    from promptrev.jobs import queue_state as state_of

    return state_of(run, state().settings.queue_lease, time.time())


# ---- template helpers ---------------------------------------------------------------
@bp.app_template_filter("num")
def _num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; a dash for none or not finite."""
    number = _finite(value)
    return "—" if number is None else f"{number:.{digits}g}"


@bp.app_template_filter("signed")
def _signed(value: Any, digits: int = 3) -> str:
    """A difference with its sign; a dash for none or not finite."""
    number = _finite(value)
    return "—" if number is None else f"{number:+.{digits}g}"


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (none, not a number, or too large for a float)."""
    if not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return number if math.isfinite(number) else None


@bp.app_template_filter("visible")
def _visible(text: str | None) -> str:
    """Model output with control characters made visible (``\\x01``), newlines kept."""
    if not text:
        return ""
    return "".join(c if c in "\n\t" or c.isprintable() else f"\\x{ord(c):02x}"
                   if ord(c) < 256 else f"\\u{ord(c):04x}" for c in text)


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"ref_name": _name, "ref_version": _version}

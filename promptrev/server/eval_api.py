"""Evaluation routes of the JSON API: a run's state, a release policy's evaluation queued
for a label move, and ``promptrev eval gate`` judged on the server.

They hang on the ``api`` blueprint (its token authentication, request parsing and one
error shape); :mod:`server.openapi` documents them. Runs are started with the server's
runner (configured models only) and put on the job queue, as ``/eval/new`` does
(:func:`server.eval_pages.launch`): a ``promptrev worker`` executes them, and another one
resumes a run whose worker died.
"""

from __future__ import annotations

from typing import Any

from flask import Response, g, url_for

from promptrev.errors import EvidenceRequired, InvalidRequest
from promptrev.evaluation import ci_gate
from promptrev.evaluation.gate import queue_evidence
from promptrev.evaluation.runs import Evaluator
from promptrev.evaluation.store import EvalStore

from .api import bp
from .auth import state
from .eval_pages import launch, queue_state
from .params import MAX_INT_FIELD, field, int_arg, json_body, json_response, registry, to_int

MAX_TEXT = 200_000  # a spec or policy file, as text


def evaluator(reg) -> Evaluator:
    """An evaluator with the server's runner (its models and trust rules)."""
    return Evaluator(reg, state().runner(reg), env=state().settings.env)


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """What a caller polling a run needs: its id, state, page and (once done) report."""
    return {"run": run["id"], "status": run["status"], "name": run["name"],
            "dataset": run["dataset"], "cases": run["cases"], "error": run.get("error"),
            "url": url_for("eval.run", run_id=run["id"], _external=True),
            "report": run["report"] if run["status"] == "done" else None,
            "queue": queue_state(run)}


def queue_release_evaluation(user, reg, kind: str | None, name: str, label: str,
                             target: int, refusal: EvidenceRequired) -> dict[str, Any]:
    """Start (or find going) the evaluation ``label``'s release policy asks for to move to
    ``target``, executed in the background; what a 202 answer says about it."""
    state().policy.require(user, "write", "starting an evaluation")
    run, started = queue_evidence(evaluator(reg), kind, name, label, target,
                                  author=user.author)
    if started:
        launch(run["id"])
    return {"name": name, "label": label, "version": target, "moved": False,
            "refused": refusal.to_dict()["error"],
            "evaluation": {**run_summary(run), "started": started},
            "next": "move again once the run is done: its evidence then clears the move"}


@bp.get("/evaluations/run")
def evaluation_run() -> Response:
    """One evaluation run: its state, its page, and its report once done."""
    run = EvalStore(registry()).run(int_arg("id", None, 1, MAX_INT_FIELD))
    return json_response(run_summary(run))


@bp.post("/evaluations/gate")
def evaluation_gate() -> Response:
    """``promptrev eval gate`` on the server: judge a spec's candidate against a label's
    holder. 200 with the verdict and the reports once a finished run of the identical
    spec exists; else 202 with the run started (or already going): post again to poll
    (with ``started_run``: the run the first answer started, so the report does not call
    it reused)."""
    state().policy.require(g.user, "write", "starting an evaluation")
    data = json_body()
    label = field(data, "baseline", str)
    setup = ci_gate.load_gate(_text(data, "spec"), "spec", label,
                              field(data, "candidate", str, None))
    policy = field(data, "policy", str, None)
    explicit = field(data, "rule", dict, None)
    if policy is not None and explicit is not None:
        raise InvalidRequest("give 'policy' (a release-policy file's text) or 'rule', not both")
    if explicit is not None and ("require" not in explicit or "metric" not in explicit):
        raise InvalidRequest("'rule' needs 'require' and 'metric' (and 'margin' for "
                             "non-inferior)")
    started_run = data.get("started_run")
    if started_run is not None:
        if not isinstance(started_run, int) or isinstance(started_run, bool):
            raise InvalidRequest("field 'started_run' must be an integer (a run id)")
        started_run = to_int(started_run, "started_run", 1, 2 ** 31 - 1)
    reg = registry()
    reg.resolve(f"{setup.name}@{label}", "prompt")  # a missing label, named as such
    rule, source = ci_gate.gate_rule(
        reg, setup, policy=(_text(data, "policy"), "policy") if policy is not None else None,
        explicit=explicit)
    ev = evaluator(reg)
    resolved, _ = ev.resolve(setup.spec)
    run = ci_gate.reusable_run(ev.store, resolved)
    if run is None:
        run, started = ci_gate.pending_run(ev, setup.spec, resolved, author=g.user.author)
        if started:
            launch(run["id"])
        return json_response({**run_summary(run), "started": started}, 202)
    evidence = ci_gate.judge(ev.store, run, rule, setup)
    refs = {v["name"]: v["prompt"] for v in run["spec"]["variants"]}
    tokens = state().tokens(reg, refs[setup.baseline], refs[setup.candidate])
    url = url_for("eval.run", run_id=run["id"], _external=True)
    links = [f"`promptrev eval show {run['id']}`", url]
    return json_response({
        **run_summary(run), "source": source, "passed": evidence["passed"],
        "evidence": evidence, "tokens": tokens, "baseline": setup.baseline,
        "candidate": setup.candidate, "junit": ci_gate.junit_xml(setup, evidence, rule),
        "markdown": ci_gate.markdown(setup, run["report"], evidence, rule, tokens,
                                     reused=started_run != run["id"],
                                     links=links)})


def _text(data: dict[str, Any], name: str) -> str:
    text = field(data, name, str)
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"field '{name}' is longer than {MAX_TEXT} characters")
    return text

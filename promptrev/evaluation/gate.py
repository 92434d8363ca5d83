"""Evidence-gated labels: may a label move to a version, by its release policy?

A label with a release policy (:mod:`promptrev.model.release`) moves only to a version
that a finished evaluation shows good enough: the policy's dataset version, the label's
current holder as the baseline variant, the target as another variant that differs from
it in nothing but the version, on at least as many cases as the policy asks. The newest
such run decides (running evaluations until one passes would be fishing): its stored
per-case scores are compared again with :func:`promptrev.evaluation.stats.compare` at
the policy's level, one-sided. Non-inferiority at ``alpha`` holds when the lower bound of
the two-sided ``1 - 2·alpha`` interval on ``target - holder`` lies above ``-margin``
(for a metric where lower is better, the upper bound below ``margin``); superiority when
it lies above 0 (below 0).

Moving back to a version that held the label before needs no evaluation (an incident
wants speed), and ending a traffic split returns everyone to the holder. The rule that
judges a move is the one ``main`` held before the move (``at``): a change cannot weaken
its own gate. :class:`promptrev.policy.Policy` asks this module on every route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptrev.model.artifacts import KINDS
from promptrev.model.datasets import parse_dataset
from promptrev.model.release import ReleaseRule, parse_release_policy

from ..errors import Conflict, EvidenceRequired, InvalidRequest, NotFound
from .store import EvalStore


@dataclass
class Clearance:
    """Why a label move may happen, and what its commit message should say about it."""

    how: str  # "ungated", "evidence", "rollback", "override", "ending split"
    note: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    # (registry, the files the judgement read, the commit it read them at): see guard
    watched: tuple[Any, tuple[str, ...], str | None] | None = field(default=None, repr=False)

    def guard(self, head: str) -> None:
        """Raise :class:`Conflict` if a file this clearance was judged on (the release
        policy; for a gated label its label map and splits) differs at ``head``: the
        move is then tried again by its caller rather than made on a stale judgement.
        Writers call it under the writer lock (``Registry.set_label(guard=...)``)."""
        if self.watched is None:
            return
        registry, paths, at = self.watched
        if head == at:
            return
        store = registry.store
        for path in paths:
            before = store.blob_at(at, path) if at else None
            if store.blob_at(head, path) != before:
                raise Conflict(f"{path} changed while this label move was being checked "
                               "against its release policy; nothing was written: try again",
                               details={"path": path})

    def message(self, message: str | None, default: str) -> str | None:
        """The commit message with the clearance appended (None: keep the default)."""
        if self.note is None:
            return message
        return f"{message or default}\n\n{self.note}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API's ``clearance`` field)."""
        return {"how": self.how, "note": self.note, "evidence": self.evidence or None}


def rule_for(registry, kind: str, name: str, label: str, at: str | None
             ) -> tuple[ReleaseRule, str] | None:
    """The release rule of ``label`` as commit ``at`` holds it (None: the label is free)."""
    if at is None or kind not in KINDS:
        return None
    path = KINDS[kind].policy_path(name)
    blob = registry.store.blob_at(at, path)
    if blob is None:
        return None
    rules = parse_release_policy(registry.store.blob(blob).decode("utf-8", "replace"), path)
    rule = rules.get(label)
    return (rule, path) if rule is not None else None


def clear(registry, kind: str, name: str, label: str, holder: int | None, target: Any, *,
          at: str | None, split: bool = False, override: str | None = None) -> Clearance:
    """Clear a move of ``label`` from ``holder`` to ``target`` (a version, a split's
    ``{version: weight}``, or None for a removal), or raise :class:`EvidenceRequired`."""
    cleared = _clear(registry, kind, name, label, holder, target, at=at, split=split,
                     override=override)
    files = [KINDS[kind].policy_path(name)] if kind in KINDS else []
    if cleared.how != "ungated" and files:
        files += [KINDS[kind].label_path(name), KINDS[kind].split_path(name)]
    cleared.watched = (registry, tuple(files), at)
    return cleared


def _clear(registry, kind: str, name: str, label: str, holder: int | None, target: Any, *,
           at: str | None, split: bool = False, override: str | None = None) -> Clearance:
    found = rule_for(registry, kind, name, label, at)
    if found is None:
        return Clearance("ungated")
    rule, path = found
    if override is not None:
        return Clearance("override", f"Release-Override: {override}\nRelease-Policy: {path} "
                         f"({rule.describe()}) not met", {"reason": override, "policy": path})
    if split:
        if not target:
            return Clearance("ending split")
        arms = sorted(v for v in target if v != holder)
        cleared = [clear(registry, kind, name, label, holder, v, at=at) for v in arms]
        notes = [c.note for c in cleared if c.note]
        return Clearance("evidence" if cleared else "ungated",
                         "\n".join(notes) or None,
                         {str(v): c.evidence for v, c in zip(arms, cleared, strict=True)})
    if target is None:
        raise EvidenceRequired(
            f"{kind} '{name}': removing label '{label}' would leave it without a version "
            f"chosen under its release policy ({path}); an admin may do it with an override "
            "reason", details={"policy": path, "label": label})
    if target == holder:
        return Clearance("ungated")
    if _held_before(registry, kind, name, label, target):
        return Clearance("rollback", f"Release-Rollback: version {target} held '{label}' "
                         "before; moved back without a new evaluation",
                         {"rollback": True, "version": target})
    return _judge(registry, rule, path, kind, name, holder, target)


def clear_arriving(registry, move, base: str | None) -> Clearance:
    """Clear a label move that arriving history makes (a :class:`LabelMove`), judged by
    the policies of ``base``. A split's arms are measured against the label's holder at
    ``base`` (the index is there while history is checked)."""
    holder = move.old
    if move.split:
        try:
            holder = registry.labels(move.name, move.kind).get(move.label)
        except NotFound:  # the artifact arrives with this history: nothing holds it yet
            holder = None
    return clear(registry, move.kind, move.name, move.label, holder, move.new, at=base,
                 split=move.split)


def gate_spec(registry, rule: ReleaseRule, kind: str, name: str, holder: int,
              target: int) -> dict[str, Any]:
    """The evaluation spec that would produce the evidence for moving ``holder → target``."""
    evaluation = {k: v for k, v in rule.evaluation.items() if k not in ("prompt", "adapter")}
    variants = []
    for role, number in (("holder", holder), ("candidate", target)):
        variant: dict[str, Any] = {"name": f"{role} v{number}"}
        if kind == "adapter":
            variant.update(prompt=rule.evaluation.get("prompt"), adapter=f"{name}@{number}")
        else:
            variant["prompt"] = f"{name}@{number}"
            if rule.evaluation.get("adapter"):
                variant["adapter"] = rule.evaluation["adapter"]
        variants.append(variant)
    return {"name": f"release gate: {name}@{rule.label} {holder} → {target}",
            **evaluation, "dataset": _dataset(registry, rule), "variants": variants,
            "baseline": variants[0]["name"], "alpha": rule.alpha}


def _held_before(registry, kind: str, name: str, label: str, version: int) -> bool:
    return any(e.label == label and e.new == version
               for e in registry.label_history(name, kind))


def _dataset(registry, rule: ReleaseRule) -> str:
    """The exact dataset version the policy names, as ``main`` resolves it now."""
    try:
        return registry.resolve(rule.evaluation["dataset"], "dataset").ref
    except NotFound as exc:
        raise EvidenceRequired(
            f"the release policy of label '{rule.label}' evaluates on dataset "
            f"{rule.evaluation['dataset']}, which this registry cannot give ({exc.message}): "
            "no evaluation can meet it until the dataset is here",
            details={"label": rule.label, "dataset": rule.evaluation["dataset"]}) from None


def _judge(registry, rule: ReleaseRule, path: str, kind: str, name: str,
           holder: int | None, target: int) -> Clearance:
    wanted = _wanted(registry, rule, kind, name, holder, target, path)
    if holder is None:
        raise EvidenceRequired(
            f"{kind} '{name}' has no version under label '{rule.label}' to compare with: "
            f"its release policy ({path}) measures a move against the current holder. An "
            "admin may place it with an override reason", details=wanted)
    dataset = wanted["dataset"]
    needed = _cases_needed(registry, rule, dataset)
    store = EvalStore(registry)
    for run in store.finished(dataset):
        pair = _pair(run, rule, kind, name, holder, target)
        if pair is None or run["cases"] < needed or not _has_metric(run, rule.metric):
            continue
        evidence = judge_run(store, run, rule, *pair)
        evidence["policy"] = path
        if not evidence["passed"]:
            raise EvidenceRequired(
                f"{kind} '{name}': the newest evaluation of version {target} against the "
                f"holder {holder} (run {run['id']}) does not show it {rule.describe()}: "
                f"{evidence['text']}. Improve the version (or change the policy through a "
                "reviewed commit)", details={**wanted, "evidence": evidence})
        note = (f"Release-Evidence: run {run['id']}, {evidence['text']}\n"
                f"Release-Policy: {path} ({rule.describe()})")
        return Clearance("evidence", note, evidence)
    raise EvidenceRequired(
        f"{kind} '{name}': moving '{rule.label}' from version {holder} to {target} needs "
        f"evidence under its release policy ({path}): a finished evaluation on dataset "
        f"{dataset} ({needed} cases) with baseline {name}@{holder} (the current holder) and "
        f"candidate {name}@{target}, scored by {rule.metric}, showing it {rule.describe()}. "
        f"None exists. Produce it with: {wanted['command']}", details=wanted)


def _wanted(registry, rule: ReleaseRule, kind: str, name: str, holder: int | None,
            target: int, path: str) -> dict[str, Any]:
    return {"policy": path, "label": rule.label, "dataset": _dataset(registry, rule),
            "baseline": f"{name}@{holder}" if holder else None,
            "candidate": f"{name}@{target}", "metric": rule.metric,
            "require": rule.require, "margin": rule.margin, "alpha": rule.alpha,
            "command": f"promptrev label set {name} {rule.label} {target} --kind {kind} "
                       "--evaluate"}


def _cases_needed(registry, rule: ReleaseRule, dataset: str) -> int:
    cases = len(parse_dataset(registry.get(dataset, "dataset").text, dataset))
    limit = rule.evaluation.get("limit")
    return min(cases, limit) if limit else cases


def _pair(run: dict[str, Any], rule: ReleaseRule, kind: str, name: str, holder: int,
          target: int) -> tuple[str, str] | None:
    """(baseline variant, candidate variant) of ``run`` if it measures holder → target."""
    spec = run["spec"]
    variants = {v["name"]: v for v in spec.get("variants", [])}
    base = variants.get(spec.get("baseline"))
    key = "adapter" if kind == "adapter" else "prompt"
    if base is None or base.get(key) != f"{name}@{holder}":
        return None
    model = rule.evaluation.get("model")
    if model is not None and base.get("model") != model:
        return None
    params = rule.evaluation.get("params")
    if params is not None and base.get("params") != params:
        return None
    if not _same_scorer(rule, spec.get("scorers") or []):
        return None
    for vname, variant in variants.items():
        same = all(variant.get(k) == base.get(k) for k in ("prompt", "adapter", "model",
                                                          "params") if k != key)
        if vname != base["name"] and same and variant.get(key) == f"{name}@{target}":
            return base["name"], vname
    return None


def _same_scorer(rule: ReleaseRule, scorers: list[Any]) -> bool:
    """Whether the run scored the policy's metric with the policy's scorer and options (a
    judge's prompt is pinned when a run starts, so a judge is matched by its name)."""
    from promptrev.model.release import scorer_names

    wanted = dict(zip(scorer_names(rule.evaluation["scorers"]), rule.evaluation["scorers"],
                      strict=True)).get(rule.metric)
    if isinstance(wanted, dict) and "judge" in wanted:
        return True
    return wanted in scorers


def _has_metric(run: dict[str, Any], metric: str) -> bool:
    return any(m["metric"] == metric for m in (run["report"] or {}).get("metrics", []))


def judge_run(store: EvalStore, run: dict[str, Any], rule: ReleaseRule, base: str,
              candidate: str) -> dict[str, Any]:
    """Judge a finished run by ``rule``: the variant ``candidate`` against ``base``, their
    stored per-case scores compared at the rule's level (the evidence a label move needs,
    and the verdict of ``promptrev eval gate``)."""
    from . import stats
    from .reporting import shared_latency_units, unit_means

    stored = next(m for m in run["report"]["metrics"] if m["metric"] == rule.metric)
    n = run["cases"]
    rows: dict[str, list] = {base: [None] * n, candidate: [None] * n}
    for r in store.results(run["id"]):
        if r["variant"] in rows and r["case_index"] < n:
            rows[r["variant"]][r["case_index"]] = r
    scores = {v: [None if r is None else r["scores"].get(rule.metric) for r in rows[v]]
              for v in rows}
    units = shared_latency_units(rows, list(rows), n) if stored.get("measured") else None
    if units is not None:
        scores = {v: unit_means(values, units) for v, values in scores.items()}
    higher = bool(stored["higher_is_better"])
    report = stats.compare(scores, metric=rule.metric, higher_is_better=higher,
                           alpha=rule.alpha, confidence=1 - 2 * rule.alpha, baseline=base,
                           correction="none")
    c = report.comparisons[0]
    bound = c.low if higher else c.high
    limit = 0.0 if rule.require == "superior" else rule.margin
    passed = bound == bound and (bound > -limit if higher else bound < limit)  # NaN fails
    level = f"{100 * (1 - 2 * rule.alpha):g}%"
    verdict = (f"{rule.require} {'met' if passed else 'not met'}: "
               f"{'lower' if higher else 'upper'} bound {bound:+.4g} "
               f"{'>' if higher else '<'} {-limit if higher else limit:+.4g} "
               f"{'holds' if passed else 'fails'}")
    text = (f"{rule.metric} {c.b} − {c.a} = {c.diff:+.4g}, {level} interval "
            f"[{c.low:+.4g}, {c.high:+.4g}] over {c.n} paired cases; {verdict}")
    return {"run": run["id"], "metric": rule.metric, "baseline": base, "candidate": candidate,
            "diff": c.to_dict()["diff"], "low": c.to_dict()["low"],
            "high": c.to_dict()["high"], "n": c.n, "confidence": 1 - 2 * rule.alpha,
            "higher_is_better": higher, "require": rule.require, "margin": rule.margin,
            "alpha": rule.alpha, "passed": bool(passed), "text": text}


# ---- producing the evidence ----------------------------------------------------------------
# A run that has not moved for this long is taken for one whose worker stopped: the next
# request for the same evidence starts a fresh run instead of waiting on it for ever.
STALLED_S = 900


def producible(refusal: EvidenceRequired) -> bool:
    """Whether running the policy's evaluation can answer ``refusal``: a move of a held
    label to a version, with no finished evaluation yet (a verdict that fell short is not
    rerun until one passes: the newest run decides)."""
    details = refusal.details or {}
    return bool(details.get("baseline") and details.get("candidate")) \
        and "evidence" not in details


def evidence_spec(registry, kind: str | None, name: str, label: str, target: int
                  ) -> tuple[dict[str, Any], int, str]:
    """The evaluation ``label``'s release policy asks for before it moves to ``target``:
    (its spec, the holder it is measured against, the policy file). The one recipe used
    by ``label set --evaluate`` and by the server's queued evaluation."""
    kind = registry.kind_of(name, kind)
    found = rule_for(registry, kind, name, label, registry.sync())
    if found is None:
        raise InvalidRequest(f"{kind} '{name}': label '{label}' has no release policy, so "
                             "there is no evaluation to run before moving it")
    rule, path = found
    holder = registry.labels(name, kind).get(label)
    if holder is None:
        raise EvidenceRequired(
            f"{kind} '{name}' has no version under label '{label}' to compare with: its "
            f"release policy ({path}) measures a move against the current holder",
            details={"policy": path, "label": label})
    return gate_spec(registry, rule, kind, name, holder, target), holder, path


def queue_evidence(evaluator, kind: str | None, name: str, label: str, target: int, *,
                   author: str) -> tuple[dict[str, Any], bool]:
    """Start the run ``label``'s policy asks for to move to ``target`` (not executed here),
    or find the identical run already going: (the run, whether it was started now)."""
    from .ci_gate import pending_run

    spec, _, _ = evidence_spec(evaluator.registry, kind, name, label, target)
    resolved, _ = evaluator.resolve(spec)
    return pending_run(evaluator, spec, resolved, author=author)

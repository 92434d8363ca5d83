"""A CI gate: a candidate prompt against a label's holder, judged like a release gate.

``promptrev eval gate ab.yaml --baseline production`` reads an evaluation spec whose
variants name the candidate, completes it with the baseline (:func:`gate_setup`), runs it
or reuses a finished run of the identical resolved spec (:func:`reusable_run`), and judges
candidate against baseline with the release gates' own judgement
(:func:`promptrev.evaluation.gate.judge_run`). :func:`junit_xml` and :func:`markdown`
write what a CI job keeps: a test report and a pull-request comment.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from promptrev.model import safe_yaml
from promptrev.model.release import ReleaseRule, parse_release_policy, parse_rule, scorer_names

from ..errors import NotFound, ValidationFailed
from .runs import check_spec
from .store import EvalStore

# Keys of a resolved spec that do not change a run's scores: a run differing only there
# is reused. (dataset_commit is where main stood at the start; the dataset ref is exact.)
_NOT_IDENTITY = ("name", "batch_size", "dataset_commit")


@dataclass(frozen=True)
class GateSetup:
    """The completed spec, which of its variants are compared, and the prompt gated."""

    spec: dict[str, Any]
    name: str  # the prompt, e.g. sentiment/zero-shot
    label: str
    candidate: str  # variant names
    baseline: str


def load_gate(text: str, filename: str, label: str, candidate: str | None) -> GateSetup:
    """:func:`gate_setup` of the spec file ``filename`` (its ``text``)."""
    return gate_setup(safe_yaml.load(text, filename), label, candidate, filename)


def gate_setup(spec: Any, label: str, candidate: str | None, filename: str) -> GateSetup:
    """Complete ``spec`` for the gate and check it (raise :class:`ValidationFailed`).

    The baseline is the variant whose prompt is ``NAME@label``; when there is none, it is
    added: a copy of the candidate with its prompt replaced by ``NAME@label``. The
    candidate is the variant named ``candidate``, else the only other variant.
    """
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), list) \
            or not spec["variants"]:
        raise ValidationFailed(f"{filename}: 'variants' must list the candidate variant")
    variants = [dict(v, name=str(v.get("name") or f"v{i + 1}")) if isinstance(v, dict) else v
                for i, v in enumerate(spec["variants"])]
    held = [v for v in variants if isinstance(v, dict) and _label_of(v.get("prompt")) == label]
    if len(held) > 1:
        raise ValidationFailed(f"{filename}: {len(held)} variants name label '{label}'; the "
                               "baseline is one of them")
    others = [v for v in variants if not held or v is not held[0]]
    chosen = _candidate(others, candidate, filename, label)
    name = str(chosen.get("prompt") or "").partition("@")[0]
    if held:
        base = held[0]
        if base["prompt"].partition("@")[0] != name:
            raise ValidationFailed(f"{filename}: the baseline variant '{base['name']}' names "
                                   f"{base['prompt']}, the candidate {chosen['prompt']}: "
                                   "a gate compares versions of one prompt")
    else:
        base = {**chosen, "name": f"baseline ({label})", "prompt": f"{name}@{label}"}
        variants = [base, *variants]
    completed = check_spec({**spec, "variants": variants, "baseline": base["name"]}, filename)
    return GateSetup(completed, name, label, chosen["name"], base["name"])


def _label_of(ref: Any) -> str | None:
    """The label (or version) a reference names after ``@``, if any."""
    return (ref.partition("@")[2] or None) if isinstance(ref, str) else None


def _candidate(others: list[Any], wanted: str | None, filename: str,
               label: str) -> dict[str, Any]:
    names = [str(v.get("name")) for v in others if isinstance(v, dict)]
    if wanted is not None:
        found = [v for v in others if isinstance(v, dict) and v["name"] == wanted]
        if not found:
            raise ValidationFailed(f"{filename}: no candidate variant '{wanted}' (variants "
                                   f"besides the baseline: {', '.join(names) or 'none'})")
        chosen = found[0]
    elif len(others) == 1:
        chosen = others[0]
    else:
        raise ValidationFailed(f"{filename}: {len(others)} variants besides the baseline "
                               f"({', '.join(names) or 'none'}): name the candidate with "
                               "--candidate VARIANT" if others else
                               f"{filename}: no candidate variant besides the one at '{label}'")
    if not isinstance(chosen, dict) or not isinstance(chosen.get("prompt"), str):
        raise ValidationFailed(f"{filename}: the candidate variant needs a 'prompt' reference")
    return chosen


def gate_rule(registry, setup: GateSetup, *, policy: tuple[str, str] | None = None,
              explicit: dict[str, Any] | None = None) -> tuple[ReleaseRule, str]:
    """The rule that judges the gate and where it comes from: ``explicit`` options
    (require, metric, margin, alpha), a policy file's text ``(text, filename)`` at the
    label, else the release policy the registry holds for the prompt and label."""
    from . import gate

    spec = setup.spec
    if explicit is not None:
        raw = {"evaluation": {"dataset": spec["dataset"], "scorers": spec["scorers"]},
               **{k: v for k, v in explicit.items() if v is not None}}
        where = "--require/--metric/--margin/--alpha"
        rule, source = parse_rule(setup.label, raw, where), where
    elif policy is not None:
        text, filename = policy
        rules = parse_release_policy(text, filename)
        if setup.label not in rules:
            raise ValidationFailed(f"{filename} has no rule for label '{setup.label}' "
                                   f"(labels: {', '.join(sorted(rules)) or 'none'})")
        rule, source = rules[setup.label], filename
    else:
        found = gate.rule_for(registry, "prompt", setup.name, setup.label, registry.sync())
        if found is None:
            raise NotFound(f"prompt '{setup.name}' has no release policy for label "
                           f"'{setup.label}': give --policy FILE, or --require and --metric")
        rule, source = found
    names = scorer_names(spec["scorers"])
    if rule.metric not in names:
        raise ValidationFailed(f"the gate's metric '{rule.metric}' ({source}) is not scored "
                               f"by the spec (scorers: {', '.join(map(str, names))})")
    return rule, source


def reusable_run(store: EvalStore, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The newest finished run of the same resolved spec (versions, dataset version,
    model, parameters, scorers, limit), or None."""
    wanted = spec_identity(resolved)
    return next((run for run in store.finished(resolved["dataset"])
                 if spec_identity(run["spec"]) == wanted), None)


def pending_run(evaluator, spec: dict[str, Any], resolved: dict[str, Any], *,
                author: str) -> tuple[dict[str, Any], bool]:
    """A run of ``spec`` still going (started by an earlier request that polls), or a new
    one, not executed here: (the run, whether it was started now)."""
    import time

    from .gate import STALLED_S

    wanted = spec_identity(resolved)
    for run in evaluator.store.active(resolved["dataset"], int(time.time()) - STALLED_S):
        if spec_identity(run["spec"]) == wanted:
            return run, False
    return evaluator.store.run(evaluator.start(spec, author=author)), True


def spec_identity(spec: dict[str, Any]) -> str:
    """What makes two resolved specs the same run (all but name and batch size)."""
    return json.dumps({k: v for k, v in spec.items() if k not in _NOT_IDENTITY},
                      sort_keys=True, default=str)


def judge(store: EvalStore, run: dict[str, Any], rule: ReleaseRule,
          setup: GateSetup) -> dict[str, Any]:
    """The release gates' verdict on the run: candidate against baseline, by ``rule``."""
    from .gate import judge_run

    return judge_run(store, run, rule, setup.baseline, setup.candidate)


# ---- what a CI job keeps ------------------------------------------------------------------
def junit_xml(setup: GateSetup, evidence: dict[str, Any], rule: ReleaseRule) -> str:
    """A JUnit report: one test suite, one test case per gated comparison."""
    failed = not evidence["passed"]
    suite = ET.Element("testsuite", name="promptrev eval gate", tests="1",
                       failures=str(int(failed)), errors="0", skipped="0")
    case = ET.SubElement(suite, "testcase", classname=f"promptrev.gate.{setup.name}",
                         name=f"{rule.metric}: {setup.candidate} vs {setup.baseline}, "
                              f"{_requirement(rule)}")
    if failed:
        verdict = evidence["text"].rpartition("; ")[2]
        ET.SubElement(case, "failure", message=verdict, type="GateFailed").text = \
            evidence["text"]
    ET.SubElement(case, "system-out").text = f"run {evidence['run']}: {evidence['text']}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def markdown(setup: GateSetup, report: dict[str, Any], evidence: dict[str, Any],
             rule: ReleaseRule, tokens: dict[str, Any], *, reused: bool,
             links: list[str]) -> str:
    """A pull-request comment: variants, the gated comparison and its verdict, the cost."""
    refs = {v["name"]: v["prompt"] for v in report["variants"]}
    mark = "✅ passed" if evidence["passed"] else "❌ failed"
    lines = [f"### promptrev gate: {setup.name} — {mark}", "",
             f"`{refs[setup.candidate]}` against `{setup.label}` "
             f"(`{refs[setup.baseline]}`) on `{report['dataset']}`, {report['cases']} cases, "
             f"run {report['run']}{' (reused)' if reused else ''}.", ""]
    lines += ["| metric | variant | prompt | mean | interval | n |",
              "| --- | --- | --- | ---: | --- | ---: |"]
    for metric in report["metrics"]:
        for name, iv in metric["variants"].items():
            lines.append(f"| {metric['metric']} | {name} | `{refs[name]}` | "
                         f"{_num(iv['mean'], '.3f')} | [{_num(iv['low'], '.3f')}, "
                         f"{_num(iv['high'], '.3f')}] | {iv['n']} |")
    level = f"{100 * evidence['confidence']:g}%"
    lines += ["", f"**Gate** ({_requirement(rule)}):", "",
              f"| comparison | difference | {level} interval | cases | verdict |",
              "| --- | ---: | --- | ---: | --- |",
              f"| {rule.metric}: {setup.candidate} − {setup.baseline} | "
              f"{_num(evidence['diff'], '+.4g')} | [{_num(evidence['low'], '+.4g')}, "
              f"{_num(evidence['high'], '+.4g')}] | {evidence['n']} | "
              f"{evidence['text'].rpartition('; ')[2]} |", ""]
    prices = (tokens.get("cost") or {}).get("prices") or {}
    table = f" (price table {prices['version']})" if prices.get("version") else ""
    lines += [f"**Prompt tokens and cost per 1,000 calls**, baseline → candidate: "
              f"{tokens['summary']}{table}", ""]
    lines += [f"Full report: {', '.join(links)}", ""]
    return "\n".join(lines)


def _requirement(rule: ReleaseRule) -> str:
    what = ("superior" if rule.require == "superior"
            else f"non-inferior within {rule.margin:g}")
    return f"{what} on {rule.metric}, alpha {rule.alpha:g}"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)

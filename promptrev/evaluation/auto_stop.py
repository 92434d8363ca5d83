"""A split that ends itself: promote the winner, or roll back the loser, on the always-valid
test of its outcomes (:mod:`.sequential`), as a commit with the statistics in its message.

A split's plan (``ab_plan``) may carry ``auto_stop``:

- ``rollback``: as soon as an arm's ``stop_metric`` is significantly *lower* than the
  label's holder's, that arm leaves the split (the split ends when only the holder is
  left): a guard rail that needs nobody watching.
- ``promote``: the same, and as soon as one arm is significantly *higher* than every
  other arm, the label moves to it and the split ends.

Higher is better (outcomes are successes, ratings, conversions). Significant means what
the page shows: the mSPRT p-value, Holm-adjusted over the pairs, below the plan's alpha,
with the confidence sequence excluding 0; valid however often it is checked, so checking
after every outcome (:meth:`Outcomes.record` callers do) is sound.

The change goes through the one write path with the one permission check:
``Policy.require_move`` (the release gate of the label: a promotion needs the evidence a
manual move needs, and is not made without it) and ``Registry.transaction`` with a guard
that voids it if the split changed meanwhile. The acting account is the system account
``auto-stop`` (:data:`ACTOR`), acting for whoever set the split with its plan: it holds the
role to move the label (the maker had it to split the label) and never overrides a gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..accounts import User
from ..errors import Conflict, EvidenceRequired
from ..model.artifacts import KINDS
from ..model.outcomes import usable_outcome
from . import sequential, stats

ACTOR = User(-1, "auto-stop", "auto-stop@promptrev.invalid", "admin")


@dataclass(frozen=True)
class Decision:
    """What the statistics decided: move the label to ``winner``, or drop ``losers``."""

    action: str  # "promote" or "rollback"
    winner: int | None
    losers: tuple[int, ...]
    lines: tuple[str, ...]  # the statistics, one comparison a line


def decide(ordered: list[tuple[int, float]], arms: dict[int, int], holder: int | None,
           mode: str, metric: str, alpha: float, tuned_per_arm: int) -> Decision | None:
    """The decision on ``ordered`` outcomes (version, value in arrival order), or None."""
    versions = sorted(arms)
    ordered = [(v, x) for v, x in ordered if v in arms and usable_outcome(x)]
    if len(versions) < 2 or not ordered:
        return None
    binary = stats.is_binary([x for _, x in ordered])
    pairs = [(a, b) for i, a in enumerate(versions) for b in versions[i + 1:]]
    level = alpha / len(pairs)
    tests = []
    for a, b in pairs:
        pair = [(v == b, x) for v, x in ordered if v in (a, b)]
        tests.append(sequential.always_valid_test(
            [in_b for in_b, _ in pair], [x for _, x in pair], binary=binary, alpha=alpha,
            tuned_per_arm=tuned_per_arm, interval_alpha=level))
    adjusted = stats.adjust([t["p_value"] for t in tests], "holm")
    higher: dict[tuple[int, int], dict] = {}  # (better, worse) -> the test that shows it
    for (a, b), test, p_adj in zip(pairs, tests, adjusted, strict=True):
        test["p_adjusted"] = p_adj
        if test["started"] and p_adj < alpha and test["low"] is not None \
                and not test["low"] <= 0 <= test["high"]:
            better, worse = (b, a) if test["diff"] > 0 else (a, b)
            higher[(better, worse)] = {**test, "a": a, "b": b}
    return _decision(versions, higher, holder, mode, metric, alpha, level)


def _decision(versions: list[int], higher: dict, holder: int | None, mode: str,
              metric: str, alpha: float, level: float) -> Decision | None:
    def line(better: int, worse: int) -> str:
        t = higher[(better, worse)]
        return (f"{metric}: v{t['b']} − v{t['a']} = {t['diff']:+.4g}, always-valid "
                f"{1 - level:.4g} CI [{t['low']:+.4g}, {t['high']:+.4g}], mSPRT "
                f"p={t['p_adjusted']:.3g} (Holm over {len(versions) * (len(versions) - 1) // 2}"
                f" pair(s), alpha {alpha:g}), n={t['n'][0]} and {t['n'][1]}: v{better} is "
                f"higher than v{worse}")

    if mode == "promote":
        for v in versions:
            others = [u for u in versions if u != v]
            if all((v, u) in higher for u in others) and v != holder:
                return Decision("promote", v, tuple(others),
                                tuple(line(v, u) for u in others))
    if holder not in versions:
        return None
    losers = tuple(v for v in versions if (holder, v) in higher)
    if not losers:
        return None
    return Decision("rollback", None, losers, tuple(line(holder, v) for v in losers))


def apply(registry, policy, outcomes, name: str, label: str, kind: str
          ) -> dict[str, Any] | None:
    """Stop ``label``'s split if its plan asks and the statistics decided: one commit,
    through ``policy`` (a :class:`promptrev.policy.Policy`); what happened, or None."""
    plan = outcomes.plan(name, label, kind)
    if not plan or not plan.get("auto_stop"):
        return None
    arms = registry.splits(name, kind).get(label)
    if not arms:
        return None
    holder = registry.labels(name, kind).get(label)
    decision = decide(outcomes.ordered(name, label, plan["stop_metric"], kind), arms, holder,
                      plan["auto_stop"], plan["stop_metric"], plan["alpha"], plan["per_arm"])
    if decision is None:
        return None
    return _commit(registry, policy, outcomes, name, label, kind, plan, arms, decision)


def _commit(registry, policy, outcomes, name: str, label: str, kind: str,
            plan: dict[str, Any], arms: dict[int, int], decision: Decision
            ) -> dict[str, Any]:
    left = {v: w for v, w in arms.items() if v not in decision.losers}
    if decision.action == "promote" or len(left) < 2:
        left = {}
    split_path = KINDS[kind].split_path(name)
    at = registry.sync()
    before = registry.store.blob_at(at, split_path)
    try:
        if decision.action == "promote":
            cleared = policy.require_move(ACTOR, registry, name, label, decision.winner,
                                          kind=kind, what="promoting the winner of a split")
        else:
            cleared = policy.require_move(ACTOR, registry, name, label, left, kind=kind,
                                          what="rolling back a split's loser", split=True)
    except EvidenceRequired as refusal:  # the gate holds: the split runs on, people decide
        return {"action": decision.action, "stopped": False, "refused": refusal.message,
                "statistics": list(decision.lines)}

    def guard(head: str) -> None:
        cleared.guard(head)
        if registry.store.blob_at(head, split_path) != before:
            raise Conflict(f"the split of {name}@{label} changed while it was being stopped")

    message = _message(name, label, decision, left, plan, cleared.note)
    try:
        with registry.transaction(message=message, author=ACTOR.author,
                                  account=ACTOR.name, guard=guard) as tx:
            if decision.action == "promote":
                tx.set_label(name, label, decision.winner, kind=kind)
            tx.set_split(name, label, left, kind=kind)
    except Conflict:  # another request stopped it, or someone changed it: nothing to do
        return None
    if not left:
        outcomes.end_plan(name, label, kind)
    return {"action": decision.action, "stopped": True, "winner": decision.winner,
            "losers": list(decision.losers), "split": {str(v): w for v, w in left.items()},
            "commit": tx.commit_sha, "statistics": list(decision.lines)}


def _message(name: str, label: str, decision: Decision, left: dict[int, int],
             plan: dict[str, Any], note: str | None) -> str:
    # "split ..." so the audit log names it a split change (model.artifacts.ACTIONS)
    if decision.action == "promote":
        head = (f"split {name}@{label} stopped by auto-stop: {label} -> {decision.winner}, "
                "the winner")
    else:
        dropped = ", ".join(f"v{v}" for v in decision.losers)
        head = (f"split {name}@{label} stopped by auto-stop: {dropped} rolled back" + (
            ", split ended" if not left else
            f", split {', '.join(f'v{v}: {w}' for v, w in sorted(left.items()))}"))
    body = [f"Auto-Stop: {plan['auto_stop']} on {plan['stop_metric']} (the split's plan; "
            f"planned {plan['per_arm']} per arm, alpha {plan['alpha']:g})"]
    body += [f"Auto-Stop-Statistics: {line}" for line in decision.lines]
    if note:
        body.append(note)
    return head + "\n\n" + "\n".join(body)

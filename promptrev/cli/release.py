"""Label moves from a terminal under release policies: evidence shown, or produced first.

Every command that moves a label asks the policy through :func:`cleared_move`; with
``--evaluate`` a move that lacks its evidence runs the policy's evaluation (the current
holder against the target, on the policy's dataset) on this machine, then asks again.
"""

from __future__ import annotations

from typing import Any

import click

from promptrev.errors import EvidenceRequired


def cleared_move(ctx, reg, name: str, label: str, target: Any, *, kind: str | None = None,
                 what: str = "moving", split: bool = False, evaluate: bool = False,
                 override: str | None = None):
    """Ask the policy about the move (running the evaluation first with ``evaluate``);
    print the evidence that allows it; return the clearance."""
    def ask():
        return ctx.policy.require_move(ctx.acting, reg, name, label, target, kind=kind,
                                       what=what, split=split, override=override)
    try:
        cleared = ask()
    except EvidenceRequired as exc:
        from promptrev.evaluation.gate import producible

        if not evaluate or split or target is None or not producible(exc):
            raise
        _evaluate(ctx, reg, name, label, target, kind)
        cleared = ask()
    if cleared.note:
        for line in cleared.note.splitlines():
            click.echo(line)
    return cleared


def _evaluate(ctx, reg, name: str, label: str, target: int, kind: str | None) -> None:
    """Run the release policy's evaluation of ``target`` against the label's holder."""
    from promptrev.evaluation import gate
    from promptrev.evaluation.runs import Evaluator

    from .runner_commands import runner_for

    spec, holder, path = gate.evidence_spec(reg, kind, name, label, target)
    runner = runner_for(ctx, reg)
    evaluator = Evaluator(reg, runner, env=runner.env)
    run_id = evaluator.start(spec, author=ctx.author)
    click.echo(f"evaluating {name}@{target} against {name}@{holder} for '{label}' "
               f"({path}): run {run_id}", err=True)
    evaluator.execute(run_id)

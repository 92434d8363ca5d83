"""``promptrev eval``: A/B evaluations from a terminal."""

from __future__ import annotations

import sys

import click

from .main import Context, emit_json, label, main, pass_ctx
from .release import cleared_move


def evaluator_for(ctx: Context, reg):
    """An evaluator on ``reg`` with this machine's runner (the CLI's models and rules)."""
    from promptrev.evaluation.runs import Evaluator

    from .runner_commands import runner_for

    runner = runner_for(ctx, reg)
    return Evaluator(reg, runner, env=runner.env)


@main.group("eval")
def eval_() -> None:
    """Compare prompt versions and adapters on a dataset version, with statistics."""


@eval_.command("run")
@click.argument("spec_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def eval_run(ctx: Context, spec_file: str, as_json: bool) -> None:
    """Run the variants of SPEC_FILE (ab.yaml) over its dataset and print the verdict."""
    from promptrev.evaluation.runs import load_spec

    with open(spec_file, encoding="utf-8") as fh:
        spec = load_spec(fh.read(), spec_file)
    with ctx.open() as reg:
        evaluator = evaluator_for(ctx, reg)
        run_id = evaluator.start(spec, author=ctx.author)
        click.echo(f"evaluation run {run_id} (resume with: promptrev eval resume {run_id})",
                   err=True)
        report = execute_run(evaluator, run_id)
    print_report(report, as_json)


@eval_.command("resume")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def eval_resume(ctx: Context, run_id: int, as_json: bool) -> None:
    """Finish an interrupted run: only cases without a result are run."""
    with ctx.open() as reg:
        report = execute_run(evaluator_for(ctx, reg), run_id)
    print_report(report, as_json)


@eval_.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.option("--cases", is_flag=True, help="Also print every case where variants disagree.")
@pass_ctx
def eval_show(ctx: Context, run_id: int, as_json: bool, cases: bool) -> None:
    """Print a run's report (recomputed from its stored results)."""
    with ctx.open() as reg:
        evaluator = evaluator_for(ctx, reg)
        run = evaluator.store.run(run_id)
        report = run["report"] or evaluator.report(run_id)
        results = evaluator.store.results(run_id) if cases else []
    if as_json:
        emit_json({**report, "status": run["status"], **(
            {"results": results} if cases else {})})
        return
    click.echo(f"run {run_id}: {run['name']}  ({run['status']})")
    print_report(report, False)
    if cases:
        _print_disagreements(report, results)


@eval_.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def eval_list(ctx: Context, as_json: bool) -> None:
    """Recent evaluation runs."""
    from promptrev.evaluation.store import EvalStore

    with ctx.open() as reg:
        runs = EvalStore(reg).runs()
    if as_json:
        emit_json(runs)
        return
    for r in runs:
        click.echo(f"{r['id']:>5}  {r['status']:<8} {r['dataset']:<24} {r['cases']:>6} cases  "
                   f"{r['name']}")


def execute_run(evaluator, run_id: int) -> dict:
    """Run (or resume) run ``run_id`` with a progress bar on a terminal; its report."""
    run = evaluator.store.run(run_id)
    total = run["cases"] * len(run["spec"]["variants"])
    with click.progressbar(length=total, label="evaluating", file=sys.stderr,
                           show_pos=True) as bar:
        return evaluator.execute(run_id, progress=bar.update)


def print_report(report: dict, as_json: bool) -> None:
    """An evaluation report for people (or as JSON)."""
    if as_json:
        emit_json(report)
        return
    click.secho(f"dataset {report['dataset']}, {report['cases']} cases", bold=True)
    for metric in report["metrics"]:
        click.secho(f"\n{metric['metric']}", bold=True)
        for name, iv in metric["variants"].items():
            click.echo(f"  {name:<20} {iv['mean']:.3f}  [{iv['low']:.3f}, {iv['high']:.3f}]"
                       f"  n={iv['n']}")
        if metric.get("correction"):
            click.echo(f"  comparisons: {metric['correction']}")
    ops = report["operations"]
    click.secho("\ncost and speed (mean per request)", bold=True)
    for name in report["scored"]:
        lat = ops["latency_s"]["variants"][name]["mean"]
        tin = ops["prompt_tokens"]["variants"][name]["mean"]
        tout = ops["completion_tokens"]["variants"][name]["mean"]
        per_1k = report["costs"]["per_1k"].get(name)
        money = f"  {per_1k:.4g} per 1k requests" if per_1k is not None else ""
        click.echo(f"  {name:<20} {lat:.3f}s  {tin:.0f} in / {tout:.0f} out tokens{money}")
    click.secho("\nverdict", bold=True)
    for line in report["verdict"]:
        click.echo(f"  {line}")


def _print_disagreements(report: dict, results: list[dict]) -> None:
    by_case: dict[str, dict[str, dict]] = {}
    for r in results:
        by_case.setdefault(r["case_id"], {})[r["variant"]] = r
    click.secho("\ncases where the variants disagree", bold=True)
    for case_id, rows in by_case.items():
        outputs = {name: row["output"].strip() for name, row in rows.items()}
        if len(set(outputs.values())) > 1:
            click.echo(f"  {case_id}: " + "  |  ".join(f"{n}: {o[:40]!r}"
                                                      for n, o in outputs.items()))


def _plan_options(command):
    """The planner's inputs, shared by ``label split`` and ``ab plan``."""
    for option in reversed([
            click.option("--mde", type=float,
                         help="Minimum detectable effect: the difference of rates or means "
                              "worth finding (e.g. 0.02)."),
            click.option("--baseline", type=float,
                         help="Baseline rate of a pass/fail outcome (e.g. 0.10)."),
            click.option("--sd", type=float,
                         help="Standard deviation of a continuous outcome."),
            click.option("--alpha", type=float, default=None,
                         help="Significance level (default 0.05)."),
            click.option("--power", type=float, default=None,
                         help="Power to find the effect (default 0.8).")]):
        command = option(command)
    return command


def _planner_inputs(mde, baseline, sd, alpha, power) -> dict:
    given = {"mde": mde, "baseline": baseline, "sd": sd, "alpha": alpha, "power": power}
    return {key: value for key, value in given.items() if value is not None}


@label.command("split")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.argument("arms", nargs=-1)
@click.option("--end", is_flag=True, help="End the split: everyone gets the label again.")
@click.option("-m", "--message")
@click.option("--planned", "planned", type=int, default=None,
              help="Planned outcomes per arm: the fixed-horizon test is shown from then on "
                   "(or give --mde with --baseline or --sd to work it out).")
@click.option("--auto-stop", type=click.Choice(["promote", "rollback"]), default=None,
              help="End the split by itself once the always-valid test decides: promote "
                   "the winner (through the label's release gate), or roll back an arm "
                   "that is worse than the label's holder (needs a plan).")
@click.option("--stop-metric", default=None, metavar="METRIC",
              help="The outcome metric that decides --auto-stop (default: success).")
@_plan_options
@pass_ctx
def label_split(ctx: Context, name: str, label_name: str, arms: tuple[str, ...], end: bool,
                message: str | None, planned: int | None, auto_stop: str | None,
                stop_metric: str | None, **planner) -> None:
    """Split LABEL's traffic over versions: `label split summarize production 4=90 5=10`.

    With `--mde 0.02 --baseline 0.1` (or `--sd`), the planned size per arm is worked out
    (`ab plan` shows it alone) and kept with the split's statistics. With `--auto-stop`,
    the split ends itself when the outcomes decide (a commit with the statistics).
    """
    from promptrev.evaluation.planning import plan_from

    weights: dict[int, int] = {}
    if not end:
        for arm in arms:
            version, sep, weight = arm.partition("=")
            if not sep or not _ascii_int(version) or not _ascii_int(weight):
                raise click.BadParameter(f"{arm!r} is not VERSION=WEIGHT", param_hint="ARMS")
            weights[int(version)] = int(weight)
        if not weights:
            raise click.UsageError("give VERSION=WEIGHT arms, or --end")
    spec = _planner_inputs(**planner)
    if planned is not None:
        spec["per_arm"] = planned
    if auto_stop is not None or stop_metric is not None:
        spec.update(auto_stop=auto_stop, stop_metric=stop_metric)
    if spec and end:
        raise click.UsageError("a plan goes with a new split, not with --end")
    plan = plan_from(spec, max(len(weights), 2)) if spec else None  # checked before writing
    with ctx.open() as reg:
        ctx.policy.require_label(ctx.acting, label_name, "splitting")
        cleared = cleared_move(ctx, reg, name, label_name, weights, what="splitting",
                               split=True)
        reg.set_split(name, label_name, weights, author=ctx.author, guard=cleared.guard,
                      message=cleared.message(message, f"split {name}@{label_name}"))
        outcomes, kind = _outcomes(reg), reg.resolve(name).kind
        if end:
            outcomes.end_plan(name, label_name, kind)
        elif plan is not None:
            outcomes.set_plan(name, label_name, plan, kind)
    click.echo(f"{name}@{label_name}: " + (", ".join(f"v{v} {w}" for v, w in sorted(
        weights.items())) if weights else "split ended"))
    if plan is not None:
        click.echo(f"planned: {plan['per_arm']} outcomes per arm (alpha {plan['alpha']:g})")
        if plan["auto_stop"]:
            click.echo(f"auto-stop: {plan['auto_stop']} on {plan['stop_metric']}")


@main.group("ab")
def ab() -> None:
    """Online A/B on split labels: live statistics from the outcomes applications post."""


@ab.command("plan")
@_plan_options
@click.option("--arms", type=int, default=2, show_default=True,
              help="Arms of the split (alpha is shared over their pairs).")
@click.option("--json", "as_json", is_flag=True)
def ab_plan(mde, baseline, sd, alpha, power, arms: int, as_json: bool) -> None:
    """Outcomes per arm a split needs: `ab plan --mde 0.02 --baseline 0.10`."""
    from promptrev.evaluation.planning import sample_size

    if mde is None:
        raise click.UsageError("give --mde (the minimum detectable effect), with --baseline "
                               "or --sd")
    planned = sample_size(**_planner_inputs(mde, baseline, sd, alpha, power), arms=arms)
    if as_json:
        emit_json(planned)
        return
    what = (f"baseline rate {baseline:g}" if baseline is not None else f"sd {sd:g}")
    click.echo(f"{planned['per_arm']} outcomes per arm ({planned['total']} in all) to find a "
               f"difference of {mde:g} from {what} with power {planned['power']:g} at alpha "
               f"{planned['alpha']:g} ({planned['method']})")
    click.echo(f"set it with the split: label split NAME LABEL ... --planned "
               f"{planned['per_arm']}")


@ab.command("stats")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def ab_stats(ctx: Context, name: str, label_name: str, as_json: bool) -> None:
    """Per-arm results of LABEL's split: always-valid tests (fixed-horizon once planned)."""
    with ctx.open() as reg:
        report = _outcomes(reg).report(reg, name, label_name, reg.resolve(name).kind)
    if as_json:
        emit_json(report)
        return
    plan = report["plan"]
    click.secho(f"{name}@{label_name}: split {report['split'] or 'none'}, " + (
        f"planned {plan['per_arm']} per arm" if plan else "no planned size"), bold=True)
    for metric in report["metrics"]:
        click.secho(metric["metric"], bold=True)
        for arm, iv in metric["arms"].items():
            click.echo(f"  {arm:<6} {iv['mean']:.3f}  [{iv['low']:.3f}, {iv['high']:.3f}]  "
                       f"n={iv['n']}")
        for c in metric["comparisons"]:
            seq = c["sequential"]
            interval = (f"[{seq['low']:+.3g}, {seq['high']:+.3g}]" if seq["low"] is not None
                        else "not yet")
            click.echo(f"  {c['b']} − {c['a']}: always-valid p={seq['p_adjusted']:.3g}, "
                       f"{seq['confidence']:.0%} CI {interval}")
        if not metric["fixed_horizon"]["shown"] and metric["fixed_horizon"]["reason"]:
            click.echo(f"  fixed-horizon p-values {metric['fixed_horizon']['reason']}")
    for line in report["verdict"]:
        click.echo(line)


def _outcomes(reg):
    from promptrev.evaluation.online import Outcomes

    return Outcomes(reg)


def _ascii_int(text: str) -> bool:
    """Whether ``text`` is a small number in ASCII digits (``'²'.isdigit()`` is true)."""
    return text.isascii() and text.isdigit() and len(text) <= 9

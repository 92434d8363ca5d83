"""``promptrev eval gate``: a CI gate, judged like a release gate, with JUnit and Markdown."""

from __future__ import annotations

import os

import click

from promptrev.model.release import REQUIREMENTS

from .eval_commands import eval_, evaluator_for, execute_run, print_report
from .main import Context, pass_ctx


@eval_.command("gate")
@click.argument("spec_file", metavar="SPEC", type=click.Path(exists=True, dir_okay=False))
@click.option("--baseline", "label", required=True, metavar="LABEL",
              help="The label whose current holder is the baseline (e.g. production).")
@click.option("--candidate", metavar="VARIANT",
              help="The variant of SPEC to judge (default: its only other variant).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False),
              help="A release-policy YAML file; its rule for LABEL judges (default: the "
                   "release policy the registry holds for the prompt and LABEL).")
@click.option("--require", type=click.Choice(REQUIREMENTS),
              help="Judge by this requirement instead of a policy (with --metric).")
@click.option("--metric", help="The scorer's metric to judge (with --require).")
@click.option("--margin", type=float, help="Non-inferiority margin in the metric's units.")
@click.option("--alpha", type=float, help="One-sided significance level (default 0.05).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False),
              help="Write a JUnit XML report here.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False),
              help="Write a Markdown summary (a pull-request comment) here.")
@click.option("--server", "server_url", envvar="PROMPTREV_SERVER", metavar="URL",
              help="Judge on this promptrev server (its registry, models and runs) "
                   "instead of the local registry [env PROMPTREV_SERVER].")
@click.option("--token", envvar="PROMPTREV_TOKEN", metavar="TOKEN",
              help="API token for --server (an editor's) [env PROMPTREV_TOKEN].")
@click.option("--wait", "wait_s", type=click.IntRange(1, 86_400), default=3600,
              show_default=True, help="With --server: seconds to wait for the run.")
@pass_ctx
def eval_gate(ctx: Context, spec_file: str, label: str, candidate: str | None,
              policy_file: str | None, junit_file: str | None, markdown_file: str | None,
              server_url: str | None, token: str | None, wait_s: int, **explicit) -> None:
    """Judge SPEC's candidate against LABEL's holder; exit 0 if it passes, 1 if not.

    SPEC is an evaluation spec (as for `eval run`). The baseline is its variant whose
    prompt is NAME@LABEL, or, when it has none, a copy of the candidate at NAME@LABEL.
    A finished run of the identical resolved spec is reused instead of run again.
    """
    from promptrev.evaluation import ci_gate

    rule_options = _rule_options(policy_file, explicit)
    with open(spec_file, encoding="utf-8") as fh:
        spec_text = fh.read()
    setup = ci_gate.load_gate(spec_text, spec_file, label, candidate)
    policy = None
    if policy_file is not None:
        with open(policy_file, encoding="utf-8") as fh:
            policy = (fh.read(), policy_file)
    if server_url is not None:
        from .remote_gate import remote_gate

        verdict = remote_gate(server_url, token, wait_s, {
            "spec": spec_text, "baseline": label, "candidate": candidate,
            "policy": policy[0] if policy else None, "rule": rule_options})
        _write(junit_file, verdict["junit"])
        _write(markdown_file, verdict["markdown"])
        _verdict(verdict["report"], verdict["evidence"], verdict["source"],
                 verdict["tokens"], [f"promptrev eval show {verdict['run']} (on the server)",
                                     verdict["url"]])
        return
    with ctx.open() as reg:
        reg.resolve(f"{setup.name}@{label}", "prompt")  # a missing label, named as such
        rule, source = ci_gate.gate_rule(reg, setup, policy=policy, explicit=rule_options)
        evaluator = evaluator_for(ctx, reg)
        resolved, _ = evaluator.resolve(setup.spec)
        run = ci_gate.reusable_run(evaluator.store, resolved)
        reused = run is not None
        if run is not None:
            click.echo(f"reused run {run['id']} (a finished run of the same versions, "
                       "dataset, model, parameters and scorers)", err=True)
        else:
            run_id = evaluator.start(setup.spec, author=ctx.author)
            click.echo(f"evaluation run {run_id}", err=True)
            execute_run(evaluator, run_id)
            run = evaluator.store.run(run_id)
        evidence = ci_gate.judge(evaluator.store, run, rule, setup)
        tokens = _tokens(ctx, reg, evaluator.runner, run, setup)
    links = [f"`promptrev eval show {run['id']}`"]
    url = os.environ.get("PROMPTREV_URL")
    if url:
        links.append(f"{url.rstrip('/')}/eval/{run['id']}")
    _write(junit_file, ci_gate.junit_xml(setup, evidence, rule))
    _write(markdown_file, ci_gate.markdown(setup, run["report"], evidence, rule, tokens,
                                           reused=reused,
                                           links=links))
    _verdict(run["report"], evidence, source, tokens, [link.strip("`") for link in links])


def _verdict(report: dict, evidence: dict, source: str, tokens: dict, links: list[str]
             ) -> None:
    """Print the report and the gate's verdict; exit 1 when it failed."""
    print_report(report, False)
    click.secho(f"\ngate ({source}): {'passed' if evidence['passed'] else 'FAILED'}",
                bold=True, fg="green" if evidence["passed"] else "red")
    click.echo(f"  {evidence['text']}")
    click.echo(f"  tokens, baseline → candidate: {tokens['summary']}")
    click.echo("full report: " + ", ".join(links))
    if not evidence["passed"]:
        raise click.exceptions.Exit(1)


def _rule_options(policy_file: str | None, explicit: dict) -> dict | None:
    """The explicit rule's options, or None to use a policy; usage errors on a mixture."""
    given = {k: v for k, v in explicit.items() if v is not None}
    if not given:
        return None
    if policy_file is not None:
        raise click.UsageError("give --policy, or --require with --metric, not both")
    if "require" not in given or "metric" not in given:
        raise click.UsageError("an explicit rule needs --require and --metric (and --margin "
                               "for non-inferior)")
    return given


def _tokens(ctx: Context, reg, runner, run: dict, setup) -> dict:
    """Prompt tokens and input cost per 1,000 calls, baseline → candidate."""
    from promptrev.evaluation.prices import load_price_table
    from promptrev.evaluation.tokens import version_token_delta

    refs = {v["name"]: v["prompt"] for v in run["spec"]["variants"]}
    return version_token_delta(reg, refs[setup.baseline], refs[setup.candidate],
                               runner=runner,
                               prices=load_price_table(ctx.settings.prices_file))


def _write(path: str | None, text: str) -> None:
    if path is not None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)

"""Shared parts from a terminal: which prompts use a part, and what a change does to them."""

from __future__ import annotations

import click

from promptrev.composition import plain

from .main import Context, emit_json, main, pass_ctx, print_unified


@main.command()
@click.argument("name")
@click.option("--label", "label_name", help="With --to: what moving this label of NAME "
              "would change in the prompts that include NAME@LABEL.")
@click.option("--to", "to", type=int, help="The version the label would move to.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def dependents(ctx: Context, name: str, label_name: str | None, to: int | None,
               as_json: bool) -> None:
    """List the prompts that include NAME, with the version of NAME each one uses.

    \b
    promptrev dependents shared/tone
    promptrev dependents shared/tone --label production --to 4   (impact of the move)
    """
    if (label_name is None) != (to is None):
        raise click.UsageError("--label and --to go together")
    with ctx.open() as reg:
        found = reg.dependents(name)
        impact = reg.label_impact(name, label_name, to) if label_name else None
    if as_json:
        emit_json({"name": name, "dependents": found,
                   **({"impact": plain(impact)} if impact is not None else {})})
        return
    if not found:
        click.echo(f"no prompt includes {name}")
    for dep in found:
        uses = f"uses {name}@{dep['uses']}" if dep["uses"] is not None else \
            click.style(dep["problem"] or "unresolved", fg="red")
        via = f" (through {dep['via']})" if dep["via"] else ""
        pinned = "pinned" if dep["pinned"] else "follows " + (
            f"@{dep['selector']}" if dep["selector"] else "the latest")
        click.echo(f"{click.style(dep['name'] + '@' + str(dep['version']), bold=True)}  "
                   f"{{% include \"{dep['ref']}\" %}}  {pinned}, {uses}{via}")
    if impact is not None:
        print_impact(impact, f"moving {name}@{label_name} to {to}")


def print_impact(impact: list[dict], what: str) -> None:
    """Which dependents render differently, with a rendered diff each."""
    changed = [i for i in impact if i["changed"]]
    click.secho(f"dependents ({what}): {len(changed)} of {len(impact)} render differently",
                bold=True)
    for entry in impact:
        mark = entry.get("skipped") or (click.style("changed", fg="yellow")
                                        if entry["changed"] else "unchanged")
        click.echo(f"  {entry['name']}@{entry['version']}: {mark}")
        if entry["changed"]:
            print_unified(entry["rendered"].unified or "  (an error changed)")

"""``promptrev adapter``: version PEFT adapters (LoRA, soft prompts) in the registry."""

from __future__ import annotations

import json
import os
import shutil

import click

from .main import Context, emit_json, main, pass_ctx


@main.group()
def adapter() -> None:
    """Push, show and pull PEFT adapters (weights kept once, sha256-verified)."""


@adapter.command("push")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Artifact name, e.g. support/tone.")
@click.option("-m", "--message", help="Commit message.")
@click.option("--base", type=int, help="Version this push replaces (stale → conflict).")
@click.option("--description", default=None)
@click.option("--lineage", "lineage_json", default=None,
              help='JSON object recorded in the card, e.g. \'{"dataset": "sentiment@2"}\'.')
@pass_ctx
def adapter_push(ctx: Context, folder: str, name: str, message: str | None, base: int | None,
                 description: str | None, lineage_json: str | None) -> None:
    """Version the PEFT adapter in FOLDER (adapter_config.json + safetensors weights)."""
    lineage = _lineage(lineage_json)
    with ctx.open() as reg:
        ctx.policy.require_write_main(ctx.acting, "pushing an adapter to main")
        version = reg.push_adapter(name, folder, message=message, author=ctx.author, base=base,
                                   lineage=lineage, description=description)
        card = reg.adapter(version.ref).card
    size = card["files"]["adapter_model.safetensors"]["size"]
    click.echo(f"{version.ref}  {card['peft_type']}  base {card['base_model']['name']}  "
               f"weights {size:,} bytes")


@adapter.command("card")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--description", default=None)
@click.option("--lineage", "lineage_json", default=None,
              help='JSON object recorded in the card, e.g. \'{"dataset": "sentiment@2"}\'.')
@click.option("--name", default=None,
              help="Also print where an adapter of this name lives in the registry's tree.")
def adapter_card(folder: str, description: str | None, lineage_json: str | None,
                 name: str | None) -> None:
    """Write FOLDER/adapter.yaml for a PEFT folder in a clone (to push it with git + git-lfs).

    FOLDER is checked as 'adapter push' checks it; nothing is stored.
    """
    from promptrev.adapters import card_of_folder
    from promptrev.model.adapter_cards import CARD, dump_card
    from promptrev.model.artifacts import KINDS
    from promptrev.model.names import validate_name

    if name is not None:
        validate_name(name)

    card = card_of_folder(folder, lineage=_lineage(lineage_json), description=description)
    with open(os.path.join(folder, CARD), "w", encoding="utf-8") as fh:
        fh.write(dump_card(card))
    click.echo(f"{os.path.join(folder, CARD)}  {card['peft_type']}  weights "
               f"{card['files']['adapter_model.safetensors']['size']:,} bytes")
    if name is not None:
        place = KINDS["adapter"].path(name).rsplit("/", 1)[0]
        click.echo(f"adapter {name} lives in {place}/ (its three files, in a clone)")


@adapter.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def adapter_show(ctx: Context, ref: str, as_json: bool) -> None:
    """Print an adapter version's card."""
    with ctx.open() as reg:
        found = reg.adapter(ref)
    if as_json:
        emit_json(found.to_dict())
        return
    click.secho(f"{found.version.ref}  ({found.version.author}, {found.version.time:%Y-%m-%d})",
                bold=True)
    click.echo(reg_text(found.card))


def reg_text(card: dict) -> str:
    """The card as YAML text."""
    from promptrev.model.adapter_cards import dump_card

    return dump_card(card).rstrip()


@adapter.command("pull")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False))
@pass_ctx
def adapter_pull(ctx: Context, ref: str, dest: str) -> None:
    """Write an adapter version to DEST as a folder PEFT can load (weights verified)."""
    with ctx.open() as reg:
        source = reg.adapter_source(ref)
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(source.path):
        shutil.copyfile(os.path.join(source.path, name), os.path.join(dest, name))
    click.echo(f"{source.ref} -> {dest}")


def _lineage(text: str | None) -> dict | None:
    """``--lineage``: a JSON object, or a usage error that says what is wrong."""
    if not text:
        return None
    try:
        lineage = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--lineage") from None
    if not isinstance(lineage, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--lineage")
    return lineage

"""``promptrev export``: prompts out as Prompty, Dotprompt or GitHub Models files."""

from __future__ import annotations

import os

import click

from promptrev.errors import NotFound, ValidationFailed
from promptrev.importing import TESTS_SUFFIX
from promptrev.model.datasets import parse_dataset
from promptrev.model.formats import FORMATS, export

from .main import Context, emit_json, main, pass_ctx


@main.command("export")
@click.argument("ref")
@click.option("--format", "format_name", type=click.Choice(sorted(FORMATS)),
              default="prompty", show_default=True, help="The format to write.")
@click.option("-o", "--out", default=".", show_default=True,
              help="Folder to write into, keeping each name's folders ('-' prints one "
                   "prompt's file).")
@click.option("--dataset", help="With --format prompt.yml: the dataset written as testData "
              f"(default: NAME{TESTS_SUFFIX}, when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@pass_ctx
def export_(ctx: Context, ref: str, format_name: str, out: str, dataset: str | None,
            as_json: bool) -> None:
    """Write prompt REF (name@version, name@label) or every prompt under a folder REF
    (``support/``, or ``.`` for all) in another format; import reads the files back."""
    with ctx.open() as reg:
        targets = _targets(reg, ref)
        if out == "-" and len(targets) != 1:
            raise click.UsageError("-o - prints one prompt; give a folder for several")
        written: dict[str, str] = {}
        notes: list[str] = []
        for name, version_ref in targets:
            snap = reg.get(version_ref, "prompt")
            cases = _cases(reg, name, dataset) if format_name == "prompt.yml" else None
            exported = export(reg.prompt(version_ref), snap.text, name, format_name,
                              cases=cases)
            notes += [f"{name}: {note}" for note in exported.notes]
            folder = os.path.dirname(name)
            paths = [(os.path.join(folder, f), t) for f, t in exported.files.items()]
            for path, text in paths + list(exported.shared.items()):  # parts: from the root
                _inside(name, path)
                if written.get(path, text) != text:
                    raise ValidationFailed(f"two prompts need different files {path} (a "
                                           "partial of the same name?): export them apart")
                written[path] = text
    if out == "-":
        for text in written.values():
            click.echo(text, nl=not text.endswith("\n"))
    else:
        for path, text in written.items():
            target = os.path.join(out, path)
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
        if as_json:
            emit_json({"format": format_name, "files": [os.path.join(out, p) for p in written],
                       "notes": notes})
        else:
            for path in written:
                click.echo(f"wrote  {os.path.join(out, path)}")
    for note in notes:
        click.secho(f"note: {note}", fg="yellow", err=True)


def _inside(name: str, path: str) -> None:
    """Refuse a file path that would leave the output folder: the names in it (partials
    a stored prompt declares) come from whoever saved the prompt. Checked before anything
    is written."""
    parts = path.replace(os.sep, "/").split("/")
    if os.path.isabs(path) or ".." in parts or "" in parts:
        raise ValidationFailed(f"{name}: the export would write {path!r}, outside the output "
                               "folder (a partial whose name has '..' or an absolute path): "
                               "rename the partial; nothing was written")


def _targets(reg, ref: str) -> list[tuple[str, str]]:
    """(name, reference) of the prompt REF names, or of every prompt in folder REF."""
    folder = ref.rstrip("/")
    if not ref.endswith("/") and ref != ".":
        try:
            version = reg.resolve(ref, "prompt")
            return [(version.name, version.ref)]
        except NotFound:
            if "@" in ref:
                raise
    items = [i for i in reg.list(None if folder in ("", ".") else folder, kind="prompt")
             if not i.deleted and (folder in ("", ".") or i.name.startswith(folder + "/"))]
    if not items:
        raise NotFound(f"no prompt named '{folder}' and no prompts under '{folder}/'")
    return [(i.name, f"{i.name}@{i.latest}") for i in items]


def _cases(reg, name: str, dataset: str | None) -> list | None:
    """The cases written as testData: ``dataset``'s, else NAME-tests' when it exists."""
    ref = dataset or name + TESTS_SUFFIX
    try:
        snap = reg.get(ref, "dataset")
    except NotFound:
        if dataset:
            raise
        return None
    return parse_dataset(snap.text, f"{snap.version.name}.jsonl")

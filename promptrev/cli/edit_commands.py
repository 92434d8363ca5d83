"""``promptrev save`` and ``promptrev edit``: new versions from a file or from an editor.

Both guard against lost updates the way the API does (HTTP 428 without ``If-Match``): an
existing artifact is only overwritten by an edit that says which version it started from.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import click

from promptrev.errors import Conflict, NotFound, PreconditionRequired, ValidationFailed
from promptrev.model.artifacts import KINDS, kind_of_file
from promptrev.registry import Registry

from .main import Context, main, pass_ctx, report_error
from .terminal import short_hash, warn

# The comment lines ``edit`` puts above the text after a failed save; removed before saving.
MARK = "# promptrev: "


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", help="Artifact name (default: the file name without suffix).")
@click.option("-m", "--message", help="Commit message.")
@click.option("--base", type=int, help="Version this edit started from (stale: exit 4, "
              "showing what changed since).")
@click.option("--force", is_flag=True, help="Overwrite whatever version is the latest.")
@pass_ctx
def save(ctx: Context, file: str, name: str | None, message: str | None,
         base: int | None, force: bool) -> None:
    """Save FILE as the next version of an artifact.

    Saving over an existing artifact needs the version the edit started from, so that a
    change someone saved in the meantime is never overwritten silently: give --base N
    (if the artifact has moved past N the save is refused with exit 4 and what changed),
    or --force to overwrite whatever is the latest. A new artifact, a deleted one, or a
    file identical to the latest version needs neither. 'promptrev edit NAME' sets the
    base for you. Validation warnings are printed to stderr.
    """
    kind = kind_of_file(file)
    if kind is None:
        raise click.UsageError(f"{file}: expected a .prompty or .jsonl file")
    if force and base is not None:
        raise click.UsageError("--base and --force exclude each other")
    name = name or os.path.basename(file)[: -len(kind.suffix)]
    with open(file, "rb") as fh:
        data = fh.read()
    ctx.policy.require_write_main(ctx.acting, "saving to main")
    with ctx.open() as reg:
        if base is None and not force:
            base = implied_base(reg, name, kind.name, data)
        version = save_version(ctx, reg, name, kind.name, data, base, message)
    click.echo(f"{version.ref}  {short_hash(version.commit)}")


def implied_base(reg: Registry, name: str, kind: str, data: bytes) -> int:
    """The base a save without ``--base`` may safely use, or :class:`PreconditionRequired`.

    0 (create only) for a new artifact, the latest version for a deleted one or for
    content identical to the latest (nothing is overwritten).
    """
    try:
        current = reg.resolve(name, kind)
    except NotFound:
        return 0
    if current.deleted or reg.get(current.ref, kind).text.encode("utf-8") == data:
        return current.number
    raise PreconditionRequired(
        f"{kind} '{name}' exists (latest version {current.number}): say which version your "
        f"edit started from with --base (e.g. --base {current.number}), or overwrite the "
        "latest with --force", details={"current": current.number})


def save_version(ctx: Context, reg: Registry, name: str, kind: str, data: bytes | str,
                 base: int | None, message: str | None):
    """Save one version and print its validation warnings to stderr; return the version."""
    with reg.transaction(message=message or f"save {name}", author=ctx.author) as tx:
        tx.save(name, data, base=base, kind=kind)
    filename = os.path.basename(KINDS[kind].filename(name))
    for warning in tx.warnings:
        warn(warning.describe(filename))
    return tx.result_for(kind, name)


@main.command()
@click.argument("ref")
@click.option("-m", "--message", help="Commit message.")
@pass_ctx
def edit(ctx: Context, ref: str, message: str | None) -> None:
    """Open the latest text of REF in $VISUAL or $EDITOR and save it as a new version.

    The version opened is the base, so a change someone saved meanwhile is never
    overwritten (exit 4; your text is kept in a file to merge). Text that does not
    validate reopens the editor with the problems as comments at the top; leave the file
    unchanged or empty to give up. Saving it unchanged saves nothing.
    """
    ctx.policy.require_write_main(ctx.acting, "saving to main")
    with ctx.open() as reg:
        snap = reg.get(ref)
        version = snap.version
        if KINDS[version.kind].sidecars:
            raise click.UsageError(f"{version.ref} is a folder of files, not one text: "
                                   "change it with 'promptrev adapter push'")
        folder = tempfile.mkdtemp(prefix="promptrev-edit-")
        path = os.path.join(folder, os.path.basename(KINDS[version.kind].filename(
            version.name)))
        made = _edit_until_valid(ctx, reg, version, snap.text, message, path)
    if made is None:
        return
    shutil.rmtree(folder)
    click.echo(f"{made.ref}  {short_hash(made.commit)}")


def _edit_until_valid(ctx: Context, reg: Registry, version, text: str, message: str | None,
                      path: str):
    """Edit and save until the text is valid; None when the user saved nothing.

    The file's folder is removed unless the text is kept there (a failed save).
    """
    shown, problem = text, None
    while True:
        try:
            text = _edited(path, shown, problem)
        except click.ClickException:  # the editor failed: nothing to keep
            shutil.rmtree(os.path.dirname(path))
            raise
        if not text.strip() or text == shown:
            shutil.rmtree(os.path.dirname(path))
            if problem is not None:
                click.echo("nothing saved", err=True)
                report_error(problem)
            why = "no changes" if text.strip() else "empty file"
            click.echo(f"{why}: nothing saved, {version.ref} stays the latest")
            return None
        try:
            return save_version(ctx, reg, version.name, version.kind, text, version.number,
                                message)
        except ValidationFailed as exc:
            shown, problem = text, exc
            click.secho(f"error: {exc.message} (reopening the editor)", fg="red", err=True)
        except Exception as exc:
            _keep(path, text, version.name, exc)
            raise


def _edited(path: str, text: str, problem: ValidationFailed | None) -> str:
    """Run the editor on ``text`` (below the problems as comments); return the text saved."""
    header = ""
    if problem is not None:
        lines = [problem.message] + [
            f"line {p['line']}: {p['message']}" if p.get("line") else p["message"]
            for p in problem.problems[1:]]
        lines += ["fix the text below and save; leave it unchanged or empty to give up",
                  "(these lines are removed; line numbers count from the line after them)"]
        header = "".join(f"{MARK}{line}\n" for line in lines)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(header + text)
    click.edit(filename=path)
    with open(path, encoding="utf-8") as fh:
        edited = fh.read()
    kept = edited.splitlines(keepends=True)
    while kept and kept[0].startswith(MARK.rstrip()):
        kept.pop(0)
    return "".join(kept)


def _keep(path: str, text: str, name: str, exc: BaseException) -> None:
    """Leave the edited text in its file and say how to save it once merged."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    current = exc.details.get("current") if isinstance(exc, Conflict) else None
    again = f" --base {current}" if current else ""
    click.secho(f"your text is kept in {path}; save it with: promptrev save {path} "
                f"--name {name}{again}", fg="yellow", err=True)

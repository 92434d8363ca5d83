"""``promptrev review``: change requests from a terminal (open, list, show, comment,
approve, update, merge, reject).

The CLI works on the registry folder directly, so whoever runs it has the access of the
files: they act as an admin, named by ``--author`` (or git's user.name/email). The rules
come from the same settings as the server's (``PROMPTREV_REQUIRED_APPROVALS``,
``PROMPTREV_MERGE_ROLE``, ``PROMPTREV_PROTECTED_LABELS``).
"""

from __future__ import annotations

import os

import click

from promptrev.accounts import User
from promptrev.errors import PromptrevError
from promptrev.model.artifacts import kind_of_file
from promptrev.reviews import STATUSES, Edit, Reviews

from .main import Context, emit_json, main, pass_ctx, print_unified
from .terminal import short_hash


def _me(ctx: Context) -> User:
    return ctx.acting


def _reviews(ctx: Context, reg) -> Reviews:
    return Reviews(reg, ctx.policy)


def _edits(files: tuple[str, ...], deletes: tuple[str, ...]) -> list[Edit]:
    """``FILE`` (named by its file name) or ``NAME=FILE``; deletions by name."""
    edits = []
    for spec in files:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(spec), spec
        kind = kind_of_file(path)
        if kind is None or kind.sidecars:
            raise click.BadParameter(f"{path}: a change request edits .prompty and .jsonl "
                                     "files")
        if not sep:
            name = name[: -len(kind.suffix)]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {path}: {exc}") from None
        edits.append(Edit(name, text, kind.name))
    edits += [Edit(name, None) for name in deletes]
    return edits


@main.group()
def review() -> None:
    """Change requests: propose edits, review them, merge them into main."""


@review.command("open")
@click.argument("files", nargs=-1)
@click.option("--title", "-t", required=True, help="One line saying what changes.")
@click.option("--description", "-d", default="", help="Why, for the reviewers.")
@click.option("--delete", "deletes", multiple=True, metavar="NAME",
              help="Propose deleting this prompt (repeatable).")
@pass_ctx
def review_open(ctx: Context, files: tuple[str, ...], title: str, description: str,
                deletes: tuple[str, ...]) -> None:
    """Propose FILES (FILE or NAME=FILE) as a change request; main does not change."""
    with ctx.open() as reg:
        req = _reviews(ctx, reg).open(_me(ctx), title, _edits(files, deletes),
                                      description=description)
    click.echo(f"opened change request #{req.number} on {req.branch}")


@review.command("list")
@click.option("--status", type=click.Choice([*STATUSES, "all"]), default="open",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def review_list(ctx: Context, status: str, as_json: bool) -> None:
    """List change requests, newest first."""
    with ctx.open() as reg:
        rows = _reviews(ctx, reg).list(None if status == "all" else status)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    for r in rows:
        click.echo(f"#{r.number:<4} {r.status:<8} {len(r.approvals)}/{r.required_approvals} "
                   f"approvals  {r.author:<12} {r.title}")
    if not rows:
        click.echo(f"no {'' if status == 'all' else status + ' '}change requests")


@review.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def review_show(ctx: Context, number: int, as_json: bool) -> None:
    """A request: its state, comments, conflicts and diff against main."""
    with ctx.open() as reg:
        seen = _reviews(ctx, reg).overview(number)
    if as_json:
        emit_json(seen.to_dict())
        return
    req, changes, conflicts, problems = (seen.request, seen.changes, seen.conflicts,
                                         seen.problems)
    click.echo(f"#{req.number} {req.title}  [{req.status}]")
    click.echo(f"by {req.author} on {req.branch} ({short_hash(req.head)}); approvals "
               f"{len(req.approvals)}/{req.required_approvals}"
               + (f": {', '.join(a['user'] for a in req.approvals)}" if req.approvals else ""))
    others = [name for name in req.contributors if name != req.author]
    if others:  # they made commits of it, so their approvals do not count
        click.echo(f"commits also by {', '.join(others)}")
    if req.description:
        click.echo("\n" + req.description)
    for c in conflicts:
        click.secho(f"conflict with main: {c['path']}", fg="red")
    for p in problems:
        click.secho(f"problem: {p['file']}: {p['message']}", fg="red")
    for change in changes:
        click.echo(f"\n{change.change} {change.kind} {change.name}"
                   + ("  (main changed it since)" if change.main_moved else ""))
        for f in change.diff.fields:
            click.echo(f"  {f.describe()}")
        print_unified(change.diff.text.unified)
    for c in req.comments:
        where = f" on {c['path']}" + (f":{c['line']}" if c["line"] else "") if c["path"] else ""
        click.echo(f"\n{c['author']}{where}: {c['body']}")


@review.command("comment")
@click.argument("number", type=int)
@click.argument("body")
@click.option("--path", default=None, help="File of the request to comment on.")
@click.option("--line", type=int, default=None, help="Line of that file.")
@pass_ctx
def review_comment(ctx: Context, number: int, body: str, path: str | None,
                   line: int | None) -> None:
    """Comment on a request (or on a line of one of its files)."""
    with ctx.open() as reg:
        _reviews(ctx, reg).comment(number, _me(ctx), body, path=path, line=line)
    click.echo(f"commented on #{number}")


@review.command("approve")
@click.argument("number", type=int)
@pass_ctx
def review_approve(ctx: Context, number: int) -> None:
    """Approve a request as it stands now."""
    with ctx.open() as reg:
        req = _reviews(ctx, reg).approve(number, _me(ctx))
    click.echo(f"approved #{number} ({len(req.approvals)}/{req.required_approvals})")


@review.command("update")
@click.argument("number", type=int)
@click.argument("files", nargs=-1)
@click.option("-m", "--message", required=True, help="What this update changes.")
@click.option("--delete", "deletes", multiple=True, metavar="NAME")
@pass_ctx
def review_update(ctx: Context, number: int, files: tuple[str, ...], message: str,
                  deletes: tuple[str, ...]) -> None:
    """Add edits to a request (resolving conflicts with main when it moved on)."""
    with ctx.open() as reg:
        req = _reviews(ctx, reg).update(number, _me(ctx), _edits(files, deletes), message)
    click.echo(f"updated #{number} to {short_hash(req.head)}; approvals start again")


@review.command("merge")
@click.argument("number", type=int)
@pass_ctx
def review_merge(ctx: Context, number: int) -> None:
    """Merge a request into main."""
    with ctx.open() as reg:
        try:
            req = _reviews(ctx, reg).merge(number, _me(ctx))
        except PromptrevError as exc:
            for c in exc.details.get("conflicts", []) if isinstance(exc.details, dict) else []:
                click.secho(f"conflict: {c['path']}", fg="red", err=True)
            raise
    commit = short_hash(req.merge_commit)
    click.echo(f"merged #{number} into main as {commit}"
               + (f": {', '.join(req.versions)}" if req.versions else ""))


@review.command("reject")
@click.argument("number", type=int)
@click.option("--reason", default="", help="Why, for the author.")
@pass_ctx
def review_reject(ctx: Context, number: int, reason: str) -> None:
    """Close a request without merging it."""
    with ctx.open() as reg:
        _reviews(ctx, reg).reject(number, _me(ctx), reason)
    click.echo(f"rejected #{number}")

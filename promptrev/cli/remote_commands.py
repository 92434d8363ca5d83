"""``promptrev remote``, ``pull``, ``push`` and ``sync``: follow a team's Git remote."""

from __future__ import annotations

import sys
import time

import click

from promptrev import remotes
from promptrev.errors import PromptrevError

from .main import Context, emit_json, main, pass_ctx
from .terminal import short_hash


@main.group()
def remote() -> None:
    """Add, list and remove the Git remotes the registry follows."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--branch", default=remotes.DEFAULT_BRANCH, show_default=True,
              help="The remote's branch that mirrors main.")
@pass_ctx
def remote_add(ctx: Context, name: str, url: str, branch: str) -> None:
    """Follow the Git repository at URL as NAME (credentials: whatever git uses)."""
    with ctx.open() as reg:
        added = remotes.add(reg, name, url, branch=branch)
    click.echo(f"added remote {added.name}: {added.display_url} (branch {added.branch})")


@remote.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def remote_list(ctx: Context, as_json: bool) -> None:
    """List remotes (passwords in URLs are shown as ***)."""
    with ctx.open() as reg:
        found = remotes.list(reg)
    if as_json:
        emit_json([r.to_dict() for r in found])
        return
    for r in found:
        click.echo(f"{r.name}\t{r.display_url}\t(branch {r.branch})")


@remote.command("remove")
@click.argument("name")
@pass_ctx
def remote_remove(ctx: Context, name: str) -> None:
    """Stop following remote NAME."""
    with ctx.open() as reg:
        remotes.remove(reg, name)
    click.echo(f"removed remote {name}")


@main.command()
@click.argument("name", default=remotes.DEFAULT_REMOTE, metavar="[REMOTE]")
@click.option("--merge", is_flag=True,
              help="When both sides have new commits, merge them in one merge commit.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def pull(ctx: Context, name: str, merge: bool, as_json: bool) -> None:
    """Bring main up to the remote's branch; print the versions that arrived."""
    with ctx.open() as reg:
        ctx.policy.require_write_main(ctx.acting, "pulling into main")
        result = remotes.pull(reg, name, merge=merge, author=ctx.author,
                              interactive=sys.stdin.isatty(),
                              acting=(ctx.policy, ctx.acting))
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_pull(result)


@main.command()
@click.argument("name", default=remotes.DEFAULT_REMOTE, metavar="[REMOTE]")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def push(ctx: Context, name: str, as_json: bool) -> None:
    """Push main to the remote's branch (never forced: pull first if it moved)."""
    with ctx.open() as reg:
        result = remotes.push(reg, name, interactive=sys.stdin.isatty())
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_push(result)


@main.command()
@click.argument("name", default=remotes.DEFAULT_REMOTE, metavar="[REMOTE]")
@click.option("--merge", is_flag=True, help="Merge when both sides have new commits.")
@click.option("--every", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Keep syncing, this many seconds apart (stop with Ctrl-C).")
@click.option("--times", type=click.IntRange(min=1), default=None,
              help="With --every: stop after this many rounds.")
@pass_ctx
def sync(ctx: Context, name: str, merge: bool, every: float | None,
         times: int | None) -> None:
    """Pull, then push; with --every, again and again (errors are reported, not fatal)."""
    if every is None:
        _sync_once(ctx, name, merge, interactive=sys.stdin.isatty())
        return
    rounds = 0
    failed = False
    try:
        while True:
            try:
                _sync_once(ctx, name, merge, interactive=False)
                failed = False
            except PromptrevError as exc:
                click.secho(f"error: {exc.message}", fg="red", err=True)
                failed = True
            rounds += 1
            if times is not None and rounds >= times:
                break
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    if failed:
        sys.exit(1)


def _sync_once(ctx: Context, name: str, merge: bool, *, interactive: bool) -> None:
    with ctx.open() as reg:
        ctx.policy.require_write_main(ctx.acting, "syncing main")
        result = remotes.sync(reg, name, merge=merge, author=ctx.author,
                              interactive=interactive, acting=(ctx.policy, ctx.acting))
    _print_pull(result.pull)
    _print_push(result.push)


def _print_pull(result: remotes.PullResult) -> None:
    where = result.remote.where
    if not result.changed:
        click.echo(f"pull {where}: up to date")
        return
    click.echo(f"pull {where}: {result.action}, main {_short(result.old)} -> "
               f"{_short(result.new)}, {len(result.versions)} version(s)"
               + (f", {result.objects} weights file(s)" if result.objects else ""))
    for v in result.versions:
        what = " (deleted)" if v.deleted else ""
        subject = v.message.splitlines()[0] if v.message else ""
        click.echo(f"  {v.ref}{what} by {v.author} <{v.email}>: {subject}")
    for move in result.label_moves:
        click.echo(f"  label {move.describe()}")


def _print_push(result: remotes.PushResult) -> None:
    where = result.remote.where
    if result.action == "up to date":
        click.echo(f"push {where}: up to date")
        return
    click.echo(f"push {where}: {result.action}, {_short(result.old)} -> {_short(result.new)}, "
               f"{len(result.commits)} commit(s)"
               + (f", {result.objects} weights file(s)" if result.objects else ""))
    for commit in result.commits[:20]:
        click.echo(f"  {short_hash(commit['sha'])} {commit['message']} ({commit['author']})")
    if len(result.commits) > 20:
        click.echo(f"  ... and {len(result.commits) - 20} more")


def _short(sha: str | None) -> str:
    return short_hash(sha) if sha else "(none)"

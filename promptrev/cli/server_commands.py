"""``promptrev serve``, ``user`` and ``token``: the server and its accounts from a terminal."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import replace
from datetime import datetime, timezone

import click

from promptrev.accounts import ROLES, SCOPES, Accounts

from .main import Context, emit_json, main, pass_ctx
from .terminal import warn


def _accounts(ctx: Context) -> Accounts:
    if not os.path.exists(os.path.join(ctx.path, "HEAD")):
        raise click.ClickException(f"no registry at {ctx.path} (create one with "
                                   "'promptrev init' or start 'promptrev serve')")
    return Accounts(ctx.settings.with_accounts().accounts_url)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "-w", type=int, default=None,
              help="gunicorn worker processes (default: 2 x cores + 1, at most 8).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Request threads per worker (default: PROMPTREV_THREADS or 64).")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader.")
@click.option("--anonymous-read", is_flag=True, default=None,
              help="Let anyone read without logging in (writes still need an account).")
@click.option("--access-log", is_flag=True, help="Log every request to stdout.")
@pass_ctx
def serve(ctx: Context, host: str, port: int, workers: int | None, threads: int | None,
          dev: bool, anonymous_read: bool | None, access_log: bool) -> None:
    """Run the server (web pages + JSON API) on the registry, creating it if needed.

    A new registry is seeded from ./prompts (PROMPTREV_SEED); the first start creates
    an 'admin' account with the password in PROMPTREV_ADMIN_PASSWORD, or a random one
    that is printed once.
    """
    from promptrev.server import prepare
    from promptrev.server.serve import run

    settings = replace(ctx.settings, anonymous_read=anonymous_read or ctx.settings.anonymous_read)
    done = prepare(settings, admin_password=os.environ.get("PROMPTREV_ADMIN_PASSWORD"))
    if done.created_registry:
        click.echo(f"created registry {ctx.path}")
    if done.promoted:
        click.echo(f"{ctx.path} was a read replica; it takes writes now (no PROMPTREV_PRIMARY)")
    if settings.primary:
        if done.replica_error:
            warn(f"read replica of {settings.primary}: cannot copy its main yet "
                 f"({done.replica_error}); serving the last copy, refusing writes")
        else:
            click.echo(f"read replica of {settings.primary} at "
                       f"{(done.replica_head or 'an empty main')[:12]}")
    if done.seeded:
        click.echo(f"imported {done.seeded} artifacts from {settings.seed_from}")
    if done.admin_password:
        click.secho("created user 'admin' (role admin) with password:  "
                    f"{done.admin_password}", fg="yellow", bold=True)
        click.echo("  change it with: promptrev user set admin --password")
    mode = "anonymous reads allowed" if done.settings.anonymous_read else "login required"
    click.echo(f"serving {ctx.path} on http://{host}:{port}/ ({mode})")
    sys.stdout.flush()
    run(done.settings, host=host, port=port, workers=workers, threads=threads, dev=dev,
        access_log=access_log)


@main.command()
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Runs executed at once (default: PROMPTREV_QUEUE_THREADS or 4).")
@click.option("--stop-with", type=int, default=None, hidden=True,
              help="Stop when the process with this id is gone (promptrev serve's own).")
@pass_ctx
def worker(ctx: Context, threads: int | None, stop_with: int | None) -> None:
    """Execute queued work (evaluation runs started on the server) until stopped.

    The queue is PROMPTREV_QUEUE: a SQLite file inside the registry by default (the
    worker 'promptrev serve' starts shares it), or redis://... or postgresql://... for
    workers on other machines. A run whose worker dies is resumed by another one.
    """
    import logging

    from promptrev.jobs import Worker, queue_where

    if not os.path.exists(os.path.join(ctx.path, "HEAD")):
        raise click.ClickException(f"no registry at {ctx.path} (create one with "
                                   "'promptrev init' or start 'promptrev serve')")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("huey").setLevel(logging.WARNING)
    job_worker = Worker(ctx.settings, threads=threads, stop_with=stop_with)
    click.echo(f"worker {job_worker.name} on {queue_where(job_worker.settings.queue_url)} "
               f"({job_worker.threads} at once)")
    sys.stdout.flush()
    job_worker.run()


@main.group()
def user() -> None:
    """Manage accounts (roles: viewer, editor, admin)."""


def _password(value: str | None, generate: bool) -> tuple[str | None, bool]:
    if value == "-":
        return sys.stdin.readline().rstrip("\n"), False
    if value:
        return value, False
    if generate:
        return secrets.token_urlsafe(12), True
    return None, False


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="editor", show_default=True)
@click.option("--email", default=None)
@click.option("--password", default=None,
              help="Password ('-' reads it from stdin; default: a random one, printed once).")
@pass_ctx
def user_add(ctx: Context, name: str, role: str, email: str | None,
             password: str | None) -> None:
    """Create a user."""
    secret, generated = _password(password, generate=True)
    accounts = _accounts(ctx)
    try:
        created = accounts.add_user(name, role, email=email, password=secret)
    finally:
        accounts.close()
    click.echo(f"created user '{created.name}' ({created.role})")
    if generated:
        click.echo(f"password: {secret}")


@user.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None)
@click.option("--password", default=None, is_flag=False, flag_value="",
              help="New password ('-' reads stdin; no value: a random one, printed once).")
@click.option("--disable/--enable", default=None, help="Refuse or allow this user's logins.")
@pass_ctx
def user_set(ctx: Context, name: str, role: str | None, password: str | None,
             disable: bool | None) -> None:
    """Change a user's role, password or state."""
    secret, generated = (None, False) if password is None else _password(password or None,
                                                                            True)
    accounts = _accounts(ctx)
    try:
        changed = accounts.update_user(name, role=role, password=secret, disabled=disable)
    finally:
        accounts.close()
    click.echo(f"{changed.name}: {changed.role}" + (" (disabled)" if changed.disabled else ""))
    if generated:
        click.echo(f"password: {secret}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def user_list(ctx: Context, as_json: bool) -> None:
    """List users."""
    accounts = _accounts(ctx)
    try:
        users = accounts.users()
    finally:
        accounts.close()
    if as_json:
        emit_json([u.to_dict() for u in users])
        return
    for u in users:
        click.echo(f"{u.name:<20} {u.role:<7} {u.email}" + ("  (disabled)" if u.disabled else ""))


@main.group()
def token() -> None:
    """Manage API tokens (shown once, stored hashed)."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--label", default="cli", show_default=True, help="What the token is for.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Grant the token more than USER's role: 'outcomes' lets an application "
                   "post A/B outcomes (repeatable).")
@pass_ctx
def token_create(ctx: Context, user_name: str, label: str, scopes: tuple[str, ...]) -> None:
    """Create a token for USER and print it (the only time it is shown)."""
    accounts = _accounts(ctx)
    try:
        secret, info = accounts.create_token(user_name, label, scopes)
    finally:
        accounts.close()
    click.echo(secret)
    granted = f", scopes: {', '.join(info.scopes)}" if info.scopes else ""
    click.echo(f"token {info.id} for {info.user} ({info.label}{granted}); it is not shown "
               "again", err=True)


@token.command("list")
@click.argument("user_name", metavar="USER", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def token_list(ctx: Context, user_name: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    accounts = _accounts(ctx)
    try:
        tokens = accounts.tokens(user_name)
    finally:
        accounts.close()
    if as_json:
        emit_json([t.to_dict() for t in tokens])
        return
    for t in tokens:
        created = datetime.fromtimestamp(t.created, timezone.utc).strftime("%Y-%m-%d")
        state = "revoked" if t.revoked else "active"
        scopes = f"  [{', '.join(t.scopes)}]" if t.scopes else ""
        click.echo(f"{t.id:>4}  {t.prefix}…  {t.user:<16} {state:<8} {created}  {t.label}"
                   f"{scopes}")


@token.command("revoke")
@click.argument("token_id", type=int)
@pass_ctx
def token_revoke(ctx: Context, token_id: int) -> None:
    """Revoke a token by id (see 'promptrev token list')."""
    accounts = _accounts(ctx)
    try:
        info = accounts.revoke_token(token_id)
    finally:
        accounts.close()
    click.echo(f"revoked token {info.id} of {info.user}")


@main.command()
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def audit(ctx: Context, limit: int, as_json: bool) -> None:
    """Every write, label move and rollback, newest first."""
    with ctx.open() as reg:
        entries = reg.audit(limit)
    if as_json:
        emit_json([e.to_dict() for e in entries])
        return
    for e in entries:
        what = ", ".join(f"{v['name']}@{v['version']}" for v in e.versions[:3])
        what += "".join(f" {m['name']}:{m['label']}->{m['to'] or '-'}" for m in e.label_moves)
        click.echo(f"{e.time:%Y-%m-%d %H:%M}  {e.action:<11} {e.author}  {what}  {e.message}")

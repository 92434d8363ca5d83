"""``promptrev replica follow|status``: a read replica's follower, and what it last saw."""

from __future__ import annotations

import signal

import click

from .main import Context, emit_json, main, pass_ctx


@main.group()
def replica() -> None:
    """Read replicas: follow the primary named by PROMPTREV_PRIMARY."""


@replica.command("follow")
@click.option("--stop-with", type=int, default=None, hidden=True,
              help="Exit when this process (the server) is gone.")
@pass_ctx
def follow(ctx: Context, stop_with: int | None) -> None:
    """Copy the primary's main into this registry as it moves, until stopped.

    'promptrev serve' runs this itself when PROMPTREV_PRIMARY is set; run it alone to keep
    a registry folder in step with a primary without serving it.
    """
    from promptrev.replication import Follower

    settings = ctx.settings
    if not settings.primary:
        raise click.UsageError("PROMPTREV_PRIMARY is not set: name the primary to follow "
                               "(e.g. PROMPTREV_PRIMARY=http://primary:8080)")
    follower = Follower(ctx.path, primary=settings.primary, token=settings.primary_token,
                        index_url=settings.index_url, max_bytes=settings.max_bytes,
                        wait=settings.replication_wait)

    def stop(*_) -> None:
        follower.stop.set()
        raise SystemExit(0)  # also ends a long-poll in progress

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    follower.run(parent=stop_with)


@replica.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """What the follower last saw: the primary, the commit copied, whether it answered."""
    from dataclasses import asdict

    from promptrev.replication import read_status

    found = read_status(ctx.path)
    if as_json:
        emit_json(asdict(found) if found else None)
        return
    if found is None:
        click.echo("not a replica (or its follower has not run yet)")
        return
    state = "reachable" if found.reachable else found.stale
    click.echo(f"replica of {found.primary} at {(found.head or 'nothing')[:12]}: {state}"
               + (f" ({found.error})" if found.error else ""))

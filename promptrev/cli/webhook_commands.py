"""``promptrev webhook``: add, list and remove webhooks, read their deliveries, deliver."""

from __future__ import annotations

import sys

import click

from promptrev.webhook_targets import TargetPolicy
from promptrev.webhooks import Deliverer, RetryPolicy, Webhooks, event_patterns

from .main import Context, emit_json, main, pass_ctx


@main.group()
def webhook() -> None:
    """Call URLs (HMAC-signed, retried) when versions are saved, labels move, and more.

    \b
    Events: version.saved, label.moved, rollback, change_request.opened,
    change_request.merged, change_request.rejected ('*' for all, or a family
    such as 'change_request.*').

    \b
    Targets must be public addresses: loopback, private, link-local and other
    non-public addresses are refused when a hook is added and when it is
    delivered, unless PROMPTREV_WEBHOOK_ALLOW_PRIVATE=1 (not link-local) or
    PROMPTREV_WEBHOOK_ALLOW_NETWORKS=10.0.0.0/8,... allow them.
    """


def _targets(ctx: Context) -> TargetPolicy:
    """Where this server's webhooks may go (PROMPTREV_WEBHOOK_ALLOW_PRIVATE, _NETWORKS)."""
    return TargetPolicy.from_settings(ctx.settings)


@webhook.command("add")
@click.argument("url")
@click.option("--secret", default=None,
              help="HMAC key of the signatures (default: a random one, printed once).")
@click.option("--event", "-e", "events", multiple=True,
              type=click.Choice(event_patterns()), help="An event to send (repeatable; "
              "default: every event).")
@click.option("--disabled", is_flag=True, help="Add it switched off.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def webhook_add(ctx: Context, url: str, secret: str | None, events: tuple[str, ...],
                disabled: bool, as_json: bool) -> None:
    """Call URL when one of the events happens."""
    with ctx.open() as reg:
        ctx.policy.require(ctx.acting, "manage_webhooks", "managing webhooks")
        hook = Webhooks(reg, targets=_targets(ctx)).add(
            url, events=list(events) or None, secret=secret, created_by=ctx.author,
            active=not disabled)
    if as_json:
        emit_json(hook)
        return
    click.echo(f"added webhook {hook['id']}: {hook['url']} ({', '.join(hook['events'])})")
    if secret is None:
        click.secho(f"secret (shown once; receivers verify signatures with it):  "
                    f"{hook['secret']}", fg="yellow", bold=True)


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def webhook_list(ctx: Context, as_json: bool) -> None:
    """Show every webhook."""
    with ctx.open() as reg:
        hooks = Webhooks(reg).list()
    if as_json:
        emit_json(hooks)
        return
    for h in hooks:
        state = "" if h["active"] else "  (disabled)"
        click.echo(f"{h['id']:>4}  {h['url']}  {','.join(h['events'])}{state}")


@webhook.command("rm")
@click.argument("hook_id", type=int)
@pass_ctx
def webhook_rm(ctx: Context, hook_id: int) -> None:
    """Remove a webhook and its delivery log."""
    with ctx.open() as reg:
        Webhooks(reg).remove(hook_id)
    click.echo(f"removed webhook {hook_id}")


@webhook.command("disable")
@click.argument("hook_id", type=int)
@pass_ctx
def webhook_disable(ctx: Context, hook_id: int) -> None:
    """Stop sending to a webhook (pending deliveries wait until it is enabled)."""
    with ctx.open() as reg:
        Webhooks(reg).set_active(hook_id, False)
    click.echo(f"disabled webhook {hook_id}")


@webhook.command("enable")
@click.argument("hook_id", type=int)
@pass_ctx
def webhook_enable(ctx: Context, hook_id: int) -> None:
    """Send to a disabled webhook again."""
    with ctx.open() as reg:
        Webhooks(reg, targets=_targets(ctx)).set_active(hook_id, True)
    click.echo(f"enabled webhook {hook_id}")


@webhook.command("deliveries")
@click.option("--hook", "hook_id", type=int, default=None, help="One webhook's deliveries.")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]), default=None)
@click.option("--event", default=None, help="Only this event.")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Everything, with bodies and attempts.")
@pass_ctx
def webhook_deliveries(ctx: Context, hook_id: int | None, status: str | None,
                       event: str | None, limit: int, as_json: bool) -> None:
    """Show recent deliveries, newest first, with every attempt."""
    with ctx.open() as reg:
        found = Webhooks(reg).deliveries(webhook_id=hook_id, status=status,
                                                event=event, limit=limit)
    if as_json:
        emit_json(found)
        return
    for d in found:
        again = f"  (again of {d['redelivery_of']})" if d["redelivery_of"] else ""
        click.echo(f"{d['id']:>5}  hook {d['webhook_id']}  {d['event']:<24} {d['status']:<9} "
                   f"{d['attempts']} attempt(s)  {d['created'][:19]}{again}")
        for a in d["attempt_log"]:
            answer = a["status_code"] if a["status_code"] is not None else a["error"]
            click.echo(f"         #{a['number']} {a['started'][11:19]}  {answer}  "
                       f"{a['duration_ms']:.0f} ms")


@webhook.command("redeliver")
@click.argument("delivery_id", type=int)
@pass_ctx
def webhook_redeliver(ctx: Context, delivery_id: int) -> None:
    """Queue a delivery's body to be sent again (run 'webhook deliver' or the server)."""
    with ctx.open() as reg:
        new = Webhooks(reg).redeliver(delivery_id)
    click.echo(f"queued delivery {new['id']} (again of {delivery_id})")


@webhook.command("deliver")
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.option("--poll", type=float, default=None,
              help="Seconds between looks for due deliveries (PROMPTREV_WEBHOOK_POLL, 2).")
@pass_ctx
def webhook_deliver(ctx: Context, once: bool, poll: float | None) -> None:
    """Send due deliveries from this terminal (for setups without 'promptrev serve').

    Retries follow PROMPTREV_WEBHOOK_RETRY_BASE, _RETRY_CAP, _MAX_ATTEMPTS and _TIMEOUT.
    """
    settings = ctx.settings  # the server's settings, read as 'serve' reads them
    poll = poll if poll is not None else settings.webhook_poll
    with ctx.open() as reg:
        deliverer = Deliverer(reg, retry=RetryPolicy.from_settings(settings),
                              timeout=settings.webhook_timeout,
                              targets=TargetPolicy.from_settings(settings))
        if once:
            total = 0
            while True:  # every batch that is due now, not only the first
                sent = deliverer.run_once()
                total += sent
                if sent < deliverer.batch:
                    break
            deliverer.close()
            click.echo(f"{total} attempt(s)")
            return
        click.echo(f"delivering webhooks from {ctx.path} (Ctrl-C to stop)")
        sys.stdout.flush()
        try:
            deliverer.run(poll)
        except KeyboardInterrupt:
            deliverer.close()



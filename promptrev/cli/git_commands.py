"""``promptrev hook``: the receive hooks that ``git http-backend`` runs on a push.

Hidden: the server's Git endpoint (``promptrev/server/git_http.py``) starts these through the
scripts in ``promptrev/server/githooks/``, with the pusher, the policy and the registry in
``PROMPTREV_*`` variables. Git shows whatever they print as ``remote: ...``; a refusal
exits 1, which makes Git refuse every ref of the push.
"""

from __future__ import annotations

import os
import sys

import click

from promptrev.accounts import User
from promptrev.errors import PromptrevError
from promptrev.policy import Policy
from promptrev.receive import (
    after_push,
    check_push,
    note_pushers,
    parse_updates,
    read_pushed_objects,
)

from .main import Context, main, pass_ctx


@main.group(hidden=True)
def hook() -> None:
    """Git receive hooks of the server's Git endpoint (run by git, not by people)."""


def _pusher() -> User:
    env = os.environ
    name = env.get("PROMPTREV_PUSHER")
    if not name:
        raise click.ClickException("PROMPTREV_PUSHER is not set: these hooks run under "
                                   "the server's Git endpoint only")
    return User(int(env.get("PROMPTREV_PUSHER_ID", "0")), name,
                env.get("PROMPTREV_PUSHER_EMAIL", f"{name}@localhost"),
                env.get("PROMPTREV_PUSHER_ROLE", "viewer"))


def _quarantine() -> list[str]:
    env = os.environ
    folders = [env.get("GIT_QUARANTINE_PATH", ""), env.get("GIT_OBJECT_DIRECTORY", "")]
    return [f for f in dict.fromkeys(folders) if f]


def _fail(exc: PromptrevError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(1)


def _fail_unexpectedly(exc: Exception, what: str) -> None:
    """One ``remote:`` line for a failure nobody planned for: never a traceback to a pusher."""
    if isinstance(exc, RecursionError):
        reason = "something in it is nested too deeply (a YAML alias that contains itself?)"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    click.echo(f"error: {what}: {reason}", err=True)
    sys.exit(1)


@hook.command("pre-receive")
@pass_ctx
def pre_receive(ctx: Context) -> None:
    """Refuse the push (exit 1) unless every ref update is allowed and valid."""
    try:
        updates = parse_updates(sys.stdin)
        with ctx.open() as reg:
            read_pushed_objects(reg, _quarantine())
            check_push(reg, Policy.from_settings(ctx.settings), _pusher(), updates)
            note_pushers(reg, _pusher(), updates)
    except PromptrevError as exc:
        _fail(exc)
    except click.ClickException:
        raise
    except Exception as exc:  # a push that cannot be checked is refused
        _fail_unexpectedly(exc, "the push was refused: it could not be checked")


@hook.command("post-receive")
@pass_ctx
def post_receive(ctx: Context) -> None:
    """Update the index and change requests after the refs moved."""
    try:
        updates = parse_updates(sys.stdin)
        with ctx.open() as reg:
            lines = after_push(reg, Policy.from_settings(ctx.settings), _pusher(), updates,
                               os.environ.get("PROMPTREV_BASE_URL", ""))
    except PromptrevError as exc:
        _fail(exc)  # the refs moved already; the message still reaches the pusher
    except click.ClickException:
        raise
    except Exception as exc:  # the pusher gets one line, never a traceback
        _fail_unexpectedly(exc, "the push was accepted, but updating the index and change "
                           "requests after it failed")
    for line in lines:
        click.echo(line)

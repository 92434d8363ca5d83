"""``promptrev`` commands. Thin: parse arguments, call the core, print.

This is an edge, so it is where the environment is read: once, into
:class:`promptrev.config.Settings` (``PROMPTREV_REGISTRY``, ``PROMPTREV_INDEX_URL``,
``PROMPTREV_AUTHOR``, ``PROMPTREV_MAX_BYTES`` and the server's variables). Errors of the
core are turned into a message and an exit code in one place, :class:`PromptrevGroup`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import click

from promptrev import errors
from promptrev.accounts import User, operator
from promptrev.config import DEFAULT_REGISTRY, Settings
from promptrev.errors import PromptrevError
from promptrev.importing import import_path
from promptrev.model import render_budget
from promptrev.model.artifacts import KINDS, placed
from promptrev.model.names import validate_name
from promptrev.model.render_budget import RenderLimits
from promptrev.policy import Policy
from promptrev.registry import Registry, configure_durability

from .exit_codes import EPILOG, exit_code
from .terminal import columns, short_hash, warn


class Context:
    """Options shared by every command, and the settings they select."""

    def __init__(self, path: str, index_url: str | None, author: str | None):
        self.path = path
        self.index_url = index_url
        self._author = author
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings from the environment, with the command line's options over them."""
        if self._settings is None:
            self._settings = Settings.from_env(os.environ, registry=self.path,
                                               index_url=self.index_url, author=self._author)
        return self._settings

    @property
    def max_bytes(self) -> int:
        """Largest artifact file accepted (PROMPTREV_MAX_BYTES)."""
        return self.settings.max_bytes

    @property
    def policy(self) -> Policy:
        """The registry's rules, as the server applies them (PROMPTREV_PROTECTED_LABELS…)."""
        return Policy.from_settings(self.settings)

    @property
    def acting(self) -> User:
        """The account commands act as: the local operator, an admin (see ``--author``)."""
        return operator(self.author)

    def open(self) -> Registry:
        """Open the registry named by ``--registry``."""
        return Registry.open(self.path, index_url=self.index_url, max_bytes=self.max_bytes)

    @property
    def author(self) -> str:
        """``--author``, else PROMPTREV_AUTHOR, else git's user.name/email, else $USER."""
        if self.settings.author:
            return self.settings.author
        name, email = _git_config("user.name"), _git_config("user.email")
        if name and email:
            return f"{name} <{email}>"
        user = os.environ.get("USER") or "promptrev"
        return f"{name or user} <{email or user + '@localhost'}>"


def _git_config(key: str) -> str | None:
    try:
        out = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def report_error(exc: PromptrevError) -> None:
    """Print a core error for a person, with its problems and diff, and exit with its code
    (:mod:`promptrev.cli.exit_codes`)."""
    click.secho(f"error: {exc.message}", fg="red", err=True)
    for problem in exc.details.get("problems", [])[1:]:
        where = problem.get("file", "")
        if problem.get("line"):
            where += f", line {problem['line']}"
        click.echo(f"  {where}: {problem.get('message')}", err=True)
    if exc.details.get("diff"):
        click.echo(exc.details["diff"], err=True)
    sys.exit(exit_code(exc))


class PromptrevGroup(click.Group):
    """The one translation point from core errors to terminal output and exit codes.

    Every command, in every subgroup, runs inside the root group's ``invoke``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a :class:`PromptrevError` becomes a message and its exit code."""
        try:
            return super().invoke(ctx)
        except PromptrevError as exc:
            report_error(exc)
        except OSError as exc:  # a file the command was given, or a full disk
            where = f": {exc.filename}" if exc.filename else ""
            click.secho(f"error: {exc.strerror or exc}{where}", fg="red", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a defect: say so in one line; the trace on request
            explained = errors.explain(exc)
            if explained is not None:
                report_error(explained)
            if os.environ.get("PROMPTREV_DEBUG"):
                raise
            click.secho(f"error: internal error ({type(exc).__name__}: {exc}); run again "
                        "with PROMPTREV_DEBUG=1 for the traceback and report it", fg="red",
                        err=True)
            sys.exit(1)


def emit_json(data: Any) -> None:
    """Print JSON (the ``--json`` output of read commands)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def parse_vars(pairs: tuple[str, ...], vars_file: str | None) -> dict[str, Any]:
    """``--var k=v`` (``k=@file`` reads a file) merged over ``--vars FILE.json``."""
    values: dict[str, Any] = {}
    if vars_file:
        with open(vars_file, encoding="utf-8") as fh:
            values.update(json.load(fh))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--var")
        if value.startswith("@"):
            with open(value[1:], encoding="utf-8") as fh:
                value = fh.read()
        values[key] = value
    return values


@click.group(cls=PromptrevGroup, epilog=EPILOG)
@click.option("--registry", "-r", envvar="PROMPTREV_REGISTRY", default=DEFAULT_REGISTRY,
              show_default=True, help="Path of the registry (a bare Git repository).")
@click.option("--index-url", envvar="PROMPTREV_INDEX_URL", default=None,
              help="SQLAlchemy URL of the index (default: SQLite inside the registry).")
@click.option("--author", default=None, help="'Name <email>' recorded on commits.")
@click.version_option(package_name="promptrev")
@click.pass_context
def main(ctx: click.Context, registry: str, index_url: str | None, author: str | None) -> None:
    """Prompt registry and version control on Git."""
    ctx.obj = Context(registry, index_url, author)
    if os.environ.get("NO_COLOR"):  # https://no-color.org; click colours only on a TTY
        ctx.color = False
    render_budget.configure(RenderLimits.from_settings(ctx.obj.settings))
    configure_durability(ctx.obj.settings.durability)  # every write of this process


pass_ctx = click.make_pass_decorator(Context)


@main.command()
@pass_ctx
def init(ctx: Context) -> None:
    """Create a new, empty registry."""
    Registry.init(ctx.path, index_url=ctx.index_url, author=ctx.author).close()
    click.echo(f"initialized registry in {ctx.path}")


@main.command(name="import")
@click.argument("path", type=click.Path(exists=True))
@click.option("-m", "--message", help="Commit message.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--eval-specs", "spec_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder for the evaluation specs made from the "
              "evaluators of .prompt.yml files.")
@click.option("--base", metavar="COMMIT", help="Commit the files were exported or checked "
              "out from: existing artifacts are overwritten only if unchanged since (exit 4).")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts whatever their "
              "latest version.")
@pass_ctx
def import_(ctx: Context, path: str, message: str | None, as_json: bool,
            spec_dir: str, base: str | None = None, force: bool = False) -> None:
    """Import a folder (or one file) of .prompty, .jsonl, Dotprompt .prompt and GitHub
    Models .prompt.yml files in one commit.

    Files that would change existing artifacts need --base COMMIT or --force, as 'save'
    needs --base or --force: nothing is overwritten silently (exit 4, naming them).
    """
    if force and base is not None:
        raise click.UsageError("--base and --force exclude each other")
    ctx.policy.require_write_main(ctx.acting, "importing into main")
    with ctx.open() as reg:
        report = import_path(reg, path, message=message, author=ctx.author, base=base,
                             force=force)
    written = _write_eval_specs(report.evaluations, spec_dir)
    if as_json:
        emit_json({**report.to_dict(), "eval_spec_files": written})
        return
    for label, names in (("created", report.created), ("updated", report.updated),
                         ("unchanged", report.unchanged)):
        for name in names:
            click.echo(f"{label:9}  {name}")
    for name, spec_file in written.items():
        click.echo(f"evaluation {name}: {spec_file} (run it: promptrev eval run {spec_file})")
    for note in report.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)


def _write_eval_specs(evaluations: dict[str, dict], folder: str) -> dict[str, str]:
    """Each evaluation spec as ``FOLDER/NAME.eval.yaml``; name → file written."""
    import yaml

    written = {}
    for name, spec in evaluations.items():
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, name.replace("/", "__") + ".eval.yaml")
        with open(target, "w", encoding="utf-8") as fh:
            yaml.safe_dump(spec, fh, sort_keys=False, allow_unicode=True)
        written[name] = target
    return written


@main.command()
@click.argument("name")
@click.option("-m", "--message", help="Commit message.")
@click.option("--base", type=int, help="Version this deletion is based on.")
@pass_ctx
def rm(ctx: Context, name: str, message: str | None, base: int | None) -> None:
    """Delete an artifact (a new version; history stays and can be restored)."""
    ctx.policy.require_write_main(ctx.acting, "deleting on main")
    with ctx.open() as reg:
        version = reg.delete(name, message=message, author=ctx.author, base=base)
    click.echo(f"deleted {version.ref}")


@main.command(name="list")
@click.argument("prefix", required=False)
@click.option("--deleted", is_flag=True, help="Include deleted artifacts.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_(ctx: Context, prefix: str | None, deleted: bool, as_json: bool) -> None:
    """List artifacts (optionally those whose name starts with PREFIX)."""
    with ctx.open() as reg:
        items = reg.list(prefix, include_deleted=deleted)
    if as_json:
        emit_json([i.to_dict() for i in items])
        return
    if not items:
        return
    rows = [(item.kind, f"{item.name}@{item.latest}" + (" (deleted)" if item.deleted else ""),
             " ".join(f"{k}={v}" for k, v in sorted(item.labels.items())) or "-",
             f"{item.time:%Y-%m-%d %H:%M}", item.author)
            for item in items]
    for line in columns(("KIND", "LATEST", "LABELS", "SAVED", "BY"), rows):
        click.echo(line)



@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show(ctx: Context, ref: str, as_json: bool) -> None:
    """Print the content of a version."""
    with ctx.open() as reg:
        snap = reg.get(ref)
    if as_json:
        emit_json(snap.to_dict())
        return
    click.echo(snap.text, nl=not snap.text.endswith("\n"))
    for warning in snap.warnings:
        warn(warning.message)


@main.command()
@click.argument("name")
@click.option("--kind", type=click.Choice(sorted(KINDS)), default="prompt", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def path(name: str, kind: str, as_json: bool) -> None:
    """Print where NAME's files sit in the registry's Git tree (for plain Git).

    Each name's files sit two bucket folders down, each '@' and one hex digit of the
    SHA-1 of the name, so that no folder grows past a few hundred entries.
    """
    validate_name(name)
    art = KINDS[kind]
    where = {"file": art.path(name), "labels": art.label_path(name),
             "splits": art.split_path(name)}
    if as_json:
        emit_json({"kind": kind, "name": name, **where})
        return
    for what, at in where.items():
        click.echo(f"{what:<7} {at}")


@main.command(name="move-into-buckets")
@click.argument("checkout", type=click.Path(exists=True, file_okay=False), default=".")
@click.option("--dry-run", is_flag=True, help="Print the moves; change nothing.")
def move_into_buckets(checkout: str, dry_run: bool) -> None:
    """Move the files of a checkout into their buckets (with 'git mv' in a Git work tree).

    For a team's repository laid out by hand or before buckets
    (prompts/<name>.prompty): commit and push the moves, and promptrev then accepts it
    as a remote or a push. Files already in place, and files outside the registry's
    folders, are left alone; a file whose place is taken is never overwritten (it is
    named, and left where it is).
    """
    in_git = subprocess.run(["git", "-C", checkout, "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, text=True).stdout.strip() == "true"
    moves = []
    for folder, dirs, files in os.walk(checkout):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for filename in sorted(files):
            relative = os.path.relpath(os.path.join(folder, filename), checkout)
            relative = relative.replace(os.sep, "/")
            target = placed(relative)
            if target != relative:
                moves.append((relative, target))
    moved, kept = 0, []
    for source, target in moves:
        destination = os.path.join(checkout, target)
        if os.path.lexists(destination) or any(target == t for s, t in moves if s < source):
            kept.append(f"{source}: not moved, {target} exists already")
            continue
        click.echo(f"{source} -> {target}")
        if dry_run:
            continue
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if in_git:
            done = subprocess.run(["git", "-C", checkout, "mv", source, target],
                                  capture_output=True, text=True)
            if done.returncode:  # not tracked by Git: a plain move
                os.rename(os.path.join(checkout, source), destination)
        else:
            os.rename(os.path.join(checkout, source), destination)
        moved += 1
    for line in kept:
        warn(line)
    count = len(moves) - len(kept) if dry_run else moved
    click.echo(f"{count} file(s) {'to move' if dry_run else 'moved'}"
               + ("; commit them (git commit -m 'Move files into buckets')"
                  if count and in_git and not dry_run else ""))
    if kept:
        sys.exit(1)


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def log(ctx: Context, name: str, as_json: bool) -> None:
    """Show every version of an artifact: who, when, why, labels."""
    with ctx.open() as reg:
        versions = reg.history(name)
    if as_json:
        emit_json([v.to_dict() for v in versions])
        return
    for v in versions:
        labels = click.style(f" [{', '.join(v.labels)}]", fg="green") if v.labels else ""
        gone = click.style(" (deleted)", fg="red") if v.deleted else ""
        click.echo(f"{click.style(v.ref, bold=True)}{labels}{gone}  {short_hash(v.commit)}  "
                   f"{v.time:%Y-%m-%d %H:%M}  {v.author}  {v.message.splitlines()[0]}")


@main.command()
@click.argument("ref_a")
@click.argument("ref_b", required=False)
@click.option("--var", "pairs", multiple=True, help="Variable for the rendered diff.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def diff(ctx: Context, ref_a: str, ref_b: str | None, pairs: tuple[str, ...],
         as_json: bool) -> None:
    """Diff two versions: fields, text and rendered messages.

    \b
    promptrev diff NAME          the version before the latest against the latest
    promptrev diff NAME@N        version N-1 against version N
    promptrev diff REF_A REF_B   any two versions (of one artifact or two)
    """
    with ctx.open() as reg:
        if ref_b is None:
            ref_a, ref_b = _previous_and(reg, ref_a)
        variables = parse_vars(pairs, None)
        result = reg.diff(ref_a, ref_b, variables)
        tokens = _tokens(ctx, reg, result, variables) if result.rendered else None
    if as_json:
        emit_json({**result.to_dict(), **({"tokens": tokens} if tokens else {})})
        return
    if result.fields:
        click.secho("fields:", bold=True)
        for change in result.fields:
            click.secho(f"  {change.describe()}", fg="magenta" if change.contract else None)
    click.secho("text:", bold=True)
    print_unified(result.text.unified or "  (no text changes)")
    if result.rendered is not None:
        click.secho("rendered:", bold=True)
        for side, err in (("old", result.rendered.left_error),
                          ("new", result.rendered.right_error)):
            if err:
                click.secho(f"  {side} version does not render: {err}", fg="yellow")
        print_unified(result.rendered.unified or "  (same messages)")
    if tokens:
        _print_tokens(tokens)
    if result.impact:
        from .compose_commands import print_impact

        print_impact(result.impact, f"{result.left} -> {result.right}")
    for case in result.cases:
        click.echo(f"  case {case['id']}: {case['change']}")
    if result.weights:
        click.secho("weights (norm of the change of each module's update):", bold=True)
        for w in result.weights:
            norm = "-" if w["delta_norm"] is None else f"{w['delta_norm']:.4g}"
            rel = f" ({w['relative']:.1%})" if w.get("relative") is not None else ""
            click.echo(f"  {w['module']}: {w['change']} {norm}{rel}")


def _tokens(ctx: Context, reg: Registry, result, variables) -> dict:
    """Tokens of both sides' rendered messages and the input cost per 1,000 calls, with the
    prompts' own models on this machine (as ``run`` would pick them)."""
    from promptrev.evaluation.prices import load_price_table
    from promptrev.evaluation.tokens import version_token_delta

    from .runner_commands import runner_for

    return version_token_delta(reg, result.left, result.right, runner=runner_for(ctx, reg),
                               prices=load_price_table(ctx.settings.prices_file),
                               variables=variables)


def _print_tokens(tokens: dict) -> None:
    click.secho("tokens:", bold=True, nl=False)
    click.echo(f" {tokens['summary']}")
    if tokens.get("unavailable"):
        return
    for m in tokens["messages"]:
        old = "-" if m["old"] is None else m["old"]
        new = "-" if m["new"] is None else m["new"]
        click.echo(f"  {m['role']:<10} {m['change']:<8} {old:>6} → {new:<6} {m['delta']:+d}")
    over, total = tokens["overhead"], tokens["total"]
    click.echo(f"  {'framing':<19} {over['old']:>6} → {over['new']:<6} {over['delta']:+d}")
    click.echo(f"  {'total':<19} {total['old']:>6} → {total['new']:<6} {total['delta']:+d}")
    counted = f"counted with {tokens['tokenizer']}"
    if tokens.get("estimate"):
        counted += f" (an estimate: {tokens['estimate_reason']})"
    cost = tokens.get("cost") or {}
    priced = (f"; {cost['basis']}, price table {cost['prices']['version']}"
              if cost and not cost.get("unavailable") else
              f"; {cost['unavailable']}" if cost else "")
    click.echo(f"  {counted}{priced}")


def _previous_and(reg: Registry, ref: str) -> tuple[str, str]:
    """The references of the version before ``ref``'s and of ``ref``'s own version."""
    version = reg.resolve(ref)
    if version.number < 2:
        raise click.UsageError(f"{version.ref} is the first version of {version.kind} "
                               f"'{version.name}': nothing before it to diff against")
    at = f"{version.kind}:{version.name}@"
    return f"{at}{version.number - 1}", f"{at}{version.number}"


# Diff colours readable on dark and light terminals alike (no white, no yellow).
DIFF_STYLES = {"+++": {"bold": True}, "---": {"bold": True}, "@@": {"fg": "cyan"},
               "+": {"fg": "green"}, "-": {"fg": "red"}}


def print_unified(text: str) -> None:
    """Print a unified diff, coloured like git's (on a terminal, without NO_COLOR)."""
    for line in text.splitlines():
        style = next((v for k, v in DIFF_STYLES.items() if line.startswith(k)), {})
        click.secho(line, **style)


@main.group()
def label() -> None:
    """Set, remove and list labels (each move is a commit)."""


@label.command(name="set")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.argument("version", type=int)
@click.option("-m", "--message")
@click.option("--kind", help="prompt, adapter or dataset (when NAME alone is ambiguous).")
@click.option("--evaluate", is_flag=True, help="Run the label's release-policy evaluation "
              "first when the move lacks its evidence.")
@click.option("--override-reason", help="Admin: move a gated label without its evidence, "
              "for this written reason (kept in the commit and the audit log).")
@pass_ctx
def label_set(ctx: Context, name: str, label_name: str, version: int, message: str | None,
              kind: str | None, evaluate: bool, override_reason: str | None) -> None:
    """Point LABEL of NAME at VERSION (with its evidence, if LABEL has a release policy)."""
    from .release import cleared_move

    ctx.policy.require_label(ctx.acting, label_name)
    with ctx.open() as reg:
        twins = [k for k in reg.labels(name, kind) if k != label_name and
                 k.casefold() == label_name.casefold()]
        cleared = cleared_move(ctx, reg, name, label_name, version, kind=kind,
                               evaluate=evaluate, override=override_reason)
        event = reg.set_label(name, label_name, version, author=ctx.author, kind=kind,
                              guard=cleared.guard, message=cleared.message(
                                  message, f"label {name}@{label_name} -> {version}"))
    if twins:
        warn(f"{name} now has labels {label_name!r} and "
             f"{', '.join(map(repr, twins))}, which differ only in case; references "
             "are case-sensitive (remove one with 'promptrev label rm')")
    if event is None:
        click.echo(f"{name}@{label_name} already at {version}")
    else:
        click.echo(f"{name}@{label_name}: {event.old or '-'} -> {event.new}")


@label.command(name="rm")
@click.argument("name")
@click.argument("label_name", metavar="LABEL")
@click.option("-m", "--message")
@click.option("--override-reason", help="Admin: remove a gated label, for this reason.")
@pass_ctx
def label_rm(ctx: Context, name: str, label_name: str, message: str | None,
             override_reason: str | None) -> None:
    """Remove LABEL from NAME."""
    from .release import cleared_move

    ctx.policy.require_label(ctx.acting, label_name, "removing")
    with ctx.open() as reg:
        cleared = cleared_move(ctx, reg, name, label_name, None, what="removing",
                               override=override_reason)
        reg.remove_label(name, label_name, author=ctx.author, guard=cleared.guard,
                         message=cleared.message(message, f"remove label {name}@{label_name}"))
    click.echo(f"removed {name}@{label_name}")


@label.command(name="list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def label_list(ctx: Context, name: str, as_json: bool) -> None:
    """List the labels of NAME."""
    with ctx.open() as reg:
        labels = reg.labels(name)
    if as_json:
        emit_json(labels)
        return
    for key, value in sorted(labels.items()):
        click.echo(f"{key}: {value}")


@label.command(name="log")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def label_log(ctx: Context, name: str | None, as_json: bool) -> None:
    """Show label moves (who moved what, when, why)."""
    with ctx.open() as reg:
        events = reg.label_history(name)
    if as_json:
        emit_json([e.to_dict() for e in events])
        return
    for e in events:
        click.echo(f"{e.time:%Y-%m-%d %H:%M}  {e.name}@{e.label}: {e.old or '-'} -> "
                   f"{e.new or '-'}  {e.author}  {e.message}")


@main.command()
@click.argument("name")
@click.option("--to", "to", type=int, required=True, help="Version to roll back to.")
@click.option("--label", "label_name", help="Move this label instead of restoring content.")
@click.option("-m", "--message")
@click.option("--override-reason", help="Admin: move a gated label without its evidence.")
@pass_ctx
def rollback(ctx: Context, name: str, to: int, label_name: str | None,
             message: str | None, override_reason: str | None) -> None:
    """Roll back: move a label to version N, or restore N's content as a new version."""
    from .release import cleared_move

    if not label_name:
        restore_version(ctx, name, to, message)
        return
    ctx.policy.require_label(ctx.acting, label_name)
    with ctx.open() as reg:
        cleared = cleared_move(ctx, reg, name, label_name, to, what="rolling back",
                               override=override_reason)
        message = cleared.message(message, "rolled back") if cleared.note else message
        reg.rollback(name, to, label=label_name, message=message, author=ctx.author,
                     guard=cleared.guard)
    click.echo(f"{name}@{label_name} -> {to}")


def restore_version(ctx: Context, name: str, to: int, message: str | None) -> None:
    """Write version ``to``'s content as NAME's new latest version (rollback, restore)."""
    ctx.policy.require_write_main(ctx.acting, "restoring a version on main")
    with ctx.open() as reg:
        result = reg.rollback(name, to, message=message, author=ctx.author)
    click.echo(f"restored version {to} as {result.ref}")


@main.command()
@click.argument("ref")
@click.option("--var", "pairs", multiple=True, help="KEY=VALUE, or KEY=@FILE.")
@click.option("--vars", "vars_file", type=click.Path(exists=True), help="JSON object file.")
@click.option("--sample", is_flag=True, help="Use the prompt's sample values as defaults.")
@click.option("--at", "at", metavar="COMMIT", help="Resolve included parts as main had "
              "them at this commit (default: now).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def render(ctx: Context, ref: str, pairs: tuple[str, ...], vars_file: str | None,
           sample: bool, at: str | None, as_json: bool) -> None:
    """Render a prompt version to chat messages."""
    with ctx.open() as reg:
        values = parse_vars(pairs, vars_file)
        prompt = reg.prompt(ref)
        unknown = sorted(set(values) - set(prompt.inputs) - prompt.variables)
        if unknown:
            known = ", ".join(sorted(set(prompt.inputs) | prompt.variables)) or "none"
            warn(f"{ref} neither declares nor uses "
                 f"{', '.join(map(repr, unknown))} (its variables: {known})")
        if sample:
            values = {**prompt.sample(), **values}
        messages = reg.render(ref, values, at=at)
    if as_json:
        emit_json([m.to_dict() for m in messages])
        return
    for m in messages:
        click.secho(f"[{m.role}]", bold=True)
        click.echo(m.text)


@main.command()
@pass_ctx
def reindex(ctx: Context) -> None:
    """Rebuild the SQL index from Git (beside the old one, then swapped in)."""
    with ctx.open() as reg:
        counts = reg.reindex()
    lost = counts.pop("lost", [])
    click.echo("rebuilt index: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    if lost:
        click.secho("the old index was too damaged to copy these tables (their rows are "
                    f"lost; restore them from a backup): {', '.join(lost)}", fg="yellow")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--repair", is_flag=True, help="Restore a missing or corrupt main from its "
              "reflog or the index, remove locks left by killed writers, let git gc run "
              "again, and rebuild a damaged index.")
@click.option("--rewind", is_flag=True, help="With --repair, when the commit main last "
              "pointed at is lost: go back to the newest intact commit, losing the versions "
              "made after it (rather than copying the commits back from a clone or backup).")
@pass_ctx
def fsck(ctx: Context, as_json: bool, repair: bool, rewind: bool) -> None:
    """Check Git objects, main, locks, the index against Git, and every current artifact."""
    if rewind and not repair:
        raise click.BadParameter("--rewind goes with --repair", param_hint="--rewind")
    with ctx.open() as reg:
        report = reg.fsck(repair=repair, rewind=rewind)
    if as_json:
        emit_json(report)
    else:
        for done in report.get("repaired", []):
            click.secho(f"repaired: {done}", fg="green")
        for problem in report["problems"]:
            click.secho(f"problem: {problem}", fg="red")
        click.echo("ok" if report["ok"] else f"{len(report['problems'])} problem(s)")
    if not report["ok"]:
        sys.exit(1)


# Command groups in their own modules register themselves on ``main`` when imported.
from . import (  # noqa: E402,F401
    adapter_commands,
    backup_commands,
    compose_commands,
    edit_commands,
    eval_commands,
    format_commands,
    gate_commands,
    git_commands,
    remote_commands,
    replica_commands,
    review_commands,
    runner_commands,
    server_commands,
    webhook_commands,
)

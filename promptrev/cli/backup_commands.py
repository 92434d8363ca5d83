"""``promptrev backup`` and ``restore``: the whole registry in one archive, and back."""

from __future__ import annotations

import os
from typing import Any

import click

from .main import Context, emit_json, main, pass_ctx, restore_version
from .terminal import short_hash


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def backup(ctx: Context, file: str, as_json: bool) -> None:
    """Write the registry to FILE: Git, weights, every table Git cannot rebuild, accounts.

    FILE holds password hashes, token digests and webhook secrets: keep it private.
    """
    from promptrev.backup import backup as write_backup

    # The server's accounts database: PROMPTREV_ACCOUNTS_URL, else the file beside the
    # registry (the core's default).
    accounts_url = ctx.settings.accounts_url
    with ctx.open() as reg:
        summary = write_backup(reg, file, accounts_url=accounts_url)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"backed up {ctx.path} to {summary['path']} ({_size(summary['size'])})")
    click.echo(f"  main at {short_hash(summary['head'])}: {summary['commits']} commits, "
               f"{summary['versions']} versions, {len(summary['refs'])} refs")
    _echo_contents(summary)
    click.secho("  the archive holds password hashes, token digests and webhook secrets: "
                "keep it private", fg="yellow")


@main.command()
@click.argument("source", metavar="FILE|NAME")
@click.option("--to", "to", type=int, help="Restore version N of the artifact NAME as its "
              "new latest version (instead of restoring a backup FILE).")
@click.option("-m", "--message", help="With --to: the commit message.")
@click.option("--registry", "-r", "target", default=None,
              help="Folder of the new registry (must not exist, or be empty).")
@click.option("--index-url", default=None,
              help="SQLAlchemy URL of an empty registry database (default: SQLite inside).")
@click.option("--accounts-url", default=None,
              help="SQLAlchemy URL of an empty accounts database (default: "
                   "PROMPTREV_ACCOUNTS_URL, else SQLite inside the registry).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def restore(ctx: Context, source: str, to: int | None, message: str | None,
            target: str | None, index_url: str | None, accounts_url: str | None,
            as_json: bool) -> None:
    """Restore a version (NAME --to N) or a backup (FILE -r NEW-REGISTRY).

    \b
    promptrev restore NAME --to N     version N's content becomes NAME's new latest
                                      version (history keeps everything in between)
    promptrev restore FILE -r FOLDER  restore the backup FILE into a new registry,
                                      then rebuild its index
    """
    if to is not None:
        if target or index_url or accounts_url or as_json:
            raise click.UsageError("-r, --index-url, --accounts-url and --json go with a "
                                   "backup FILE; to restore a version give the registry "
                                   "first: promptrev -r REGISTRY restore NAME --to N")
        restore_version(ctx, source, to, message)
        return
    if message is not None:
        raise click.UsageError("-m goes with --to N (restoring a version)")
    if not os.path.isfile(source):
        raise click.UsageError(f"no backup file {source!r}; to restore version N of an "
                               f"artifact: promptrev restore {source} --to N")
    _restore_backup(ctx, source, target, index_url, accounts_url, as_json)


def _restore_backup(ctx: Context, file: str, target: str | None, index_url: str | None,
                    accounts_url: str | None, as_json: bool) -> None:
    from promptrev.backup import restore as read_backup

    summary = read_backup(file, target or ctx.path, index_url=index_url or ctx.index_url,
                          accounts_url=accounts_url or ctx.settings.accounts_url)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"restored {file} (taken {summary['created']}) into {summary['path']}")
    click.echo(f"  main at {short_hash(summary['head'])}, {len(summary['refs'])} refs; index "
               f"rebuilt: {summary['index'].get('commit', 0)} commits, "
               f"{summary['index'].get('version', 0)} versions")
    _echo_contents(summary)


def _echo_contents(summary: dict[str, Any]) -> None:
    objects = summary["objects"]
    click.echo(f"  objects: {objects['count']} ({_size(objects['bytes'])})")
    for database, tables in summary["tables"].items():
        rows = ", ".join(f"{name} {count}" for name, count in sorted(tables.items()))
        click.echo(f"  {database} rows: {rows or 'no tables'}")


def _size(count: float) -> str:
    units, power = ("bytes", "KiB", "MiB", "GiB", "TiB"), 0
    while count >= 1024 and power < len(units) - 1:
        count, power = count / 1024, power + 1
    return f"{int(count):,} bytes" if power == 0 else f"{count:.1f} {units[power]}"

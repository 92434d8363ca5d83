"""``promptrev backup`` and ``restore``: the whole registry in one archive, and back."""

from __future__ import annotations

from typing import Any

import click

from .main import Context, emit_json, main, pass_ctx


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
    click.echo(f"  main at {summary['head'][:12]}: {summary['commits']} commits, "
               f"{summary['versions']} versions, {len(summary['refs'])} refs")
    _echo_contents(summary)
    click.secho("  the archive holds password hashes, token digests and webhook secrets: "
                "keep it private", fg="yellow")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--registry", "-r", "target", default=None,
              help="Folder of the new registry (must not exist, or be empty).")
@click.option("--index-url", default=None,
              help="SQLAlchemy URL of an empty registry database (default: SQLite inside).")
@click.option("--accounts-url", default=None,
              help="SQLAlchemy URL of an empty accounts database (default: "
                   "PROMPTREV_ACCOUNTS_URL, else SQLite inside the registry).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def restore(ctx: Context, file: str, target: str | None, index_url: str | None,
            accounts_url: str | None, as_json: bool) -> None:
    """Restore the backup FILE into a new registry (-r), then rebuild its index."""
    from promptrev.backup import restore as read_backup

    summary = read_backup(file, target or ctx.path, index_url=index_url or ctx.index_url,
                          accounts_url=accounts_url or ctx.settings.accounts_url)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"restored {file} (taken {summary['created']}) into {summary['path']}")
    click.echo(f"  main at {summary['head'][:12]}, {len(summary['refs'])} refs; index "
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

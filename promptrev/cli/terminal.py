"""How the CLI lays out what it prints: one length for commit hashes, aligned columns.

Colours are click's: only on a terminal, and never with NO_COLOR (``main`` sets that).
Warnings go to stderr, in yellow on a terminal (:func:`warn`).
"""

from __future__ import annotations

from collections.abc import Sequence

import click

HASH_LENGTH = 12  # every commit hash the CLI prints has this many hex digits


def short_hash(sha: str | None) -> str:
    """A commit hash as the CLI prints it."""
    return sha[:HASH_LENGTH] if sha else "-"


def warn(message: str) -> None:
    """Print ``warning: message`` to stderr, yellow when stderr is a terminal."""
    click.secho(f"warning: {message}", fg="yellow", err=True)


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a table: the header, then the rows, each column as wide as its widest cell."""
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table]

"""Long rendered messages, folded for reading: the lines worth seeing, the rest in ``<details>``.

A rendered message of a diff can be a hundred lines of system prompt. Where a message
changed word by word, the changed lines and a few lines around them stay in view, as the
text diff folds unchanged context; a message that is only added, removed or the same shows
its first lines. Everything else folds into runs a ``<details>`` opens, without script.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptrev.model.diffing import Segment

FOLD_AFTER = 16  # a message of at most this many lines is never folded
HEAD = 8  # lines of an unchanged, added or removed long message shown before the fold
CONTEXT = 2  # lines shown on each side of a changed line
MIN_FOLD = 4  # a hidden run shorter than this is shown instead (folding it saves nothing)


@dataclass(frozen=True)
class Chunk:
    """Consecutive lines of a message; ``folded`` ones start collapsed. ``first`` is the
    1-based number of its first line in the message."""

    folded: bool
    first: int
    lines: list[list[Segment]]


def message_lines(segments: list[Segment]) -> list[list[Segment]]:
    """The segments of a message cut at its newlines (a segment may span several lines)."""
    lines: list[list[Segment]] = [[]]
    for seg in segments:
        parts = seg.text.split("\n")
        for i, part in enumerate(parts):
            if i:
                lines.append([])
            if part:
                lines[-1].append(Segment(part, seg.changed))
    return lines


def fold_message(segments: list[Segment], op: str) -> list[Chunk]:
    """The message's lines in chunks: in view, or folded (see the module's docstring)."""
    lines = message_lines(segments)
    if len(lines) <= FOLD_AFTER:
        return [Chunk(False, 1, lines)]
    if op == "replace":
        changed = [i for i, line in enumerate(lines) if any(s.changed for s in line)]
        keep = {j for i in changed
                for j in range(i - CONTEXT, i + CONTEXT + 1) if 0 <= j < len(lines)}
    else:
        changed, keep = [], set()
    if not keep:
        keep = set(range(HEAD))
    chunks: list[Chunk] = []
    start = 0
    for i in range(1, len(lines) + 1):
        if i == len(lines) or (i in keep) != (start in keep):
            chunks.append(Chunk(start not in keep, start + 1, lines[start:i]))
            start = i
    return _unfold_short(chunks)


def _unfold_short(chunks: list[Chunk]) -> list[Chunk]:
    """Show short hidden runs, and join neighbours that are both in view."""
    out: list[Chunk] = []
    for chunk in chunks:
        if chunk.folded and len(chunk.lines) < MIN_FOLD:
            chunk = Chunk(False, chunk.first, chunk.lines)
        if out and not out[-1].folded and not chunk.folded:
            out[-1] = Chunk(False, out[-1].first, out[-1].lines + chunk.lines)
        else:
            out.append(chunk)
    return out

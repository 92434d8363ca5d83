"""Import a folder of artifact files (e.g. the starter library in ``prompts/``).

Files are recognised by suffix (``.prompty`` → prompt, ``.jsonl`` → dataset). The name is
the path relative to the folder without the suffix; a leading kind folder (``datasets/``,
``prompts/``) is dropped, so a checkout of a registry imports under the same names.
Everything is validated first and written as one commit: all files or none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from promptrev.model.artifacts import kind_of_file

from .errors import NotFound, PromptrevError, ValidationFailed
from .registry import DEFAULT_AUTHOR, Registry


@dataclass
class ImportReport:
    """What an import did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commit: str | None = None

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "commit": self.commit}


def collect(root: str) -> list[tuple[str, str, bytes]]:
    """(kind, name, bytes) for every artifact file under ``root``, sorted by name."""
    if not os.path.isdir(root):
        raise NotFound(f"{root} is not a folder")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for filename in sorted(files):
            kind = kind_of_file(filename)
            if kind is None:
                continue
            rel = os.path.relpath(os.path.join(folder, filename), root).replace(os.sep, "/")
            name = rel[: -len(kind.suffix)]
            if name.startswith(kind.folder + "/"):
                name = name[len(kind.folder) + 1:]
            with open(os.path.join(folder, filename), "rb") as fh:
                found.append((kind.name, name, fh.read()))
    return found


def import_folder(registry: Registry, root: str, *, message: str | None = None,
                  author: str = DEFAULT_AUTHOR) -> ImportReport:
    """Import every artifact file under ``root`` in one commit."""
    files = collect(root)
    report = ImportReport()
    problems: list[dict] = []
    existing = {(s.kind, s.name): s for s in registry.list(include_deleted=True)}
    by_kind: dict[str, list[tuple[str, bytes]]] = {}
    for kind, name, data in files:
        by_kind.setdefault(kind, []).append((name, data))
    with registry.transaction(message=message or f"import {os.path.basename(root.rstrip('/'))}",
                              author=author) as tx:
        for kind, items in by_kind.items():
            try:
                tx.save_many(items, kind=kind)  # large folders are validated on every core
            except ValidationFailed as exc:
                problems += exc.problems or [{"file": kind, "message": exc.message}]
            except PromptrevError as exc:
                problems.append({"file": kind, "message": exc.message})
        if problems:
            raise ValidationFailed(
                f"{len(problems)} problem(s) in {root}; nothing was imported", problems)
    report.commit = tx.commit_sha
    made = {(v.kind, v.name) for v in tx.versions}
    for kind, name, _ in files:
        label = name if kind == "prompt" else f"{kind}:{name}"
        if (kind, name) not in made:
            report.unchanged.append(label)
        elif (kind, name) in existing:
            report.updated.append(label)
        else:
            report.created.append(label)
    return report

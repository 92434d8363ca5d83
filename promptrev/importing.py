"""Import a folder of artifact files (e.g. the starter library in ``prompts/``).

Files are recognised by suffix (``.prompty`` → prompt, ``.jsonl`` → dataset). The name is
the path relative to the folder without the suffix; a leading kind folder (``datasets/``,
``prompts/``) and the hashed bucket folders of a registry's tree (``@e/@7/``, see
:mod:`promptrev.model.fanout`) are dropped, so a checkout of a registry imports under the
same names.
Everything is validated first and written as one commit: all files or none.

Only regular files are read, and no link is ever followed: a folder may be a clone of a
registry that once accepted a link named like a prompt and pointing at any file of this
machine. A link, or anything else that is not a regular file, is refused by name.
"""

from __future__ import annotations

import os
import stat
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


def collect(root: str, max_bytes: int | None = None) -> list[tuple[str, str, bytes]]:
    """(kind, name, bytes) for every artifact file under ``root``, sorted by name.

    Walks by open folder handles and opens with ``O_NOFOLLOW``, so a link swapped in
    while it runs is not followed either. Links, other non-regular files and files over
    ``max_bytes`` are refused (:class:`ValidationFailed` naming each), never read.
    """
    if not os.path.isdir(root):
        raise NotFound(f"{root} is not a folder")
    found: list[tuple[str, str, bytes]] = []
    problems: list[dict[str, str]] = []
    for folder, dirs, files, fd in os.fwalk(root):  # never descends into a linked folder
        dirs.sort()
        for dirname in [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            problems.append(_refused(root, folder, dirname, "is a symbolic link to a "
                                     "folder: import reads regular files only"))
        dirs[:] = [d for d in dirs if not d.startswith(".") and not os.path.islink(
            os.path.join(folder, d))]
        for filename in sorted(files):
            kind = kind_of_file(filename)
            if kind is None:
                continue
            data = _read_regular(fd, filename, max_bytes)
            if isinstance(data, str):
                problems.append(_refused(root, folder, filename, data))
                continue
            relative = _relative(root, folder, filename)
            # A checkout of a registry keeps its files in buckets (model.fanout); the name
            # is the path without them.
            if not relative.startswith(kind.folder + "/"):
                relative = f"{kind.folder}/{relative}"
            name = kind.artifact_of(relative) or relative[len(kind.folder) + 1:
                                                          -len(kind.suffix)]
            found.append((kind.name, name, data))
    if problems:
        first = problems[0]
        raise ValidationFailed(f"{len(problems)} problem(s) in {root}; nothing was imported: "
                               f"{first['file']} {first['message']}", problems)
    return found


def _read_regular(dir_fd: int, filename: str, max_bytes: int | None) -> bytes | str:
    """The file's bytes, or why it is not read (a link, not a regular file, too large)."""
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        try:
            link = stat.S_ISLNK(os.lstat(filename, dir_fd=dir_fd).st_mode)
        except OSError:
            link = False
        if link:
            return "is a symbolic link: import reads regular files only, never a link's target"
        return f"cannot be read ({exc.strerror})"
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            return "is not a regular file: import reads regular files only"
        if max_bytes is not None and info.st_size > max_bytes:
            return f"is {info.st_size:,} bytes; the limit is {max_bytes:,} bytes"
        return fh.read()


def _relative(root: str, folder: str, filename: str) -> str:
    return os.path.relpath(os.path.join(folder, filename), root).replace(os.sep, "/")


def _refused(root: str, folder: str, filename: str, why: str) -> dict[str, str]:
    return {"file": _relative(root, folder, filename), "message": why}


def import_folder(registry: Registry, root: str, *, message: str | None = None,
                  author: str = DEFAULT_AUTHOR) -> ImportReport:
    """Import every artifact file under ``root`` in one commit."""
    files = collect(root, registry.max_bytes)
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

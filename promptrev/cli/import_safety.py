"""``promptrev import`` never overwrites silently, as ``save`` does not.

An import that would replace the content of existing artifacts needs to say what its files
were based on: ``--base COMMIT``, the commit they were exported or checked out from (the
import is refused, naming them, when any of those artifacts changed on main since), or
``--force``. New artifacts, deleted ones and files identical to the latest version need
neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptrev.errors import Conflict, NotFound, PreconditionRequired
from promptrev.importing import collect
from promptrev.registry import Registry

from .terminal import short_hash

SHOWN = 10  # artifacts named in a refusal; the rest are counted


@dataclass(frozen=True)
class Overwrite:
    """An existing artifact an import would give new content."""

    label: str  # ``name``, or ``kind:name`` for other kinds than prompts
    current: int  # its latest version now
    at_base: int | None = None  # its version at --base (None: it did not exist then)


def check_import(reg: Registry, path: str, base: str | None) -> list[Overwrite]:
    """The artifacts importing ``path`` would overwrite; refused unless ``base`` covers them.

    Without ``base`` any overwrite is refused (:class:`PreconditionRequired`); with it,
    those that changed on main since ``base`` are (:class:`Conflict`). ``--force`` is the
    caller's: it does not call this.
    """
    commit = reg.commit_of(base) if base is not None else None
    found = overwrites(reg, path, commit)
    if commit is None and found:
        raise PreconditionRequired(
            f"import would overwrite {_count(found)} that exist{'s' if len(found) == 1 else ''}"
            f": {_names(found, with_base=False)}. Give --base COMMIT (the commit the files "
            "were exported or checked out from) to overwrite only what has not changed "
            "since, or --force to overwrite whatever is the latest",
            details={"overwrites": [o.label for o in found]})
    stale = [o for o in found if o.at_base != o.current]
    if stale:
        raise Conflict(
            f"{_count(stale)} changed on main since {short_hash(commit)}, so importing "
            f"would overwrite {'that change' if len(stale) == 1 else 'those changes'}: "
            f"{_names(stale, with_base=True)}. Nothing was imported: merge them into the "
            "files (e.g. check out main again) and import with the new --base, or use "
            "--force", details={"stale": [o.label for o in stale], "base": commit})
    return found


def overwrites(reg: Registry, path: str, commit: str | None) -> list[Overwrite]:
    """Existing artifacts whose content the files under ``path`` would replace."""
    out = []
    for kind, name, data in collect(path, reg.max_bytes):
        try:
            current = reg.resolve(name, kind)
        except NotFound:
            continue
        if current.deleted or reg.get(current.ref, kind).text.encode("utf-8") == data:
            continue
        at_base = None
        if commit is not None:
            try:
                at_base = reg.resolve(f"{name}@{commit}", kind).number
            except NotFound:  # it did not exist yet at that commit
                at_base = None
        out.append(Overwrite(name if kind == "prompt" else f"{kind}:{name}", current.number,
                             at_base))
    return out


def _count(items: list[Overwrite]) -> str:
    return f"{len(items)} artifact{'' if len(items) == 1 else 's'}"


def _names(items: list[Overwrite], *, with_base: bool) -> str:
    def one(o: Overwrite) -> str:
        if not with_base:
            return f"{o.label} (v{o.current})"
        then = f"v{o.at_base}" if o.at_base is not None else "not there"
        return f"{o.label} ({then} then, v{o.current} now)"

    shown = ", ".join(one(o) for o in items[:SHOWN])
    return shown + (f" and {len(items) - SHOWN} more" if len(items) > SHOWN else "")

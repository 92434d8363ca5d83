"""Composition: prompts that include shared parts, resolved, checked and traced back.

A prompt includes another prompt's body with ``{% include "shared/tone@3" %}`` (Jinja2),
or ``{{> shared/tone}}`` (Handlebars); :mod:`promptrev.model.composition` reads the
references as each engine writes them. Here the registry:

* resolves a reference at a state of ``main`` (:class:`Parts`): pinned (``@3``, a commit)
  gives that version for good, a label the version it points at, a bare name the latest;
  at ``main``'s head through the index (cached), at any other commit from its tree;
* refuses, when a write is about to be committed or history arrives by ``git push``,
  a reference to a part that does not exist and a cycle, naming the chain
  (:func:`check_write`, :func:`check_commit`);
* lists the prompts that use a part (:func:`dependents`, from the index's reverse table)
  and shows which of them render differently when the part changes or a label on it
  moves (:func:`impact`), with a rendered diff each.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promptrev.model.artifacts import KINDS
from promptrev.model.composition import Include, includes_of, may_include, text_includes
from promptrev.model.diffing import rendered_diff
from promptrev.model.labels import parse_label_map
from promptrev.model.prompty import Prompt, parse_prompt
from promptrev.model.references import parse_reference

from .errors import PromptrevError, RenderFailed, ValidationFailed

if TYPE_CHECKING:
    from .registry import Registry

MAX_DEPTH = 16  # parts including parts: deeper than this is refused when saved
IMPACT_SECONDS = 5.0  # rendering the dependents of one change: the rest are listed only
PROMPT = KINDS["prompt"]


class Missing(PromptrevError):
    """A reference names no version with content (raised inside this module only)."""


@dataclasses.dataclass(frozen=True)
class Override:
    """While tracing impact: references to ``name`` that ``follows`` accepts give ``blob``."""

    name: str
    follows: Callable[[Include], bool]
    blob: str | None


class Parts:
    """The parts of ``main`` at one commit (None: its head, read through the index).

    ``changes`` (path → blob, None for a deletion) and ``pending`` (name → versions not
    yet indexed) describe a write not committed yet, or pushed history being checked.
    """

    def __init__(self, registry: Registry, commit: str | None = None, *,
                 changes: dict[str, str | None] | None = None,
                 pending: dict[str, int] | None = None, override: Override | None = None,
                 blobs: dict[str, bytes] | None = None):
        self.registry = registry
        self.commit = commit
        self.changes = changes or {}
        self.pending = pending or {}
        self.override = override
        self.blobs = blobs or {}  # a write's own blobs, in memory
        # At the head, what each reference resolved to (dropped when main moves).
        self._resolved: dict[str, Prompt] = {}

    def clear(self) -> None:
        """Forget resolutions (``main`` moved)."""
        self._resolved.clear()

    # ---- rendering -------------------------------------------------------------------
    def prompt(self, text: str) -> Prompt:
        """The parsed part an ``{% include %}`` names (the render's resolver)."""
        found = self._resolved.get(text)
        if found is not None:
            return found
        found = self._prompt(text)
        if self.commit is None and self.override is None:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            self._resolved[text] = found
        return found

    def _prompt(self, text: str) -> Prompt:
        try:
            include = Include(text, parse_reference(text, "prompt"), 0)
            blob = self.blob(include)
        except PromptrevError as exc:
            raise RenderFailed(f"included part '{text}': {exc.message}") from None
        return self.registry.parsed(blob, include.name)

    def bind(self, prompt: Prompt) -> Prompt:
        """A copy of ``prompt`` whose includes resolve here."""
        return dataclasses.replace(prompt, includes=self.prompt)

    # ---- resolving -------------------------------------------------------------------
    def blob(self, include: Include) -> str:
        """The blob of the version ``include`` names here; :class:`Missing` says why none."""
        over = self.override
        if over is not None and include.name == over.name and over.follows(include):
            if over.blob is None:
                raise Missing(f"prompt '{include.name}' is deleted")
            return over.blob
        if self.commit is None:
            return self._at_head(include)
        ref = include.reference
        if ref.selector is None:
            return self._latest(include.name)
        if ref.number is not None:
            return self._version(include.name, ref.number)
        labels = self._labels(include.name) if ref.may_be_label else {}
        if ref.selector in labels:
            return self._version(include.name, labels[ref.selector])
        if ref.may_be_commit:
            return self._at_head(include)
        known = ", ".join(sorted(labels)) or "none"
        raise Missing(f"prompt '{include.name}' has no label '{ref.selector}' "
                      f"(labels: {known})")

    def text(self, blob: str) -> str:
        """A blob's text (a write's own from memory: a bulk import reads nothing back)."""
        data = self.blobs.get(blob)
        return data.decode("utf-8") if data is not None else self.registry.text_of(blob)

    def _at_head(self, include: Include) -> str:
        if include.selector is None:  # the latest: its blob is on the artifact's row
            row = self.registry.index.artifact("prompt", include.name)
            if row is not None and not row.deleted:
                return row.blob
        try:
            version = self.registry.resolve(include.reference, "prompt")
        except PromptrevError as exc:
            raise Missing(exc.message) from None
        if version.deleted:
            raise Missing(f"prompt '{include.name}' version {version.number} is a deletion")
        return version.blob

    def _file(self, path: str) -> str | None:
        if path in self.changes:
            return self.changes[path]
        return self.registry.store.blob_at(self.commit, path)

    def _latest(self, name: str) -> str:
        blob = self._file(PROMPT.path(name))
        if blob is None:
            row = self.registry.index.artifact("prompt", name)
            raise Missing(f"prompt '{name}' is deleted" if row is not None or
                          self.pending.get(name) else f"no prompt named '{name}'")
        return blob

    def _labels(self, name: str) -> dict[str, int]:
        path = PROMPT.label_path(name)
        blob = self._file(path)
        if blob is None:
            return {}
        return parse_label_map(self.registry.text_of(blob), path)

    def _version(self, name: str, number: int) -> str:
        index = self.registry.index
        row = index.artifact("prompt", name)
        indexed = row.latest if row is not None else 0
        total = indexed + self.pending.get(name, 0)
        if total == 0:
            raise Missing(f"no prompt named '{name}'")
        if not 1 <= number <= total:
            raise Missing(f"prompt '{name}' has no version {number} (versions 1..{total})")
        if number > indexed:  # made by the write being checked
            return self._latest(name) if number == total else ""
        version = index.version(row.id, number)
        if version is None or version.deleted:
            raise Missing(f"prompt '{name}' version {number} is a deletion")
        return version.blob


# ---- save-time checks --------------------------------------------------------------------
def check_write(registry: Registry, head: str, changes: dict[str, str | None],
                saved: list[str], deleted: list[str], relabelled: list[str],
                blobs: dict[str, bytes] | None = None) -> None:
    """Refuse a write whose prompts would include a missing part or themselves.

    ``saved`` are the prompts the write stores new content for, ``deleted`` those it
    deletes and ``relabelled`` those whose labels it moves: the prompts that include those
    are checked again (a part deleted, or a label moved onto a version that includes them).
    """
    pending = {name: 1 for name in saved + deleted}
    parts = Parts(registry, head, changes=changes, pending=pending, blobs=blobs)
    problems = _check(parts, saved, deleted + relabelled)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValidationFailed(problems[0]["message"] + more, problems)


def check_commit(registry: Registry, commit: str, versions: list[str],
                 relabelled: list[str]) -> list[dict[str, str]]:
    """The same check for history arriving at ``commit`` (a push, a pull, a merge):
    ``versions`` are the prompts it makes versions of, with repeats (one per version)."""
    pending: dict[str, int] = {}
    for name in versions:
        pending[name] = pending.get(name, 0) + 1
    parts = Parts(registry, commit, pending=pending)
    present = [n for n in pending if registry.store.blob_at(commit, PROMPT.path(n))]
    gone = [n for n in pending if n not in present]
    return _check(parts, present, gone + relabelled)


def _check(parts: Parts, saved: list[str], touched: list[str]) -> list[dict[str, str]]:
    roots = list(dict.fromkeys(saved))
    if touched:
        rows = parts.registry.index.dependents(touched)
        roots += [r.name for r in rows if r.kind == "prompt" and r.name not in roots]
    problems: list[dict[str, str]] = []
    done: set[tuple[str, str]] = set()
    for name in roots:
        try:
            blob = parts._latest(name)
        except Missing:
            continue  # deleted by this very write
        strict = name in saved  # its own syntax was just validated; read it strictly
        _visit(parts, name, blob, [name], set(), done, problems, strict)
    return problems


def _visit(parts: Parts, name: str, blob: str, chain: list[str], path: set,
           done: set, problems: list, strict: bool = False) -> None:
    key = (name, blob)
    if key in done or not blob:
        return
    if len(chain) > MAX_DEPTH:
        problems.append(_problem(chain, f"parts nest more than {MAX_DEPTH} deep"))
        return
    text = parts.text(blob)
    filename = PROMPT.filename(name)
    includes = _strict_includes(text, filename) if strict else text_includes(text, filename)
    path.add(key)
    for include in includes:
        here = chain + [include.text]
        try:
            target = parts.blob(include)
        except Missing as exc:
            problems.append(_problem(here, f"'{include.text}' does not exist: {exc.message}",
                                     filename, include.line))
            continue
        if (include.name, target) in path:
            problems.append(_problem(here, "the parts include each other (a cycle)",
                                     filename, include.line))
            continue
        _visit(parts, include.name, target, here, path, done, problems)
    path.discard(key)
    done.add(key)


def _strict_includes(text: str, filename: str) -> list[Include]:
    if not may_include(text):  # no statement can name a part: nothing to parse again
        return []
    return includes_of(parse_prompt(text, filename), filename)


def _problem(chain: list[str], what: str, filename: str | None = None,
             line: int | None = None) -> dict[str, Any]:
    where = f"{filename}, line {line}: " if filename and line else ""
    return {"file": PROMPT.filename(chain[0]), "line": line,
            "chain": " -> ".join(chain),
            "message": f"{where}{' -> '.join(chain)}: {what}"}


# ---- dependents and impact -----------------------------------------------------------------
def dependents(registry: Registry, name: str, *, transitive: bool = True) -> list[dict]:
    """The live prompts whose latest version includes ``name`` (directly, then through
    other parts: ``via``), each with the reference as written and the version it uses."""
    registry.sync()
    out: list[dict] = []
    seen = {name}
    frontier = [name]
    while frontier:
        rows = registry.index.dependents(frontier)
        frontier = []
        for row in rows:
            if row.kind != "prompt":
                continue
            uses, problem = _uses(registry, row.ref)
            out.append({"name": row.name, "version": row.latest, "ref": row.ref,
                        "part": row.target, "selector": row.selector,
                        "pinned": _is_pinned(row.ref), "uses": uses, "problem": problem,
                        "via": None if row.target == name else row.target})
            if row.name not in seen:
                seen.add(row.name)
                frontier.append(row.name)
        if not transitive:
            break
    return out


def _is_pinned(ref: str) -> bool:
    parsed = parse_reference(ref, "prompt")
    return parsed.number is not None or (parsed.selector is not None
                                         and not parsed.may_be_label)


def _uses(registry: Registry, ref: str) -> tuple[int | None, str | None]:
    try:
        version = registry.resolve(ref, "prompt")
    except PromptrevError as exc:
        return None, exc.message
    return version.number, None


def impact(registry: Registry, name: str, old_blob: str | None, new_blob: str | None,
           follows: Callable[[Include], bool], variables: dict[str, Any] | None = None
           ) -> list[dict]:
    """Each dependent of ``name`` rendered with the part before and after a change.

    ``follows`` picks the references the change reaches (floating ones for new content,
    ``@label`` ones for a label move); the others keep resolving as they do at ``main``.
    Returns one entry per dependent: ``changed`` and, when it changed, its rendered diff.

    Each render has its own budget, but a part may have any number of dependents (an
    editor can save thousands, each rendering just under the time limit): once the
    renders have taken :data:`IMPACT_SECONDS`, the rest are listed unrendered
    (``changed`` None, ``skipped`` saying why), so a label move or a diff page never holds
    a worker for dependents × 2 × the render time.
    """
    out = []
    seen = set()
    deadline = time.monotonic() + IMPACT_SECONDS
    for dep in dependents(registry, name):
        if dep["name"] in seen or dep["name"] == name:
            continue
        seen.add(dep["name"])
        if time.monotonic() > deadline:
            out.append({"name": dep["name"], "version": dep["version"], "ref": dep["ref"],
                        "via": dep["via"], "changed": None,
                        "skipped": f"not rendered: the impact took longer than "
                                   f"{IMPACT_SECONDS:g} s (render it: promptrev diff)"})
            continue
        prompt = registry.prompt(dep["name"])
        before = Parts(registry, override=Override(name, follows, old_blob)).bind(prompt)
        after = Parts(registry, override=Override(name, follows, new_blob)).bind(prompt)
        ref = f"{dep['name']}@{dep['version']}"
        rendered = rendered_diff(before, after, variables, ref, ref)
        changed = (rendered.left, rendered.left_error) != (rendered.right, rendered.right_error)
        entry = {"name": dep["name"], "version": dep["version"], "ref": dep["ref"],
                 "via": dep["via"], "changed": changed}
        if changed:
            entry["rendered"] = rendered
        out.append(entry)
    return out


def plain(entries: list[dict]) -> list[dict]:
    """Impact entries as JSON-ready dicts (the rendered diffs are objects, for the pages)."""
    return [{**e, "rendered": dataclasses.asdict(e["rendered"])} if "rendered" in e else e
            for e in entries]


def floating(include: Include) -> bool:
    """References that follow new content of a part: those naming no version."""
    return include.selector is None


def following_label(label: str) -> Callable[[Include], bool]:
    """References that follow a move of ``label``."""
    return lambda include: include.selector == label

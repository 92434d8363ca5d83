"""Checking history that arrives from outside: a ``git push``, a pull from a remote, a merge.

Everything promptrev writes itself is validated before it is committed; commits made by
plain Git are checked here before ``main`` (or a review branch) may point at them, so a
registry only ever holds artifacts the server would have accepted. Each problem names the
file, and the commit it came in, so the person pushing knows what to fix.

First, for every commit that arrives, each file entry it brings in must fit the registry's
tree (:mod:`promptrev.model.layout`): a regular file inside the layout's folders, within
the size limit. Files that fail are never read; the rest are checked by content.

Two shapes of check:

* :func:`check_history` for ``main`` moving from ``old`` to ``new``: ``old`` must stay on
  ``new``'s first-parent chain (versions are numbered along that chain, so anything else
  would renumber history), and every new first-parent commit becomes versions, so each
  one is checked, with label targets counted as the index will count them.
* :func:`check_changes` for a proposal (a review branch): only the end result against
  the base it starts from matters, because merging it makes one commit on ``main``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promptrev.model import fanout
from promptrev.model.adapter_cards import (
    CONFIG,
    WEIGHTS,
    check_sidecars,
    config_problem,
    parse_card,
    safetensors_problem,
)
from promptrev.model.artifacts import (
    KINDS,
    by_artifact,
    kind_of_path,
    label_of_path,
    placement_problem,
    policy_of_path,
    split_of_path,
)
from promptrev.model.labels import parse_label_map, parse_splits
from promptrev.model.layout import entry_problems
from promptrev.model.names import validate_name
from promptrev.model.release import parse_release_policy
from promptrev.model.validation import check_content

from .composition import check_commit
from .errors import PromptrevError, ValidationFailed
from .storage.gitstore import Change

if TYPE_CHECKING:
    from .registry import Registry

_FOLDERS = {kind.folder for kind in KINDS.values()}


@dataclass(frozen=True)
class LabelMove:
    """A label (or a traffic split on it) that a commit changes."""

    kind: str
    name: str
    label: str
    old: Any
    new: Any
    split: bool = False

    def describe(self) -> str:
        """``summarize: production 3 → 4`` (or the split's arms)."""
        what = "split on " if self.split else ""
        return f"{self.name}: {what}{self.label} {self.old or '-'} → {self.new or '-'}"


@dataclass(frozen=True)
class PolicyChange:
    """A commit that adds, changes or removes the release policy of some labels."""

    kind: str
    name: str
    labels: tuple[str, ...]
    path: str

    def describe(self) -> str:
        """``summarize: release policy of production``."""
        return f"{self.name}: release policy of {', '.join(self.labels)}"


@dataclass
class Incoming:
    """What arriving history would do to the registry, and what is wrong with it."""

    commits: list[str] = field(default_factory=list)
    versions: list[tuple[str, str, str]] = field(default_factory=list)  # kind, name, commit
    label_moves: list[LabelMove] = field(default_factory=list)
    policy_changes: list[PolicyChange] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)

    def problem(self, file: str, commit: str | None, message: str) -> None:
        """Record a problem with ``file`` as it is in ``commit``."""
        entry = {"file": file, "message": message}
        if commit:
            entry["commit"] = commit
        self.problems.append(entry)

    def raise_for_problems(self, what: str = "the pushed history") -> None:
        """Raise :class:`ValidationFailed` listing every problem, the first in the message."""
        if not self.problems:
            return
        lines = [_line(p) for p in self.problems[:20]]
        more = len(self.problems) - len(lines)
        text = f"{what} has {len(self.problems)} problem(s):\n  " + "\n  ".join(lines)
        if more > 0:
            text += f"\n  ... and {more} more"
        raise ValidationFailed(text, self.problems)


def _line(problem: dict[str, str]) -> str:
    where = f" (commit {problem['commit'][:10]})" if problem.get("commit") else ""
    message = problem["message"]
    if not message.startswith(problem["file"]):
        message = f"{problem['file']}: {message}"
    return message + where


def check_history(registry: Registry, old: str | None, new: str, *,
                  foreign: bool = False) -> Incoming:
    """Check ``main`` moving from ``old`` to ``new`` commit by commit (oldest first).

    The index must be at ``old`` (call ``registry.sync()`` first): label targets are
    counted from it. ``foreign``: the history is a followed remote's (a pull), whose files
    outside the layout's folders are left alone.
    """
    store = registry.store
    out = Incoming()
    try:
        store.repo[new].peel(None)
    except (KeyError, ValueError):
        out.problem("-", new, f"commit {new} is not in the repository")
        return out
    chain = store.first_parent_chain(new, old)
    if chain is None:
        out.problem("-", new, "main's current commit is not on the first-parent history of "
                    "the new one (versions are numbered along it). Rebase onto main "
                    "('git pull --rebase') instead of merging main into your work, and push "
                    "again")
        return out
    out.commits = chain
    refused = _check_entries(registry, store.commits_only_in(new, old), out, foreign)
    counter = _Counter(registry)
    for sha in chain:
        _check_commit(registry, sha, store.changes(sha), counter, out, refused)
    _check_places(registry, new, store.diff(old, new), out, refused)
    _check_parts(registry, new, out)
    return out


def check_files(registry: Registry, old: str | None, new: str, *,
                foreign: bool = False) -> Incoming:
    """Check only the file entries the commits from ``old`` to ``new`` bring in: no
    symbolic link, submodule, Git control file or oversized blob (inside the layout, with
    ``foreign``). What a replica asks of the history its primary sends (the primary
    checked the rest when it took the history in; a hostile primary gets no file past
    this that a push could not bring).
    """
    out = Incoming()
    _check_entries(registry, registry.store.commits_only_in(new, old), out, foreign)
    return out


def check_changes(registry: Registry, base: str, new: str, *,
                  foreign: bool = False) -> Incoming:
    """Check the net change from ``base`` to ``new`` (a proposal), as one commit would be.

    ``foreign`` as for :func:`check_history`.
    """
    store = registry.store
    out = Incoming()
    out.commits = [new]
    # Every commit of a proposal is in the registry (and its clones), not only its end.
    refused = _check_entries(registry, store.commits_only_in(new, base, store.head()), out,
                             foreign)
    changes = store.diff(base, new)
    _check_commit(registry, new, changes, _Counter(registry), out, refused)
    _check_places(registry, new, changes, out, refused)
    _check_parts(registry, new, out)
    return out


def _check_parts(registry: Registry, new: str, out: Incoming) -> None:
    """The end result's includes: no missing part, no cycle (:mod:`.composition`)."""
    if out.problems:
        return  # a file that failed its own checks is not read for its parts
    versions = [name for kind, name, _ in out.versions if kind == "prompt"]
    relabelled = sorted({m.name for m in out.label_moves if m.kind == "prompt"})
    if versions or relabelled:
        for problem in check_commit(registry, new, versions, relabelled):
            out.problem(problem["file"], new, problem["message"])


def _check_entries(registry: Registry, commits: list[str], out: Incoming,
                   foreign: bool) -> set[str]:
    """Check the file entries each commit brings in; return the objects of those refused.

    Refused objects are never read afterwards: a gitlink names no blob, and a blob over
    the limit is not worth decompressing.
    """
    refused: set[str] = set()
    for sha in reversed(commits):  # oldest first, as the person pushing made them
        for entry in registry.store.new_entries(sha):
            problems = entry_problems(entry.path, entry.mode, entry.size, registry.max_bytes,
                                      foreign=foreign)
            for problem in problems:
                out.problem(entry.path, sha, problem)
            if problems:
                refused.add(entry.oid)
    return refused


class _Counter:
    """Version counts as the index will have them after each checked commit."""

    def __init__(self, registry: Registry):
        self.index = registry.index
        self.latest: dict[tuple[str, str], int] = {}
        self.deleted: dict[tuple[str, str], set[int]] = {}
        self.rows: dict[tuple[str, str], Any] = {}

    def _row(self, key: tuple[str, str]):
        if key not in self.rows:
            self.rows[key] = self.index.artifact(*key)
        return self.rows[key]

    def count(self, key: tuple[str, str]) -> int:
        if key in self.latest:
            return self.latest[key]
        row = self._row(key)
        return row.latest if row is not None else 0

    def add(self, key: tuple[str, str], deleted: bool) -> None:
        number = self.count(key) + 1
        self.latest[key] = number
        if deleted:
            self.deleted.setdefault(key, set()).add(number)

    def is_deletion(self, key: tuple[str, str], number: int) -> bool:
        if number in self.deleted.get(key, ()):
            return True
        row = self._row(key)
        if row is None or number > row.latest:
            return False
        version = self.index.version(row.id, number)
        return version is not None and version.deleted


def _check_commit(registry: Registry, sha: str, changes: list[Change], counter: _Counter,
                  out: Incoming, refused: set[str]) -> None:
    store = registry.store
    adapter_folders: set[str] = set()
    def present(path: str) -> bool:
        return store.blob_at(sha, path) is not None

    content, rest = by_artifact(changes, present=present)
    for touched in content:
        kind, name, path = touched.kind, touched.name, touched.path
        if touched.new in refused:  # its problem is recorded; never read it
            continue
        try:
            validate_name(name)
        except PromptrevError as exc:
            out.problem(path, sha, exc.message)
            continue
        if touched.new is not None:
            with _checking(path, sha, out):
                _check_content(registry, kind.name, name, path, touched.new, sha, out)
        counter.add((kind.name, name), touched.new is None)
        out.versions.append((kind.name, name, sha))
        if kind.sidecars:
            adapter_folders.add(path.rsplit("/", 1)[0])
    labels, rest = by_artifact(rest, label_of_path, present)
    splits, rest = by_artifact(rest, split_of_path, present)
    policies, rest = by_artifact(rest, policy_of_path, present)
    for change in rest:
        path = change.path
        top = path.split("/", 1)[0]
        if placement_problem(path) is not None:
            continue  # in a wrong bucket: told where it belongs if it stays (_check_places)
        if top == "adapters" and path.rsplit("/", 1)[-1] in (CONFIG, WEIGHTS):
            adapter_folders.add(path.rsplit("/", 1)[0])
        elif change.new is not None and top in ("labels", "splits", "policies"):
            single = {"labels": "label", "splits": "split", "policies": "policy"}[top]
            out.problem(path, sha, f"not a {single} file: {top} files are stored as "
                        f"{fanout.pattern(f'{top}/<kind folder>', '.yaml')}")
        elif change.new is not None and top in _FOLDERS:
            kind = next(k for k in KINDS.values() if k.folder == top)
            out.problem(path, sha, f"not a {kind.name} file: {kind.name}s are stored as "
                        f"{fanout.pattern(kind.folder, kind.suffix)}")
    for folder in sorted(adapter_folders):
        with _checking(f"{folder}/adapter.yaml", sha, out):
            _check_adapter_folder(registry, sha, folder, out, refused)
    for touched, split in [(t, False) for t in labels] + [(t, True) for t in splits]:
        try:
            validate_name(touched.name)
        except PromptrevError as exc:
            out.problem(touched.path, sha, exc.message)
            continue
        with _checking(touched.path, sha, out):
            _check_labels(store, sha, touched.kind.name, touched.name, touched, split,
                          counter, out)
    for touched in policies:
        with _checking(touched.path, sha, out):
            _check_policy(store, sha, touched, out)


def _check_places(registry: Registry, new: str, changes: list[Change], out: Incoming,
                  refused: set[str]) -> None:
    """Every file the new ``main`` (or proposal) adds or changes must sit where its name
    puts it (:mod:`promptrev.model.fanout`), and no name may keep a second file at the
    path the layout before buckets gave it. The end result counts, not each commit: a
    history made before buckets, and moved into them since, is accepted.
    """
    store = registry.store
    for change in changes:
        if change.new is None or change.new in refused:
            continue
        problem = placement_problem(change.path)
        if problem is not None:
            out.problem(change.path, new, problem)
            continue
        found = kind_of_path(change.path) or label_of_path(change.path) or \
            split_of_path(change.path) or policy_of_path(change.path)
        if found is None:
            continue
        old_path = fanout.shown(change.path)
        if old_path != change.path and store.blob_at(new, old_path) is not None:
            out.problem(old_path, new, f"{old_path} and {change.path} both hold "
                        f"{found[0].name} '{found[1]}': main has moved its files into "
                        "buckets since this work started; rebase onto main ('git pull "
                        "--rebase') and push again")


@contextmanager
def _checking(path: str, sha: str, out: Incoming) -> Iterator[None]:
    """Whatever a check of untrusted content raises refuses the file, naming it.

    Parsers meet input nobody planned for (a YAML alias that contains itself); the person
    pushing gets a problem line, never a traceback, and the rest is still checked.
    """
    try:
        yield
    except PromptrevError as exc:
        out.problem(path, sha, exc.message)
    except RecursionError:
        out.problem(path, sha, f"{path}: nested too deeply to check (a YAML alias that "
                    "contains itself?)")
    except Exception as exc:  # any failure on pushed content is a refusal
        out.problem(path, sha, f"{path}: could not be checked ({type(exc).__name__}: "
                    f"{exc})")


def _check_content(registry: Registry, kind: str, name: str, path: str, blob: str, sha: str,
                   out: Incoming) -> None:
    data = registry.store.blob(blob)
    try:
        check_content(kind, name, data, registry.max_bytes)
    except PromptrevError as exc:
        details = exc.details.get("problems") if isinstance(exc.details, dict) else None
        if details:
            for problem in details:
                out.problem(problem.get("file", path), sha, problem.get("message", exc.message))
        else:
            out.problem(path, sha, exc.message)


def _check_adapter_folder(registry: Registry, sha: str, folder: str, out: Incoming,
                          refused: set[str]) -> None:
    store = registry.store
    card_path = f"{folder}/adapter.yaml"
    card_blob = store.blob_at(sha, card_path)
    blobs = {name: store.blob_at(sha, f"{folder}/{name}") for name in (CONFIG, WEIGHTS)}
    if refused & {card_blob, *blobs.values()}:
        return  # a file of it is refused already (a link, a gitlink, too large)
    if card_blob is None:
        for name, blob in blobs.items():
            if blob is not None:
                out.problem(f"{folder}/{name}", sha, f"{folder}/{name} has no adapter card "
                            f"next to it ({card_path})")
        return
    for name, blob in blobs.items():
        if blob is None:
            out.problem(f"{folder}/{name}", sha, f"{folder}/{name} is missing (an adapter is "
                        "its card, config and weights pointer together)")
            return
    try:
        card = parse_card(store.blob(card_blob).decode("utf-8", "replace"))
        pointer = check_sidecars(card, store.blob(blobs[CONFIG]),
                                 store.blob(blobs[WEIGHTS]).decode("utf-8", "replace"), folder)
    except PromptrevError as exc:
        out.problem(card_path, sha, exc.message)
        return
    problem = config_problem(store.blob(blobs[CONFIG]))
    if problem:
        out.problem(f"{folder}/{CONFIG}", sha, f"{folder}/{CONFIG}: {problem}")
    stored = registry.objects.size(pointer.oid)
    if stored is None:
        out.problem(f"{folder}/{WEIGHTS}", sha, f"the weights {pointer.oid[:12]}… are not in "
                    "this registry's object store: push adapters with 'promptrev adapter "
                    "push', or with git-lfs installed ('git lfs install'), whose pre-push "
                    "hook uploads the weights before the pointer")
    elif stored != pointer.size:
        out.problem(f"{folder}/{WEIGHTS}", sha, f"{folder}/{WEIGHTS} says the weights "
                    f"{pointer.oid[:12]}… are {pointer.size:,} bytes, but that object is "
                    f"{stored:,} bytes: a pointer (and its card) must give its object's true "
                    "size. Push adapters with 'promptrev adapter push'")
    else:
        with registry.objects.open(pointer.oid) as fh:
            problem = safetensors_problem(fh)
        if problem:
            out.problem(f"{folder}/{WEIGHTS}", sha, f"{folder}/{WEIGHTS}: the weights "
                        f"{pointer.oid[:12]}… are {problem}; adapters are PEFT folders saved "
                        "with safe_serialization")


def _check_policy(store, sha: str, change, out: Incoming) -> None:
    """A release-policy file must parse; which labels' rules it changes is recorded."""
    validate_name(change.name)
    path = change.path
    if change.kind.name == "dataset":
        out.problem(path, sha, f"{path}: release policies gate prompts and adapters, not "
                    "datasets")
        return
    old = parse_release_policy(store.blob(change.old).decode("utf-8", "replace"), path) \
        if change.old else {}
    new = parse_release_policy(store.blob(change.new).decode("utf-8", "replace"), path) \
        if change.new else {}
    changed = tuple(sorted(label for label in set(old) | set(new)
                           if old.get(label) != new.get(label)))
    if changed:
        out.policy_changes.append(PolicyChange(change.kind.name, change.name, changed, path))


def _check_labels(store, sha: str, kind: str, name: str, change: Change, split: bool,
                  counter: _Counter, out: Incoming) -> None:
    parse = parse_splits if split else parse_label_map
    path = change.path
    try:
        old = parse(store.blob(change.old).decode("utf-8", "replace"), path) \
            if change.old else {}
        new = parse(store.blob(change.new).decode("utf-8", "replace"), path) \
            if change.new else {}
    except PromptrevError as exc:
        out.problem(path, sha, exc.message)
        return
    key = (kind, name)
    latest = counter.count(key)
    for label in sorted(set(old) | set(new)):
        if old.get(label) == new.get(label):
            continue
        target = new.get(label)
        numbers = list(target) if split and target else [target] if target else []
        for number in numbers:
            if number > latest:
                out.problem(path, sha, f"{path}: label '{label}' points at version {number} "
                            f"of {kind} '{name}', which has {latest} version(s)")
            elif counter.is_deletion(key, number):
                out.problem(path, sha, f"{path}: label '{label}' points at version {number} "
                            f"of {kind} '{name}', which is a deletion")
        out.label_moves.append(LabelMove(kind, name, label, old.get(label), target, split))

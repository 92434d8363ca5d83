"""Artifact kinds and the value types the registry hands out.

A kind says where its artifacts live in the Git tree and how their content is validated.
Kinds are registered by name so that later kinds (adapters) plug in without if/elif chains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from promptrev.errors import InvalidName

from . import fanout
from .adapter_cards import CARD, SIDECARS, validate_card
from .datasets import parse_dataset
from .names import validate_name
from .prompty import Problem, parse_prompt


@dataclass(frozen=True)
class Kind:
    """Where a kind of artifact is stored and how it is checked."""

    name: str
    folder: str
    suffix: str
    validate: Callable[[str, str], list[Problem]]
    sidecars: tuple[str, ...] = ()  # files stored next to the artifact's own (adapters)

    def path(self, artifact: str) -> str:
        """Repository path of the artifact's file (in its bucket: :mod:`.fanout`)."""
        return fanout.stored(self.folder, artifact, self.suffix)

    def filename(self, artifact: str) -> str:
        """The artifact's file as people read it (messages, the API): no bucket."""
        return fanout.unbucketed(self.folder, artifact, self.suffix)

    def paths(self, artifact: str) -> tuple[str, str]:
        """Where the artifact's file may be at a commit: its path, then the path the layout
        before buckets gave it (history made before a registry was migrated)."""
        return self.path(artifact), self.filename(artifact)

    def sidecar_paths(self, artifact: str) -> list[str]:
        """Repository paths of the files that belong to the artifact besides its own."""
        folder = self.path(artifact).rsplit("/", 1)[0]
        return [f"{folder}/{name}" for name in self.sidecars]

    def label_path(self, artifact: str) -> str:
        """Repository path of the artifact's label map."""
        return fanout.stored(f"labels/{self.folder}", artifact, ".yaml")

    def split_path(self, artifact: str) -> str:
        """Repository path of the artifact's traffic splits."""
        return fanout.stored(f"splits/{self.folder}", artifact, ".yaml")

    def policy_path(self, artifact: str) -> str:
        """Repository path of the release policies of the artifact's labels."""
        return fanout.stored(f"policies/{self.folder}", artifact, ".yaml")

    def artifact_of(self, path: str) -> str | None:
        """Artifact name for a repository path, or None if the path is not of this kind."""
        return fanout.name_of(self.folder, path, self.suffix)

    def labelled_artifact_of(self, path: str) -> str | None:
        """Artifact name for a label-map path, or None."""
        return fanout.name_of(f"labels/{self.folder}", path, ".yaml")

    def policy_artifact_of(self, path: str) -> str | None:
        """Artifact name for a release-policy path, or None."""
        return fanout.name_of(f"policies/{self.folder}", path, ".yaml")

    def split_artifact_of(self, path: str) -> str | None:
        """Artifact name for a traffic-split path, or None."""
        return fanout.name_of(f"splits/{self.folder}", path, ".yaml")


KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    """Register an artifact kind by name; every list of kinds is derived from these.

    A second kind of the same name, or one claiming another kind's folder, is refused.
    """
    for known in KINDS.values():
        if kind.name == known.name or kind.folder == known.folder:
            raise ValueError(f"artifact kind {kind.name!r} ({kind.folder}/) clashes with the "
                             f"registered kind {known.name!r} ({known.folder}/)")
    KINDS[kind.name] = kind
    return kind


def text_kinds() -> list[str]:
    """Kinds whose artifact is one text file (no sidecar files): editable as text."""
    return [name for name, kind in KINDS.items() if not kind.sidecars]


def _validate_prompt(text: str, filename: str) -> list[Problem]:
    return parse_prompt(text, filename).warnings


def _validate_dataset(text: str, filename: str) -> list[Problem]:
    parse_dataset(text, filename)
    return []


register_kind(Kind("prompt", "prompts", ".prompty", _validate_prompt))
register_kind(Kind("dataset", "datasets", ".jsonl", _validate_dataset))
register_kind(Kind("adapter", "adapters", "/" + CARD, validate_card, SIDECARS))


def _of(path: str, name_of: Callable[[Kind, str], str | None]) -> tuple[Kind, str] | None:
    for kind in KINDS.values():
        name = name_of(kind, path)
        if name is not None:
            return kind, name
    return None


def kind_of_path(path: str) -> tuple[Kind, str] | None:
    """Return (kind, artifact name) for a content path in the repository."""
    return _of(path, Kind.artifact_of)


def label_of_path(path: str) -> tuple[Kind, str] | None:
    """Return (kind, artifact name) for a label-map path in the repository."""
    return _of(path, Kind.labelled_artifact_of)


def split_of_path(path: str) -> tuple[Kind, str] | None:
    """Return (kind, artifact name) for a traffic-split path in the repository."""
    return _of(path, Kind.split_artifact_of)


def policy_of_path(path: str) -> tuple[Kind, str] | None:
    """Return (kind, artifact name) for a release-policy path in the repository."""
    return _of(path, Kind.policy_artifact_of)


def _located(path: str) -> tuple[str, str] | None:
    """(name, the path it belongs at) for an artifact's file, a sidecar, a label map or a
    split file, whether in its buckets, in the layout before them or in a wrong bucket;
    None for any other path (or one no valid name could be at)."""
    for kind in KINDS.values():
        for top, suffix, where in ((kind.folder, kind.suffix, kind.path),
                                   (f"labels/{kind.folder}", ".yaml", kind.label_path),
                                   (f"splits/{kind.folder}", ".yaml", kind.split_path),
                                   (f"policies/{kind.folder}", ".yaml", kind.policy_path)):
            name = fanout.name_of(top, path, suffix) or fanout.meant(top, path, suffix)
            if name is not None and _valid(name):
                return name, where(name)
        folder, _, leaf = path.rpartition("/")
        if leaf in kind.sidecars:
            card = folder + kind.suffix
            name = fanout.name_of(kind.folder, card, kind.suffix) or \
                fanout.meant(kind.folder, card, kind.suffix)
            if name is not None and _valid(name):
                return name, f"{kind.path(name).rsplit('/', 1)[0]}/{leaf}"
    return None


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


def placed(path: str) -> str:
    """Where a file of the registry's tree belongs: an artifact's file, a sidecar, a label
    map or a split file in its name's buckets (:mod:`.fanout`); any other path as it is."""
    found = _located(path)
    return found[1] if found is not None else path


def placement_problem(path: str) -> str | None:
    """Why a file of the tree is not where its name puts it (None: it is, or it is no
    artifact's): one name, one path, whatever client wrote it."""
    found = _located(path)
    if found is None or found[1] == path:
        return None
    name, right = found
    return (f"{path}: '{name}' is stored at {right}: each name has one place, in the "
            f"buckets its name gives (see 'promptrev path {name}')")


class Touched(NamedTuple):
    """What a commit did to one artifact's file (or label map): blob ids, None: absent."""

    kind: Kind
    name: str
    old: str | None
    new: str | None
    path: str  # where the file is now (where it was, for a deletion)


def by_artifact(changes: Iterable[Any], locate: Callable[[str], tuple[Kind, str] | None]
                = kind_of_path, present: Callable[[str], bool] | None = None
                ) -> tuple[list[Touched], list[Any]]:
    """Group a commit's changed paths (``.path``, ``.old``, ``.new``) by the artifact each
    stores, as ``locate`` finds it; return (what changed per artifact, the other paths).

    A file that moved without changing, as when a registry moves into buckets
    (:mod:`.fanout`), changes nothing; one that moved and changed changes once. Where a
    name has files at two paths, the one in its buckets is the artifact's: a stray copy
    elsewhere that comes or goes while it stays (``present``: whether a path is in the
    commit's tree) changes nothing.
    """
    groups: dict[tuple[str, str], list] = {}
    rest = []
    for change in changes:
        where = locate(change.path)
        if where is None:
            rest.append(change)
        else:
            groups.setdefault((where[0].name, where[1]), [where[0], where[1]]).append(change)
    out = []
    for kind, name, *found in groups.values():
        if present is not None and all(placed(c.path) != c.path for c in found) and \
                present(placed(found[0].path)):
            continue
        if len(found) == 1:
            old, new, path = found[0].old, found[0].new, found[0].path
        else:
            ours = [c for c in found if placed(c.path) == c.path]
            old = next((c.old for c in ours + found if c.old is not None), None)
            now = next((c for c in ours + found if c.new is not None), None)
            new, path = (now.new, now.path) if now is not None else (None, found[0].path)
        if old != new:
            out.append(Touched(kind, name, old, new, path))
    return out, rest


def only_moves(changes: Iterable[Any]) -> bool:
    """Whether a commit's changed paths do nothing but move files, unchanged, to where
    their names put them (or away): each file one deletion and one addition of the same
    blob, and at least one such pair. What a bucket move does to a branch."""
    groups: dict[str, list] = {}
    for change in changes:
        groups.setdefault(placed(change.path), []).append(change)
    return bool(groups) and all(
        len(found) == 2 and {c.old is None for c in found} == {True, False}
        and next(c.old for c in found if c.old) == next(c.new for c in found if c.new)
        for found in groups.values())


def kind_of_file(filename: str) -> Kind | None:
    """Guess the kind of a local file from its suffix (``.prompty``, ``.jsonl``)."""
    for kind in KINDS.values():
        if filename.endswith(kind.suffix):
            return kind
    return None


def other_account(author: str, account: str | None) -> str | None:
    """``account`` when it differs from the Git ``author`` name, else None."""
    return account if account and account != author else None


class Version(NamedTuple):
    """One immutable version of an artifact (metadata; content via ``Registry.get``).

    A named tuple rather than a dataclass: histories build thousands of these per call.
    """

    kind: str
    name: str
    number: int
    commit: str
    blob: str | None
    deleted: bool
    author: str
    email: str
    message: str
    timestamp: int
    labels: tuple[str, ...] = ()
    account: str | None = None  # the authenticated account that made it (None: unknown)

    @property
    def other_account(self) -> str | None:
        """The account, when it is not the Git author's name (pages then show both)."""
        return other_account(self.author, self.account)

    @property
    def time(self) -> datetime:
        """Commit time (UTC)."""
        return datetime.fromtimestamp(self.timestamp, timezone.utc)

    @property
    def ref(self) -> str:
        """The canonical reference of this version, ``name@N``."""
        return f"{self.name}@{self.number}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"kind": self.kind, "name": self.name, "version": self.number,
                "commit": self.commit, "blob": self.blob, "deleted": self.deleted,
                "author": self.author, "email": self.email, "account": self.account,
                "message": self.message, "time": self.time.isoformat(),
                "labels": list(self.labels)}


@dataclass(frozen=True)
class Snapshot:
    """A version together with its text."""

    version: Version
    text: str
    warnings: tuple[Problem, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        filename = KINDS[self.version.kind].filename(self.version.name)
        return {**self.version.to_dict(), "text": self.text,
                "warnings": [w.to_dict(filename) for w in self.warnings]}


@dataclass(frozen=True)
class LabelEvent:
    """One move of a label, as recorded by a commit."""

    kind: str
    name: str
    label: str
    old: int | None
    new: int | None
    commit: str
    author: str
    message: str
    time: datetime
    account: str | None = None  # the authenticated account that made it (None: unknown)

    @property
    def other_account(self) -> str | None:
        """The account, when it is not the Git author's name (pages then show both)."""
        return other_account(self.author, self.account)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"kind": self.kind, "name": self.name, "label": self.label, "from": self.old,
                "to": self.new, "commit": self.commit, "author": self.author,
                "account": self.account, "message": self.message,
                "time": self.time.isoformat()}


ACTIONS = {
    "create": "made the first version of an artifact",
    "save": "made a new version of an artifact",
    "delete": "deleted an artifact (a version that is a deletion)",
    "transaction": "made versions of several artifacts in one commit",
    "import": "imported artifacts from files",
    "label": "moved or removed labels, no content changed",
    "rollback": "moved a label back or restored older content",
    "split": "started, changed or ended a live split",
    "merge": "merged a change request into main",
    "pull-merge": "merged main with a followed remote",
    "buckets": "moved files into their hashed bucket folders; no version changed",
    "init": "created the registry",
    "files": "changed files that are not artifacts (no version, no label)",
}


@dataclass(frozen=True)
class AuditEntry:
    """One commit on ``main``: who did what, when, and why."""

    seq: int
    commit: str
    author: str
    email: str
    message: str
    time: datetime
    versions: tuple[dict[str, Any], ...]
    label_moves: tuple[dict[str, Any], ...]
    account: str | None = None  # the authenticated account that made it (None: unknown)

    @property
    def other_account(self) -> str | None:
        """The account, when it is not the Git author's name (pages then show both)."""
        return other_account(self.author, self.account)

    @property
    def action(self) -> str:
        """What kind of write this was: create, save, delete, label, rollback, import, merge…

        Every commit gets a name (``ACTIONS`` says what each means); ``files`` is a commit
        that made no version and moved no label (a README edit pushed over Git).
        """
        message = self.message
        if message.startswith("rollback"):
            return "rollback"
        if message.startswith("split "):
            return "split"
        if message.startswith("Merge change request #"):
            return "merge"
        if message.startswith("Merge ") and " into main" in message.split("\n", 1)[0]:
            return "pull-merge"
        if message.startswith(fanout.MOVE_TITLE) or message.startswith(
                "Move misplaced files into their buckets"):
            return "buckets"
        if message == "initialize registry":
            return "init"
        if message.startswith("import ") and self.versions:
            return "import"
        if self.label_moves and not self.versions:
            return "label"
        if len(self.versions) > 1:
            return "transaction"
        if self.versions:
            v = self.versions[0]
            return "delete" if v["deleted"] else ("create" if v["version"] == 1 else "save")
        return "files"

    @property
    def action_meaning(self) -> str:
        """What :attr:`action` means, in a sentence (the pages show it on hover)."""
        return ACTIONS[self.action]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"seq": self.seq, "commit": self.commit, "author": self.author,
                "email": self.email, "account": self.account, "message": self.message,
                "time": self.time.isoformat(),
                "action": self.action, "versions": list(self.versions),
                "label_moves": list(self.label_moves)}

"""Artifact kinds and the value types the registry hands out.

A kind says where its artifacts live in the Git tree and how their content is validated.
Kinds are registered by name so that later kinds (adapters) plug in without if/elif chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from .adapter_cards import CARD, SIDECARS, validate_card
from .datasets import parse_dataset
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
        """Repository path of the artifact's file."""
        return f"{self.folder}/{artifact}{self.suffix}"

    def sidecar_paths(self, artifact: str) -> list[str]:
        """Repository paths of the files that belong to the artifact besides its own."""
        folder = self.path(artifact).rsplit("/", 1)[0]
        return [f"{folder}/{name}" for name in self.sidecars]

    def label_path(self, artifact: str) -> str:
        """Repository path of the artifact's label map."""
        return f"labels/{self.folder}/{artifact}.yaml"

    def artifact_of(self, path: str) -> str | None:
        """Artifact name for a repository path, or None if the path is not of this kind."""
        prefix = self.folder + "/"
        if path.startswith(prefix) and path.endswith(self.suffix) and len(path) > len(
            prefix) + len(self.suffix):
            return path[len(prefix): -len(self.suffix)]
        return None

    def labelled_artifact_of(self, path: str) -> str | None:
        """Artifact name for a label-map path, or None."""
        prefix = f"labels/{self.folder}/"
        if path.startswith(prefix) and path.endswith(".yaml"):
            return path[len(prefix): -len(".yaml")] or None
        return None


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


def kind_of_path(path: str) -> tuple[Kind, str] | None:
    """Return (kind, artifact name) for a content path in the repository."""
    for kind in KINDS.values():
        name = kind.artifact_of(path)
        if name is not None:
            return kind, name
    return None


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
        filename = KINDS[self.version.kind].path(self.version.name)
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
        """What kind of write this was: create, save, delete, label, rollback, import…"""
        if self.message.startswith("rollback"):
            return "rollback"
        if self.message.startswith("split "):
            return "split"
        if self.label_moves and not self.versions:
            return "label"
        if len(self.versions) > 1:
            return "transaction"
        if self.versions:
            v = self.versions[0]
            return "delete" if v["deleted"] else ("create" if v["version"] == 1 else "save")
        return "other"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"seq": self.seq, "commit": self.commit, "author": self.author,
                "email": self.email, "account": self.account, "message": self.message,
                "time": self.time.isoformat(),
                "action": self.action, "versions": list(self.versions),
                "label_moves": list(self.label_moves)}

"""Transactions: many saves, deletions and label moves as one commit, or nothing.

A transaction stages changes in memory, then commits them under the writer lock with a
compare-and-swap on ``main`` (retrying when another writer got there first); a stale
``base`` is a :class:`Conflict` that says what changed since.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from promptrev.model.adapter_cards import CONFIG, WEIGHTS, AdapterFiles, dump_card
from promptrev.model.artifacts import KINDS, LabelEvent, Version
from promptrev.model.labels import (
    dump_label_map,
    dump_splits,
    parse_label_map,
    parse_splits,
)
from promptrev.model.names import validate_label, validate_name
from promptrev.model.validation import PARALLEL_MIN_ITEMS, check_content, check_many

from .composition import check_write
from .errors import (
    Busy,
    Conflict,
    InvalidName,
    NotFound,
    PromptrevError,
    ValidationFailed,
)
from .storage.gitstore import (
    Change,
    CommitInfo,
    GitStore,
    RefMoved,
    Signature,
    check_commit_message,
)
from .storage.indexer import KnownCommit, versions_made
from .storage.provenance import trailer_account, with_account, without_account

if TYPE_CHECKING:
    from .registry import Registry



class Transaction:
    """Changes to commit together; built by :meth:`Registry.transaction`."""

    # Long enough to outlast a stale ref lock left by a killed writer (removed after
    # STALE_LOCK_SECONDS), short enough that a caller is told rather than left hanging.
    RETRY_SECONDS = 30.0

    def __init__(self, registry: Registry, message: str, author: str,
                 account: str | None = None, guard: Callable[[str], None] | None = None):
        if not message or not message.strip():
            raise ValidationFailed("a commit message is required")
        check_commit_message(message)
        self.registry = registry
        # The authenticated account (the API's or the pages' user) rides in the commit as
        # a trailer, so the index (and a rebuild of it) can name it next to the author.
        self.message = with_account(message, account)
        self.author = Signature.parse(author)
        self._saves: dict[tuple[str, str], tuple[str | None, int | None]] = {}
        self._labels: list[tuple[str, str, str, int | None]] = []
        self._splits: list[tuple[str, str, str, dict[int, int]]] = []
        self._blobs: dict[str, bytes] = {}
        self._sidecars: dict[tuple[str, str], dict[str, str]] = {}
        self.commit_sha: str | None = None
        self.versions: list[Version] = []
        self.unchanged: list[Version] = []  # staged saves whose content was already current
        self.label_event: LabelEvent | None = None
        self.warnings: list = []
        # Asked with main's commit under the writer lock, just before committing: a check
        # made earlier (a release gate) still holds, or it raises and nothing is written.
        self.guard = guard

    def save(self, name: str, text: str | bytes, *, base: int | None = None,
             kind: str = "prompt") -> None:
        """Stage new content for ``name`` (validated now, written at commit)."""
        _check_kind(kind)
        validate_name(name)
        if KINDS[kind].sidecars:
            raise ValidationFailed(f"a {kind} is more than one file: use push_adapter (or "
                                   "Transaction.save_adapter), not save")
        decoded, warnings = check_content(kind, name, text, self.registry.max_bytes)
        self.warnings += warnings
        self._stage_content(kind, name, decoded.encode("utf-8"), base)

    def save_many(self, items: Iterable[tuple[str, str | bytes]], *,
                  kind: str = "prompt") -> None:
        """Stage many ``(name, content)`` pairs; large batches are validated on every core.

        All-or-nothing like :meth:`save`: if any item is invalid, nothing is staged and
        :class:`ValidationFailed` lists the problems of every invalid item.
        """
        _check_kind(kind)
        items = list(items)
        for name, _ in items:
            validate_name(name)
        with _collection_paused(len(items)):
            results = check_many(kind, items, self.registry.max_bytes)
            problems: list[dict] = []
            for (name, _), (_, error) in zip(items, results, strict=True):
                if error is not None:
                    problems += error.details.get("problems") or [
                        {"file": KINDS[kind].filename(name), "message": error.message}]
            if problems:
                raise ValidationFailed(f"{len(problems)} problem(s) in {len(items)} {kind}s; "
                                       f"first: {problems[0].get('message')}", problems)
            for (name, content), (warnings, _) in zip(items, results, strict=True):
                self.warnings += warnings
                data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
                self._stage_content(kind, name, data, None)

    def save_adapter(self, name: str, files: AdapterFiles, *, base: int | None = None) -> None:
        """Stage an adapter version: its card plus config and weights pointer files."""
        validate_name(name)
        card_text, _ = check_content("adapter", name, dump_card(files.card),
                                     self.registry.max_bytes)
        folder = KINDS["adapter"].path(name).rsplit("/", 1)[0]
        sidecars = {}
        for filename, data in ((CONFIG, files.config_bytes),
                               (WEIGHTS, files.weights.text().encode())):
            blob = GitStore.blob_id(data)
            self._blobs[blob] = data
            sidecars[f"{folder}/{filename}"] = blob
        self._stage_content("adapter", name, card_text.encode("utf-8"), base)
        self._sidecars[("adapter", name)] = sidecars

    def _stage_content(self, kind: str, name: str, data: bytes, base: int | None) -> None:
        blob = GitStore.blob_id(data)
        self._blobs[blob] = data
        self._stage(kind, name, blob, base)

    def delete(self, name: str, *, base: int | None = None, kind: str = "prompt") -> None:
        """Stage the deletion of ``name``."""
        _check_kind(kind)
        validate_name(name)
        self._stage(kind, name, None, base)

    def set_label(self, name: str, label: str, version: int, *, kind: str = "prompt") -> None:
        """Stage a label move."""
        _check_kind(kind)
        validate_name(name)
        validate_label(label)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValidationFailed(f"version must be a positive integer, not {version!r}")
        self._labels.append((kind, name, label, version))

    def remove_label(self, name: str, label: str, *, kind: str = "prompt") -> None:
        """Stage a label removal."""
        _check_kind(kind)
        validate_name(name)
        validate_label(label)
        self._labels.append((kind, name, label, None))

    def set_split(self, name: str, label: str, arms: dict[int, int], *,
                  kind: str = "prompt") -> None:
        """Stage a traffic split of ``label`` over versions (``{4: 90, 5: 10}``); ``{}`` ends it."""
        _check_kind(kind)
        validate_name(name)
        validate_label(label)
        if not isinstance(arms, dict) or not all(
                isinstance(v, int) and isinstance(w, int) and not isinstance(w, bool)
                and v >= 1 and w >= 1 for v, w in arms.items()):
            raise ValidationFailed("a split maps version numbers to positive integer weights, "
                                   "e.g. {4: 90, 5: 10}")
        if len(arms) == 1:
            raise ValidationFailed("a split needs at least two versions (or none, to end it)")
        self._splits.append((kind, name, label, dict(arms)))

    def _stage(self, kind: str, name: str, blob: str | None, base: int | None) -> None:
        if (kind, name) in self._saves:
            raise ValidationFailed(f"{kind} '{name}' appears twice in one transaction")
        if base is not None and (not isinstance(base, int) or base < 0):
            raise ValidationFailed(f"base must be a version number, not {base!r}")
        self._saves[(kind, name)] = (blob, base)

    def result_for(self, kind: str, name: str) -> Version:
        """The version of ``name`` this transaction made, or the one its content already had.

        Both are settled under the writer lock, from this transaction's own commit (or the
        head it found unchanged): never "the latest" read afterwards, which another writer
        may already have moved.
        """
        for version in self.versions + self.unchanged:
            if version.kind == kind and version.name == name:
                return version
        raise NotFound(f"{kind} '{name}' was not part of this transaction")

    def commit(self) -> str | None:
        """Write everything as one commit; retry on a lost ref race, never overwrite."""
        if not self._saves and not self._labels and not self._splits:
            return None
        with _collection_paused(len(self._saves)):
            return self._commit()

    def _commit(self) -> str | None:
        reg = self.registry
        store = reg.store
        store.write_blobs(self._blobs)  # before taking the lock: unreachable until committed
        delay = 0.001
        deadline = time.monotonic() + self.RETRY_SECONDS
        while time.monotonic() < deadline:
            with reg.writing(timeout=self.RETRY_SECONDS):
                head = reg.sync()
                if self.guard is not None:
                    self.guard(head)
                changes, known = self._changes(head)
                if changes:
                    self._check_parts(head, changes)
                made = store.write_commit(head, changes, self.message, self.author) \
                    if changes else None
                if made is None:
                    self._settle_unchanged(known, [])
                    return None
                sha = made.sha
                known.sha, known.info = sha, made
                try:
                    reg.advance_main(head, sha, self.message.splitlines()[0], known=known)
                except RefMoved:
                    pass
                else:
                    self.commit_sha = sha
                    self.versions = self._made_versions(made, versions_made(known))
                    self._settle_unchanged(known, self.versions)
                    self._record_label_event(sha)
                    return sha
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.1)
        raise Busy(f"main kept moving (or stayed locked) for {self.RETRY_SECONDS:.0f}s while "
                   "committing; try again")

    def _check_parts(self, head: str, changes: dict[str, str | None]) -> None:
        """Refuse includes of missing parts and cycles (:mod:`.composition`), for the
        prompts saved here and those that include a prompt deleted or relabelled here."""
        saved, deleted = [], []
        for (kind, name), (blob, _) in self._saves.items():
            if kind == "prompt" and KINDS[kind].path(name) in changes:
                (saved if blob is not None else deleted).append(name)
        relabelled = sorted({n for k, n, _, _ in self._labels if k == "prompt"})
        if saved or deleted or relabelled:
            check_write(self.registry, head, changes, saved, deleted, relabelled,
                        self._blobs)

    def _settle_unchanged(self, known: KnownCommit, made: list[Version]) -> None:
        """The versions of staged saves that changed nothing (their content was current)."""
        done = {(v.kind, v.name) for v in made}
        for kind, name in self._saves:
            row = known.artifacts.get((kind, name))
            if (kind, name) not in done and row is not None:
                self.unchanged.append(self.registry.resolve(f"{name}@{row.latest}", kind))

    def _made_versions(self, info: CommitInfo, rows: list[dict]) -> list[Version]:
        return [Version(r["kind"], r["name"], r["number"], info.sha, r["blob"],
                        r["blob"] is None, info.author, info.email,
                        without_account(info.message), info.timestamp, (),
                        trailer_account(info.message))
                for r in sorted(rows, key=lambda r: (r["kind"], r["name"]))]

    def _changes(self, head: str) -> tuple[dict[str, str | None], KnownCommit]:
        """Path → blob changes against ``head``, and what the indexer may reuse of them."""
        reg = self.registry
        changes: dict[str, str | None] = {}
        before: dict[str, str | None] = {}
        keys = list(self._saves) + [(k, n) for k, n, _, _ in self._labels] + [
            (k, n) for k, n, _, _ in self._splits]
        current = reg.index.artifacts(keys)
        for (kind, name), (blob, base) in self._saves.items():
            art = current.get((kind, name))
            latest = art.latest if art is not None else 0
            if base is not None and base != latest:
                raise self._conflict(kind, name, base, art)
            live_blob = None if art is None or art.deleted else art.blob
            if blob is None and live_blob is None:
                raise NotFound(f"{kind} '{name}' does not exist" if art is None else
                               f"{kind} '{name}' is already deleted")
            if blob != live_blob:
                changes[KINDS[kind].path(name)] = blob
                before[KINDS[kind].path(name)] = live_blob
                self._sidecar_changes(head, kind, name, blob, changes, before)
        for (kind, name), entries in _group_labels(self._labels).items():
            path = KINDS[kind].label_path(name)
            old_blob = reg.store.blob_at(head, path)
            labels = parse_label_map(reg.store.blob(old_blob).decode(), path) if old_blob else {}
            art = current.get((kind, name))
            for label, version in entries:
                if version is None:
                    if label not in labels:
                        raise NotFound(f"{kind} '{name}' has no label '{label}' "
                                       f"(labels: {', '.join(sorted(labels)) or 'none'})")
                    del labels[label]
                    continue
                self._check_label_target(kind, name, art, version)
                labels[label] = version
            new = reg.store.write_blob(dump_label_map(labels).encode()) if labels else None
            if new != old_blob:
                changes[path] = new
                before[path] = old_blob
        for kind, name, label, arms in self._splits:
            path = KINDS[kind].split_path(name)
            old_blob = changes.get(path, reg.store.blob_at(head, path))
            splits = parse_splits(reg.store.blob(old_blob).decode(), path) if old_blob else {}
            for version in arms:
                self._check_label_target(kind, name, current.get((kind, name)), version)
            if arms:
                splits[label] = arms
            elif splits.pop(label, None) is None:
                raise NotFound(f"{kind} '{name}' has no split on label '{label}'")
            new = reg.store.write_blob(dump_splits(splits).encode()) if splits else None
            if new != old_blob:
                before.setdefault(path, reg.store.blob_at(head, path))
                changes[path] = new
        # In the order a tree walk finds them, so new artifacts get the ids a rebuild gives.
        listed = sorted((Change(p, before[p], b) for p, b in changes.items()),
                        key=lambda c: c.path.split("/"))
        known = KnownCommit("", head, listed, {key: current.get(key) for key in keys},
                            texts=self._blobs)
        return changes, known

    def _sidecar_changes(self, head: str, kind: str, name: str, blob: str | None,
                         changes: dict, before: dict) -> None:
        """The files that travel with an artifact's own (an adapter's config and weights)."""
        if not KINDS[kind].sidecars:
            return
        wanted = self._sidecars.get((kind, name), {}) if blob is not None else {}
        for path in KINDS[kind].sidecar_paths(name):
            old = self.registry.store.blob_at(head, path)
            new = wanted.get(path)
            if old != new:
                changes[path] = new
                before[path] = old

    def _check_label_target(self, kind, name, art, version) -> None:
        if art is None:
            raise NotFound(f"no {kind} named '{name}'")
        row = self.registry.index.version(art.id, version)
        if row is None:
            raise NotFound(f"{kind} '{name}' has no version {version} "
                           f"(versions 1..{art.latest})")
        if row.deleted:
            raise ValidationFailed(f"{kind} '{name}' version {version} is a deletion; "
                                   "a label must point at a version with content")

    def _conflict(self, kind: str, name: str, base: int, art) -> Conflict:
        reg = self.registry
        if art is None:
            return Conflict(f"{kind} '{name}' does not exist, so it cannot be based on "
                            f"version {base}", details={"base": base, "current": 0})
        since = [v for v in reg.history(name, kind) if v.number > base]
        details: dict[str, Any] = {"base": base, "current": art.latest,
                                   "changes": [v.to_dict() for v in since]}
        if 0 < base <= art.latest:
            details["diff"] = reg.diff(f"{name}@{base}", f"{name}@{art.latest}",
                                       kind=kind).text.unified
        who = "; ".join(f"v{v.number} by {v.author}: {v.message}" for v in since[-3:])
        if base > art.latest:
            text = f"{kind} '{name}' has no version {base} yet (latest is {art.latest})"
        else:
            text = (f"{kind} '{name}' changed since version {base}: it is now at version "
                    f"{art.latest} ({who}). Merge their change and save again with base "
                    f"{art.latest}")
        return Conflict(text, details=details)

    def _record_label_event(self, sha: str) -> None:
        if not self._labels:
            return
        try:
            history = self.registry.label_history(limit=len(self._labels) + 10)
        except PromptrevError:  # committed; the index cannot tell the move just now
            return
        events = [e for e in history if e.commit == sha]
        self.label_event = events[0] if events else None


@contextmanager
def _collection_paused(size: int) -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while a large transaction runs.

    Checking and indexing thousands of files allocates containers by the hundred
    thousand, and every 700 allocations start a collection that may walk every object of
    the process: ~20 µs per version of a bulk import, 15 % of it. Reference counting
    still frees what the transaction drops; cycles wait for the next collection after it
    (as Mercurial's ``util.nogc`` does). Small transactions are left alone, and one that
    finds collection off (a caller's choice, or an enclosing large transaction) leaves it
    to whoever turned it off.
    """
    if size < PARALLEL_MIN_ITEMS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _group_labels(entries: list[tuple[str, str, str, int | None]]
                  ) -> dict[tuple[str, str], list[tuple[str, int | None]]]:
    out: dict[tuple[str, str], list[tuple[str, int | None]]] = {}
    for kind, name, label, version in entries:
        out.setdefault((kind, name), []).append((label, version))
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidName(f"unknown artifact kind {kind!r} (kinds: {', '.join(KINDS)})")

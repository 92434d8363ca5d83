"""Bring the SQL index up to date with Git.

One algorithm serves both the incremental path (after a write, or when another process
or a plain ``git push`` moved ``main``) and ``reindex``: walk ``main``'s first-parent
chain from the last indexed commit, and for each commit record the artifact versions and
label moves it made. Rebuilding is the same walk from the root, so a rebuilt index
equals an incrementally maintained one by construction (a test checks it anyway).

The incremental walk also records the events of each commit (``version.saved``,
``label.moved``, ``rollback``) in the event outbox (:mod:`.outbox`), in the same
transaction as its rows; a rebuild records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from promptrev.model.artifacts import AuditEntry, by_artifact, label_of_path
from promptrev.model.composition import text_includes
from promptrev.model.labels import parse_label_map

from ..errors import Damaged, ValidationFailed
from . import outbox
from .gitstore import REPAIR, Change, CommitInfo, GitStore
from .index import (
    DERIVED,
    T_ARTIFACT,
    T_COMMIT,
    T_EVENT,
    T_INCLUDE,
    T_LABEL,
    T_STATE,
    T_VERSION,
    prepared,
)
from .provenance import Notes, trailer_account, without_account
from .sql import translated

FLUSH_EVERY = 500
# Built once: constructing SQLAlchemy statements per commit showed up in write profiles.
_INDEXED_HEAD = sa.select(T_STATE.c.head)
_SET_HEAD = T_STATE.update().values(head=sa.bindparam("head"),
                                    writes=T_STATE.c.writes + sa.literal_column("1"))
_INSERT_COMMIT = T_COMMIT.insert()
_INSERT_ARTIFACT = T_ARTIFACT.insert()
_UPDATE_ARTIFACT = T_ARTIFACT.update().where(T_ARTIFACT.c.id == sa.bindparam("_id")).values(
    latest=sa.bindparam("_latest"), deleted=sa.bindparam("_deleted"),
    blob=sa.bindparam("_blob"), updated_seq=sa.bindparam("_seq"))
_INSERT_VERSION = T_VERSION.insert()
_INSERT_EVENT = T_EVENT.insert()
_DELETE_LABEL = T_LABEL.delete().where(sa.and_(T_LABEL.c.artifact_id == sa.bindparam("_a"),
                                               T_LABEL.c.name == sa.bindparam("_n")))
_INSERT_LABEL = T_LABEL.insert()
_INSERT_INCLUDE = T_INCLUDE.insert()
# The indexed head, the count of index writes and the highest ids, read under the write
# lock in one round trip.
_LOCK_STATE = sa.select(T_STATE.c.head, T_STATE.c.writes, *(
    sa.select(sa.func.max(column)).scalar_subquery()
    for column in (T_COMMIT.c.seq, T_ARTIFACT.c.id, T_VERSION.c.id, T_EVENT.c.id)
)).with_for_update(of=T_STATE)


@dataclass
class KnownCommit:
    """What a writer already knows about the commit it just made on ``base``.

    ``changes`` must be exactly the commit's changed paths (as :meth:`GitStore.changes`
    would find them) and ``artifacts`` the index rows at ``base`` of every artifact the
    commit touches (None for new ones); ``info``, when given, is what
    :meth:`GitStore.commit_info` would return. The indexer then reads neither the commit
    nor its trees.
    """

    sha: str
    base: str
    changes: list[Change]
    artifacts: dict[tuple[str, str], Any]
    info: CommitInfo | None = None
    texts: dict[str, bytes] | None = None  # blob sha -> content the writer holds in memory


def versions_made(known: KnownCommit) -> list[dict]:
    """The versions a writer's own commit created, derived from that commit alone.

    The same rule the indexer applies (a changed artifact file is the next version of its
    artifact; deleting what never existed makes none), over the commit's changes and the
    artifact rows at its parent, so the writer need not read the index back (where another
    process may already have indexed the commit, or the disk may be full).
    """
    made = []
    for touched in by_artifact(known.changes)[0]:
        kind, name = touched.kind.name, touched.name
        row = known.artifacts.get((kind, name))
        if row is None and touched.new is None:
            continue
        made.append({"kind": kind, "name": name, "blob": touched.new,
                     "number": (row.latest if row is not None else 0) + 1})
    return made


def catch_up(store: GitStore, engine: Engine, *, rebuild: bool = False, behind: bool = False,
             created: dict[str, list[dict]] | None = None,
             known: KnownCommit | None = None, quiet: bool = False) -> str | None:
    """Index every commit of ``main`` not yet indexed; return the head now indexed.

    ``behind=True`` skips the unlocked freshness check (the caller just moved ``main``);
    ``created``, when given, receives the versions recorded for each commit sha;
    ``known`` lets the writer of the next commit hand over what it already knows;
    ``quiet`` records no events (a stand-in index whose events the real one will record).

    A missing ``main`` while the index or the reflog says there was one is damage: the
    index is left as it is (it helps the repair) and :class:`Damaged` raised.
    """
    with translated("updating the index"):
        return _catch_up(store, engine, rebuild, behind, created, known, quiet)


def _catch_up(store: GitStore, engine: Engine, rebuild: bool, behind: bool,
              created: dict[str, list[dict]] | None, known: KnownCommit | None,
              quiet: bool) -> str | None:
    if not rebuild and not behind:
        with engine.connect() as conn:
            indexed = conn.execute(_INDEXED_HEAD).scalar()
        if indexed is not None and indexed == store.head():
            return indexed
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            indexed, writes, *maxima = prepared(conn, _LOCK_STATE).run(conn)[0]
            head = store.head()
            if head is None:
                damage = store.missing_main_damage() or (indexed and (
                    f"refs/heads/main is missing, but the index reflects commit "
                    f"{indexed[:12]}: the registry is damaged, not empty. Run '{REPAIR}' to "
                    "restore it"))
                if damage:
                    raise Damaged(damage, details={"repair": REPAIR})
            if indexed == head and not rebuild:
                return head
            if (known is not None and not rebuild and head == known.sha
                    and indexed == known.base):
                chain = [head]  # the writer's own commit, whose first parent is ``base``
            else:
                chain = None if rebuild or head is None else store.first_parent_chain(
                    head, indexed)
            # A rebuild, or a new index's first walk, re-reads old history: no news.
            announce = chain is not None and indexed is not None and not quiet
            if chain is None:
                for table in DERIVED:
                    conn.execute(table.__table__.delete())
                maxima = [0, 0, 0, 0]
                chain = store.first_parent_chain(head, None) if head else []
            applier = _Applier(conn, store, maxima, created, announce=announce)
            if known is not None and known.base == indexed and chain and chain[0] == known.sha:
                applier.prime(known)
            applier.apply(chain)
            prepared(conn, _SET_HEAD).run(conn, {"head": head})
            queued = outbox.record(conn, applier.outbox)
            if (writes % outbox.PRUNE_EVERY == outbox.PRUNE_EVERY - 1
                    or len(applier.outbox) > outbox.KEEP_EVENTS):  # a long history at once
                outbox.prune(conn)
    if queued:
        outbox.notify()
    return head


@dataclass
class _Art:
    id: int
    latest: int
    deleted: bool
    blob: str | None
    updated_seq: int
    key: tuple[str, str]
    new: bool = False
    dirty: bool = False


class _Applier:
    """Accumulates rows for a chain of commits and writes them in batches."""

    def __init__(self, conn: Connection, store: GitStore, maxima: list[int | None],
                 created: dict[str, list[dict]] | None = None, announce: bool = False):
        self.conn = conn
        self.store = store
        self.created = created
        self.announce = announce  # collect the commits' events into ``outbox``
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        self.made: list[dict[str, Any]] = []
        self.moved: list[dict[str, Any]] = []
        self.seq = maxima[0] or 0
        self.next_artifact, self.next_version, self.next_event = (
            (m or 0) + 1 for m in maxima[1:])
        self.arts: dict[tuple[str, str], _Art | None] = {}
        self.known: dict[str, list[Change]] = {}
        self.infos: dict[str, CommitInfo] = {}
        self.texts: dict[str, bytes] = {}  # blobs a writer handed over (read no object back)
        self.notes: Notes | None = None  # read when a commit not made here needs them
        self._reset_batch()

    def prime(self, known: KnownCommit) -> None:
        """Use a writer's change list, artifact rows and commit info for its own commit."""
        self.known[known.sha] = known.changes
        if known.info is not None:
            self.infos[known.sha] = known.info
        if known.texts:
            self.texts = known.texts
        for key, row in known.artifacts.items():
            self.arts[key] = None if row is None else _Art(
                row.id, row.latest, row.deleted, row.blob, row.updated_seq, key)

    def _reset_batch(self) -> None:
        self.commits: list[dict] = []
        self.versions: list[dict] = []
        self.events: list[dict] = []
        self.labels: dict[tuple[int, str], int | None] = {}
        self.includes: list[dict] = []

    def apply(self, chain: list[str]) -> None:
        for i, sha in enumerate(chain, start=1):
            self._apply_commit(sha)
            if i % FLUSH_EVERY == 0:
                self._flush()
        self._flush()

    def _account(self, sha: str, info: CommitInfo, own: bool) -> str | None:
        """Who made the commit: a writer's own commit names its account in its trailer;
        any other may have been pushed, and then its note wins (see :mod:`.provenance`)."""
        if own:
            return trailer_account(info.message)
        if self.notes is None:
            self.notes = Notes(self.store)
        return self.notes.account(sha, info.message)

    def _apply_commit(self, sha: str) -> None:
        own = self.infos.pop(sha, None)
        info = own or self.store.commit_info(sha)
        self.sha = sha
        self.seq += 1
        self.account = self._account(sha, info, own is not None)
        self.message = without_account(info.message)
        self.commits.append({"seq": self.seq, "sha": sha, "author": info.author,
                             "email": info.email, "message": self.message,
                             "timestamp": info.timestamp, "account": self.account})
        changes = self.known.pop(sha, None)
        def present(path: str) -> bool:
            return self.store.blob_at(sha, path) is not None

        content, rest = by_artifact(changes if changes is not None else self.store.changes(sha),
                                    present=present)
        label_changes = by_artifact(rest, label_of_path, present)[0] if rest else []
        self._load({(t.kind.name, t.name) for t in content}
                   | {(t.kind.name, t.name) for t in label_changes})
        for touched in content:
            self._add_version(touched.kind.name, touched.name, touched.new)
        for touched in label_changes:
            art = self.arts.get((touched.kind.name, touched.name))
            if art is not None:
                self._move_labels(art, touched, touched.path)
        if self.announce:
            self._announce(info)

    def _announce(self, info) -> None:
        """Queue this commit's events: versions, label moves, a rollback."""
        when = datetime.fromtimestamp(info.timestamp, timezone.utc)
        who = {"commit": self.sha, "author": info.author, "message": info.message,
               "time": when.isoformat()}
        for v in self.made:
            self.outbox.append(("version.saved", {
                **v, "ref": f"{v['name']}@{v['version']}", **who, "email": info.email}))
        for m in self.moved:
            self.outbox.append(("label.moved", {**m, **who}))
        entry = AuditEntry(self.seq, self.sha, info.author, info.email, self.message,
                           when, tuple(self.made), tuple(self.moved), self.account)
        if entry.action == "rollback":
            self.outbox.append(("rollback", {
                **who, "email": info.email, "versions": list(self.made),
                "label_moves": list(self.moved)}))
        self.made, self.moved = [], []

    def _add_version(self, kind: str, name: str, blob: str | None) -> None:
        art = self.arts.get((kind, name))
        if art is None:
            if blob is None:
                return
            art = _Art(self.next_artifact, 0, False, None, self.seq, (kind, name), new=True)
            self.next_artifact += 1
            self.arts[(kind, name)] = art
        art.latest += 1
        art.deleted = blob is None
        art.blob = blob
        art.updated_seq = self.seq
        art.dirty = True
        self.versions.append({"id": self.next_version, "artifact_id": art.id,
                              "number": art.latest, "commit_seq": self.seq, "blob": blob,
                              "deleted": blob is None})
        if kind == "prompt" and blob is not None:
            self._add_includes(art, blob)
        if self.created is not None:
            self.created.setdefault(self.sha, []).append(
                {"kind": kind, "name": name, "number": art.latest, "blob": blob})
        if self.announce:
            self.made.append({"kind": kind, "name": name, "version": art.latest,
                              "deleted": blob is None})
        self.next_version += 1

    def _add_includes(self, art: _Art, blob: str) -> None:
        """The parts this prompt version includes (the reverse index of dependents)."""
        data = self.texts.get(blob)
        text = (data if data is not None else self.store.blob(blob)).decode("utf-8", "replace")
        seen = set()
        for include in text_includes(text):
            if include.text not in seen:
                seen.add(include.text)
                self.includes.append({"artifact_id": art.id, "number": art.latest,
                                      "ref": include.text, "target": include.name,
                                      "selector": include.selector})

    def _move_labels(self, art: _Art, change, path: str) -> None:
        old, new = self._label_map(change.old, path), self._label_map(change.new, path)
        for label in sorted(set(old) | set(new)):
            if old.get(label) == new.get(label):
                continue
            self.events.append({"id": self.next_event, "artifact_id": art.id, "label": label,
                                "old": old.get(label), "new": new.get(label),
                                "commit_seq": self.seq})
            self.next_event += 1
            self.labels[(art.id, label)] = new.get(label)
            if self.announce:
                self.moved.append({"kind": art.key[0], "name": art.key[1], "label": label,
                                   "from": old.get(label), "to": new.get(label)})

    def _label_map(self, blob: str | None, path: str) -> dict[str, int]:
        if blob is None:
            return {}
        try:
            return parse_label_map(self.store.blob(blob).decode("utf-8", "replace"), path)
        except ValidationFailed:
            return {}

    def _load(self, keys: set[tuple[str, str]]) -> None:
        missing = [k for k in keys if k not in self.arts]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            for key in chunk:
                self.arts[key] = None
            rows = self.conn.execute(
                sa.select(T_ARTIFACT).where(T_ARTIFACT.c.name.in_({n for _, n in chunk})))
            for row in rows:
                key = (row.kind, row.name)
                if key in self.arts and self.arts[key] is None:
                    self.arts[key] = _Art(row.id, row.latest, row.deleted, row.blob,
                                          row.updated_seq, key)

    def _flush(self) -> None:
        conn = self.conn

        def many(stmt, rows: list[dict]) -> None:
            if rows:
                prepared(conn, stmt).run_many(conn, rows)

        many(_INSERT_COMMIT, self.commits)
        arts = [a for a in self.arts.values() if a is not None and a.dirty]
        many(_INSERT_ARTIFACT, [
            {"id": a.id, "kind": a.key[0], "name": a.key[1], "latest": a.latest,
             "deleted": a.deleted, "blob": a.blob, "updated_seq": a.updated_seq}
            for a in arts if a.new])
        many(_UPDATE_ARTIFACT, [
            {"_id": a.id, "_latest": a.latest, "_deleted": a.deleted, "_blob": a.blob,
             "_seq": a.updated_seq} for a in arts if not a.new])
        for art in arts:
            art.new = art.dirty = False
        many(_INSERT_VERSION, self.versions)
        many(_INSERT_EVENT, self.events)
        many(_INSERT_INCLUDE, self.includes)
        many(_DELETE_LABEL, [{"_a": a, "_n": n} for a, n in self.labels])
        many(_INSERT_LABEL, [{"artifact_id": a, "name": n, "version": v}
                             for (a, n), v in self.labels.items() if v is not None])
        self._reset_batch()

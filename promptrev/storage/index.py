"""The SQL index (SQLModel): what makes reads fast.

Everything here that comes from Git (commits on ``main``, artifacts, versions, labels,
label moves) is derived and can be rebuilt from Git; see :mod:`.indexer`. SQLite in WAL
mode is the default; any SQLAlchemy URL works (PostgreSQL for several machines).
"""

from __future__ import annotations

import functools
import gc
import logging
import operator
import os
import time
from typing import Any, NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from ..errors import Damaged, StorageError, StorageFull
from .sql import (
    DATABASE_ERRORS,
    create_engine,
    database_error,
    sqlite_file,
    translated,
    writing,
)

log = logging.getLogger("promptrev.storage")
CHECK_FILE_SECONDS = 0.5  # how soon a process notices its index file was replaced or deleted


class IndexState(SQLModel, table=True):
    """Which commit of ``main`` the index reflects (one row)."""

    __tablename__ = "index_state"
    id: int = Field(default=1, primary_key=True)
    head: Optional[str] = None
    writes: int = 0


class CommitRow(SQLModel, table=True):
    """A commit on ``main``'s first-parent chain, numbered in order."""

    __tablename__ = "commit"
    seq: int = Field(primary_key=True)
    sha: str = Field(index=True, unique=True, max_length=64)
    author: str
    email: str
    message: str
    timestamp: int  # seconds since the epoch (UTC): cheap to read back in bulk
    # The authenticated account that made it (pusher or API user), from Git: see
    # :mod:`.provenance`. None for commits made before accounts were recorded, or offline.
    account: Optional[str] = Field(default=None, max_length=64)


class ArtifactRow(SQLModel, table=True):
    """One artifact with a pointer to its latest version."""

    __tablename__ = "artifact"
    __table_args__ = (sa.UniqueConstraint("kind", "name"),)
    id: int = Field(primary_key=True)
    kind: str = Field(max_length=16)
    name: str = Field(index=True, max_length=255)
    latest: int
    deleted: bool
    blob: Optional[str] = Field(default=None, max_length=64)
    updated_seq: int


class VersionRow(SQLModel, table=True):
    """One version of one artifact."""

    __tablename__ = "version"
    __table_args__ = (
        sa.UniqueConstraint("artifact_id", "number"),
        sa.Index("ix_version_artifact_seq", "artifact_id", "commit_seq"),
        # Covers the history query's version columns: one index range scan, no table reads.
        sa.Index("ix_version_history", "artifact_id", "number", "commit_seq", "blob",
                 "deleted"),
    )
    id: int = Field(primary_key=True)
    artifact_id: int = Field(foreign_key="artifact.id")
    number: int
    commit_seq: int = Field(foreign_key="commit.seq", index=True)
    blob: Optional[str] = Field(default=None, max_length=64)
    deleted: bool


class LabelRow(SQLModel, table=True):
    """Where a label points now."""

    __tablename__ = "label"
    artifact_id: int = Field(foreign_key="artifact.id", primary_key=True)
    name: str = Field(primary_key=True, max_length=63)
    version: int


class LabelEventRow(SQLModel, table=True):
    """One label move (set, move or removal), in commit order."""

    __tablename__ = "label_event"
    id: int = Field(primary_key=True)
    artifact_id: int = Field(foreign_key="artifact.id", index=True)
    label: str = Field(max_length=63)
    old: Optional[int] = None
    new: Optional[int] = None
    commit_seq: int = Field(foreign_key="commit.seq", index=True)


class IncludeRow(SQLModel, table=True):
    """One reference a prompt version makes to a part (``{% include "shared/tone@3" %}``):
    the reverse index behind ``promptrev dependents``, derived from Git like the rest."""

    __tablename__ = "prompt_include"
    artifact_id: int = Field(foreign_key="artifact.id", primary_key=True)
    number: int = Field(primary_key=True)  # the including version
    ref: str = Field(primary_key=True, max_length=400)  # as written
    target: str = Field(index=True, max_length=255)  # the part's name
    selector: Optional[str] = Field(default=None, max_length=64)  # None: floating


class ArtifactRecord(NamedTuple):
    """An ``artifact`` row read through a prepared statement (same fields, same order)."""

    id: int
    kind: str
    name: str
    latest: int
    deleted: bool
    blob: Optional[str]
    updated_seq: int


class Prepared:
    """A Core statement compiled once per dialect and run on the driver's own cursor.

    For the write path and the history query: SQLAlchemy still generates the SQL (so it
    stays portable), but skips its per-execution work, which costs ~150 µs per statement
    on the 2-core machines here against ~15 µs for the driver itself.
    """

    def __init__(self, stmt: Any, dialect: Any):
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.names = list(compiled.positiontup) if compiled.positional else None
        # One C call per row instead of a generator (itemgetter of one name is no tuple).
        self._pick = None if not self.names else operator.itemgetter(*self.names) \
            if len(self.names) > 1 else lambda values: (values[self.names[0]],)

    def _params(self, values: dict[str, Any]) -> Any:
        if self.names is None:
            return values
        return self._pick(values) if self._pick is not None else ()

    def run(self, conn: Any, values: dict[str, Any] | None = None) -> list[tuple]:
        """Execute with ``values``; return all rows (empty for statements without any)."""
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.execute(self.sql, self._params(values or {}))
            return cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()

    def run_many(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        """Execute once per row of values."""
        cursor = conn.connection.driver_connection.cursor()
        try:
            cursor.executemany(self.sql, [self._params(r) for r in rows])
        finally:
            cursor.close()


_PREPARED: dict[tuple[str, int], Prepared] = {}


def prepared(conn: Any, stmt: Any) -> Prepared:
    """The :class:`Prepared` form of a module-level statement for ``conn``'s dialect."""
    key = (conn.dialect.name, id(stmt))
    found = _PREPARED.get(key)
    if found is None:
        found = _PREPARED[key] = Prepared(stmt, conn.dialect)
    return found


# Tables whose content comes from Git, in an order safe for deletion.
DERIVED = (IncludeRow, LabelEventRow, LabelRow, VersionRow, ArtifactRow, CommitRow)
T_STATE = IndexState.__table__
T_COMMIT = CommitRow.__table__
T_ARTIFACT = ArtifactRow.__table__
T_VERSION = VersionRow.__table__
T_LABEL = LabelRow.__table__
T_EVENT = LabelEventRow.__table__
T_INCLUDE = IncludeRow.__table__


def create_index_engine(url: str) -> Engine:
    """Open (and create or migrate) the registry's database, with its one state row."""
    engine = create_engine(url, database="registry")
    try:
        with translated("opening the index"), writing(engine) as conn:
            if conn.execute(sa.select(T_STATE.c.id)).first() is None:
                conn.execute(T_STATE.insert().values(id=1, head=None, writes=0))
    except BaseException:
        engine.dispose()
        raise
    return engine


class IndexDatabase:
    """The registry's database, reopened when its file is deleted or replaced.

    ``promptrev reindex`` may swap in a rebuilt file, and an operator may delete a damaged
    one: a process that kept using the old file would read stale rows (or fail with
    "disk I/O error" on a deleted one). :meth:`replaced` is one ``stat``.
    """

    def __init__(self, url: str):
        self.url = url
        self.file = sqlite_file(url)
        self._open()

    def _open(self) -> None:
        if self.file is not None and not os.path.exists(self.file):
            # The write-ahead log of a deleted database would be replayed into a new one.
            for suffix in ("-wal", "-shm", "-journal"):
                try:
                    os.unlink(self.file + suffix)
                except FileNotFoundError:
                    pass
        self.identity = self._identity()
        self.stamp = self._stamp()
        self._check_at = time.monotonic() + CHECK_FILE_SECONDS
        self.broken: Damaged | None = None
        self.unavailable: StorageError | None = None
        try:
            self.engine = create_index_engine(self.url)
        # The errors are kept as fresh copies: the raised ones reference the frames (and the
        # connection) that failed, which would keep the file open.
        except Damaged as exc:  # kept openable, so that fsck and reindex can repair it
            self.broken = Damaged(exc.message, details=exc.details)
            self.engine = create_engine(self.url, migrate=False)
        except StorageFull as exc:  # the registry reads from Git meanwhile
            self.unavailable = StorageFull(exc.message, details=exc.details)
            self.engine = create_engine(self.url, migrate=False)
        if self.broken is not None or self.unavailable is not None:
            # The failed connection sits in a reference cycle with its traceback; until it
            # is collected the file stays open (and a full file system cannot be unmounted).
            gc.collect()
        if self.identity is None:
            self.identity = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.file)  # type: ignore[arg-type]
        except (OSError, TypeError):
            return None
        return found.st_dev, found.st_ino

    def _stamp(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps = []
        for path in (self.file, f"{self.file}-wal"):  # a write may still be in the log
            try:
                found = os.stat(path)  # type: ignore[arg-type]
                stamps.append((found.st_ino, found.st_mtime_ns, found.st_size))
            except (OSError, TypeError):
                stamps.append(None)
        return tuple(stamps)

    def written_since_opened(self) -> bool:
        """Whether the file (or its write-ahead log) changed since it was opened (a
        reindex wrote into it)."""
        return self.file is not None and self._stamp() != self.stamp

    def replaced(self) -> bool:
        """Whether the database file is no longer the one this process opened.

        Looked at once per :data:`CHECK_FILE_SECONDS` at most: every read asks, and a
        ``stat`` would be a tenth of a warm read.
        """
        if self.file is None:
            return False
        now = time.monotonic()
        if now < self._check_at:
            return False
        self._check_at = now + CHECK_FILE_SECONDS
        return self._identity() != self.identity

    def reopen(self, *, quiet: bool = False) -> None:
        """Close the old file's connections and open what is at the path now."""
        if not quiet:
            log.warning("the index database %s was replaced or deleted; reopening it",
                        self.file)
        self.engine.dispose()
        self._open()

    def dispose(self) -> None:
        """Close every connection."""
        self.engine.dispose()


# The first ten columns are in the field order of ``promptrev.artifacts.Version``, so
# history rows become versions positionally (attribute access on rows is the slow part).
VERSION_FIELDS = 10
_VERSION_COLUMNS = (
    T_ARTIFACT.c.kind, T_ARTIFACT.c.name, T_VERSION.c.number, T_COMMIT.c.sha,
    T_VERSION.c.blob, T_VERSION.c.deleted, T_COMMIT.c.author, T_COMMIT.c.email,
    T_COMMIT.c.message, T_COMMIT.c.timestamp, T_VERSION.c.artifact_id, T_COMMIT.c.seq,
    T_COMMIT.c.account,
)
ACCOUNT_FIELD = 12  # where the account sits in a version row
_ARTIFACT_BY_KEY = sa.select(*T_ARTIFACT.c).where(
    T_ARTIFACT.c.kind == sa.bindparam("kind"), T_ARTIFACT.c.name == sa.bindparam("name"))
_NAMES_PER_QUERY = 500


@functools.cache  # at most _NAMES_PER_QUERY statements
def _artifacts_named(count: int) -> Any:
    """Artifact rows whose name is one of ``count`` bound names (prepared once per count:
    compiling an IN of hundreds of names costs more than running it)."""
    return sa.select(*T_ARTIFACT.c).where(
        T_ARTIFACT.c.name.in_([sa.bindparam(f"n{i}") for i in range(count)]))


_VERSION_JOIN = T_VERSION.join(T_ARTIFACT, T_VERSION.c.artifact_id == T_ARTIFACT.c.id).join(
    T_COMMIT, T_VERSION.c.commit_seq == T_COMMIT.c.seq)

_HISTORY = sa.select(*_VERSION_COLUMNS[2:VERSION_FIELDS], T_COMMIT.c.account).select_from(
    T_VERSION.join(T_COMMIT, T_VERSION.c.commit_seq == T_COMMIT.c.seq)).where(
    T_VERSION.c.artifact_id == sa.bindparam("artifact_id")).order_by(T_VERSION.c.number.desc())


class IndexReader:
    """Read queries over the index (SQLAlchemy Core: rows, not ORM objects, for speed)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _all(self, stmt) -> list:
        with self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def _first(self, stmt):
        with self.engine.connect() as conn:
            return conn.execute(stmt).first()

    def head(self) -> str | None:
        """The commit the index reflects."""
        return self._first(sa.select(T_STATE.c.head))[0]

    def artifacts_named(self, name: str) -> list:
        """Artifact rows with this name, any kind."""
        return self._all(sa.select(T_ARTIFACT).where(T_ARTIFACT.c.name == name))

    def artifact(self, kind: str, name: str):
        """The artifact row, or None."""
        return self._first(sa.select(T_ARTIFACT).where(
            T_ARTIFACT.c.kind == kind, T_ARTIFACT.c.name == name))

    def artifacts(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """Artifact rows for many (kind, name) keys in a few queries."""
        wanted = set(keys)
        if len(wanted) <= 8:  # the common single-save case: one prepared lookup per key
            out = {}
            with self.engine.connect() as conn:
                statement = prepared(conn, _ARTIFACT_BY_KEY)
                for kind, name in wanted:
                    rows = statement.run(conn, {"kind": kind, "name": name})
                    if rows:
                        row = rows[0]
                        out[(kind, name)] = ArtifactRecord(*row[:4], bool(row[4]), *row[5:])
            return out
        names = sorted({name for _, name in wanted})
        out = {}
        with self.engine.connect() as conn:
            for start in range(0, len(names), _NAMES_PER_QUERY):
                chunk = names[start:start + _NAMES_PER_QUERY]
                statement = prepared(conn, _artifacts_named(len(chunk)))
                for row in statement.run(conn, {f"n{i}": n for i, n in enumerate(chunk)}):
                    if (row[1], row[2]) in wanted:
                        out[(row[1], row[2])] = ArtifactRecord(*row[:4], bool(row[4]),
                                                               *row[5:])
        return out

    def similar_names(self, name: str, limit: int = 200) -> list[str]:
        """Names sharing the first letters, for "did you mean" hints."""
        stem = name[:3]
        return [r[0] for r in self._all(
            sa.select(T_ARTIFACT.c.name).where(T_ARTIFACT.c.name.startswith(stem, autoescape=True))
            .limit(limit))]

    def version(self, artifact_id: int, number: int):
        """One version row joined with its commit, or None."""
        return self._first(sa.select(*_VERSION_COLUMNS).select_from(_VERSION_JOIN).where(
            T_VERSION.c.artifact_id == artifact_id, T_VERSION.c.number == number))

    def version_at(self, artifact_id: int, seq: int):
        """The version current at commit ``seq`` (the last one made at or before it)."""
        return self._first(sa.select(*_VERSION_COLUMNS).select_from(_VERSION_JOIN).where(
            T_VERSION.c.artifact_id == artifact_id, T_VERSION.c.commit_seq <= seq)
            .order_by(T_VERSION.c.number.desc()).limit(1))

    def history(self, artifact_id: int) -> list[tuple]:
        """Version rows of one artifact, newest first: the ``Version`` fields after kind
        and name (``deleted`` as the driver returns it: 0/1 on SQLite), then the account.

        This is the query ``promptrev log`` and the history page wait on, so it skips what
        costs per row: no join with ``artifact`` (the caller knows kind and name), and the
        statement is compiled once per dialect and run as driver SQL, so rows come back as
        plain tuples from the driver's own cursor, without SQLAlchemy's per-row processing.
        """
        with self.engine.connect() as conn:
            return prepared(conn, _HISTORY).run(conn, {"artifact_id": artifact_id})

    def dependents(self, targets: list[str]) -> list:
        """The live prompts whose latest version includes one of ``targets``: rows of
        (target, kind, name, latest, ref, selector), by name."""
        if not targets:
            return []
        return self._all(sa.select(
            T_INCLUDE.c.target, T_ARTIFACT.c.kind, T_ARTIFACT.c.name, T_ARTIFACT.c.latest,
            T_INCLUDE.c.ref, T_INCLUDE.c.selector).select_from(T_INCLUDE.join(
                T_ARTIFACT, T_INCLUDE.c.artifact_id == T_ARTIFACT.c.id)).where(
            T_INCLUDE.c.target.in_(sorted(set(targets))),
            T_INCLUDE.c.number == T_ARTIFACT.c.latest,
            T_ARTIFACT.c.deleted == sa.false()).order_by(
            T_ARTIFACT.c.name, T_INCLUDE.c.ref))

    def labels(self, artifact_id: int) -> dict[str, int]:
        """label → version number."""
        return {r.name: r.version for r in self._all(
            sa.select(T_LABEL).where(T_LABEL.c.artifact_id == artifact_id))}

    def label_map(self, artifact_ids: list[int]) -> dict[int, dict[str, int]]:
        """Labels of many artifacts at once."""
        out: dict[int, dict[str, int]] = {}
        for start in range(0, len(artifact_ids), 500):
            for r in self._all(sa.select(T_LABEL).where(
                    T_LABEL.c.artifact_id.in_(artifact_ids[start:start + 500]))):
                out.setdefault(r.artifact_id, {})[r.name] = r.version
        return out

    def listing(self, prefix: str | None, kind: str | None, include_deleted: bool,
                query: str | None = None, ids: list[int] | None = None) -> list:
        """Artifacts with the commit of their latest version (only ``ids`` when given)."""
        stmt = sa.select(T_ARTIFACT, T_COMMIT.c.sha, T_COMMIT.c.author, T_COMMIT.c.timestamp,
                         T_COMMIT.c.message).join(
            T_COMMIT, T_ARTIFACT.c.updated_seq == T_COMMIT.c.seq).order_by(
            T_ARTIFACT.c.name, T_ARTIFACT.c.kind)
        if ids is not None:
            stmt = stmt.where(T_ARTIFACT.c.id.in_(ids))
        return self._all(self._matching(stmt, prefix, kind, include_deleted, query))

    def names(self, prefix: str | None, kind: str | None, include_deleted: bool,
              query: str | None = None) -> list:
        """(id, name) of the artifacts :meth:`listing` would give, in its order: cheap
        enough to group thousands into folders and pages before reading any of them."""
        stmt = sa.select(T_ARTIFACT.c.id, T_ARTIFACT.c.name).order_by(T_ARTIFACT.c.name,
                                                                        T_ARTIFACT.c.kind)
        return self._all(self._matching(stmt, prefix, kind, include_deleted, query))

    @staticmethod
    def _matching(stmt, prefix: str | None, kind: str | None, include_deleted: bool,
                  query: str | None):
        if prefix:
            stmt = stmt.where(T_ARTIFACT.c.name.startswith(prefix, autoescape=True))
        if kind:
            stmt = stmt.where(T_ARTIFACT.c.kind == kind)
        if query:
            stmt = stmt.where(sa.func.lower(T_ARTIFACT.c.name).contains(query.lower(),
                                                                         autoescape=True))
        if not include_deleted:
            stmt = stmt.where(T_ARTIFACT.c.deleted.is_(False))
        return stmt

    def commits_with_prefix(self, prefix: str) -> list:
        """Indexed commits whose sha starts with ``prefix`` (at most two)."""
        return self._all(sa.select(T_COMMIT.c.seq, T_COMMIT.c.sha).where(
            T_COMMIT.c.sha.startswith(prefix.lower())).limit(2))

    def label_events(self, artifact_id: int | None = None, limit: int = 1000) -> list:
        """Label moves, newest first."""
        stmt = sa.select(T_EVENT, T_ARTIFACT.c.kind, T_ARTIFACT.c.name, T_COMMIT.c.sha,
                         T_COMMIT.c.author, T_COMMIT.c.message, T_COMMIT.c.timestamp,
                         T_COMMIT.c.account).join(
            T_ARTIFACT, T_EVENT.c.artifact_id == T_ARTIFACT.c.id).join(
            T_COMMIT, T_EVENT.c.commit_seq == T_COMMIT.c.seq).order_by(
            T_EVENT.c.id.desc()).limit(limit)
        if artifact_id is not None:
            stmt = stmt.where(T_EVENT.c.artifact_id == artifact_id)
        return self._all(stmt)

    def commits(self, limit: int, before_seq: int | None = None) -> list:
        """Commits on ``main``, newest first (for the audit log)."""
        stmt = sa.select(T_COMMIT).order_by(T_COMMIT.c.seq.desc()).limit(limit)
        if before_seq is not None:
            stmt = stmt.where(T_COMMIT.c.seq < before_seq)
        return self._all(stmt)

    def changes_in(self, seqs: list[int]) -> tuple[list, list]:
        """Versions and label moves made by the given commits."""
        if not seqs:
            return [], []
        versions = sa.select(T_VERSION.c.commit_seq, T_ARTIFACT.c.kind, T_ARTIFACT.c.name,
                             T_VERSION.c.number, T_VERSION.c.deleted).join(
            T_ARTIFACT, T_VERSION.c.artifact_id == T_ARTIFACT.c.id).where(
            T_VERSION.c.commit_seq.in_(seqs)).order_by(T_VERSION.c.id)
        events = sa.select(T_EVENT.c.commit_seq, T_ARTIFACT.c.kind, T_ARTIFACT.c.name,
                           T_EVENT.c.label, T_EVENT.c.old, T_EVENT.c.new).join(
            T_ARTIFACT, T_EVENT.c.artifact_id == T_ARTIFACT.c.id).where(
            T_EVENT.c.commit_seq.in_(seqs)).order_by(T_EVENT.c.id)
        return self._all(versions), self._all(events)

    def made_in(self, shas: list[str]) -> dict[str, list[dict]]:
        """The versions each of the given commits created (as the indexer reports them)."""
        stmt = sa.select(T_COMMIT.c.sha, T_ARTIFACT.c.kind, T_ARTIFACT.c.name,
                         T_VERSION.c.number, T_VERSION.c.blob).select_from(_VERSION_JOIN).where(
            T_COMMIT.c.sha.in_(shas)).order_by(T_VERSION.c.id)
        out: dict[str, list[dict]] = {sha: [] for sha in shas}
        for sha, kind, name, number, blob in self._all(stmt):
            out[sha].append({"kind": kind, "name": name, "number": number, "blob": blob})
        return out

    def dump(self) -> dict[str, list[tuple]]:
        """Every Git-derived row, keyed by natural keys (for rebuilt == incremental checks)."""
        out = {}
        with self.engine.connect() as conn:
            for model in DERIVED:
                table = model.__table__
                rows = conn.execute(sa.select(table)).all()
                out[table.name] = sorted(tuple(r) for r in rows)
            out["index_state"] = [(conn.execute(sa.select(T_STATE.c.head)).scalar(),)]
        return out


def _reading(method):
    @functools.wraps(method)
    def inner(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise database_error(exc, "reading the index",
                                 sqlite_file(str(self.engine.url))) from None
    return inner


for _name, _method in list(vars(IndexReader).items()):
    if not _name.startswith("_") and callable(_method):
        setattr(IndexReader, _name, _reading(_method))

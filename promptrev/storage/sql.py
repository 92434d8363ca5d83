"""The one SQL engine factory: every database promptrev opens is made and migrated here.

SQLite gets WAL, a busy timeout, foreign keys and real transactions (``BEGIN`` when a
transaction starts, ``BEGIN IMMEDIATE`` for connections marked ``write_lock``); any other
SQLAlchemy URL (PostgreSQL for several processes or machines) is used as it is.

SQLite files hold password hashes and webhook secrets: they are created mode 0600 (SQLite
gives its ``-wal``, ``-shm`` and ``-journal`` files the database's mode), and an existing
file (or side file) readable by others is tightened to 0600 when it is opened.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from .. import errors
from ..errors import Busy, Damaged, PromptrevError, StorageError, StorageFull
from . import durability, migrations

log = logging.getLogger("promptrev.storage")
MEMORY = "sqlite://"  # a private in-memory database (one connection, any thread)


def create_engine(url: str, *, database: str = "registry", migrate: bool = True) -> Engine:
    """An engine for ``url``, its schema brought up to date unless ``migrate`` is false."""
    if url == MEMORY:
        engine = sa.create_engine(url, poolclass=StaticPool,
                                  connect_args={"check_same_thread": False})
        _configure_sqlite(engine)
    elif url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _configure_sqlite(engine, sqlite_file(url))
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    if migrate:
        try:
            with translated("opening the database", sqlite_file(url)):
                migrations.upgrade(engine, database)
        except BaseException:
            engine.dispose()
            raise
    return engine


PRIVATE_MODE = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_file(path: str | None) -> None:
    """Create the SQLite file ``path`` with mode 0600, or tighten it and its side files.

    Best effort: a file this process cannot create or change is left to SQLite, which
    reports what is wrong when it opens it.
    """
    if path is None:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    except OSError:  # no such folder, read-only, full: SQLite says so in its own words
        return
    for name in (path, *(path + suffix for suffix in SIDE_FILES)):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, PRIVATE_MODE)
        except OSError:  # absent, or not ours to change
            pass


def sqlite_file(url: str) -> str | None:
    """The file of a SQLite URL, or None (another database, or one in memory)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return os.path.abspath(parsed.database)


def database_error(exc: BaseException, what: str, file: str | None = None
                   ) -> PromptrevError:
    """The promptrev error that explains a failed database operation on ``file``."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    low = text.lower()
    if "disk is full" in low or "no space left" in low or type(orig).__name__ == "DiskFull" \
            or ("i/o error" in low and file is not None and disk_full(file)):
        # SQLite says "disk I/O error" when it cannot size its shared-memory file.
        return StorageFull(f"the disk holding the index database is full: {what} failed "
                           f"({text}). Free space; promptrev catches up by itself",
                           details={"database": text})
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return Damaged(f"the index database is damaged: {what} failed ({text}). Run "
                       "'promptrev reindex' to rebuild it from Git",
                       details={"repair": "promptrev reindex"})
    if "locked" in low:
        return Busy(f"the index database stayed locked: {what} failed ({text}); try again")
    if "i/o error" in low or "readonly" in low or "read-only" in low or \
            "unable to open" in low:
        return StorageError(f"the index database cannot be used: {what} failed ({text}). "
                            "If its file was deleted or replaced, run 'promptrev reindex'")
    log.warning("database error while %s", what, exc_info=exc)
    return StorageError(f"the index database failed: {what} ({text})")


def disk_full(path: str) -> bool:
    """Whether the file system holding ``path`` has (almost) no space left."""
    try:
        stat = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 256 * 1024 or stat.f_favail == 0


# What database failures look like: SQLAlchemy's wrapper, or the driver's own error where
# a statement runs on the driver's cursor (see index.Prepared).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, sqlite3.Error)
try:
    import psycopg

    DATABASE_ERRORS += (psycopg.Error,)
except ImportError:  # PostgreSQL support not installed
    pass


@contextmanager
def translated(what: str, file: str | None = None) -> Iterator[None]:
    """Raise database failures inside as the :class:`PromptrevError` that explains them."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise database_error(exc, what, file) from None


@errors.add_explainer
def _explain(exc: BaseException) -> PromptrevError | None:
    """A database failure that reached an edge unexplained (a feature's own query)."""
    return database_error(exc, "the database") if isinstance(exc, DATABASE_ERRORS) else None


@contextmanager
def writing(source: Any) -> Iterator[Connection]:
    """A transaction that reads, then writes: on SQLite it takes the write lock up front.

    A deferred ``BEGIN`` that has read cannot become a writer once another process has
    committed (SQLite answers "database is locked" at once, whatever the busy timeout);
    ``BEGIN IMMEDIATE`` waits for the lock instead. Every write transaction of the
    features goes through here; ``source`` is an engine or a registry.
    """
    with engine_of(source).connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            yield conn


class OnDatabase:
    """For a feature service built on a registry (or an engine): its *current* engine.

    A registry reopens its database when the file was replaced or deleted; a service that
    kept the engine it was given would go on using the old file.
    """

    _source: Any

    @property
    def engine(self) -> Engine:
        """The engine of the registry this service was built on."""
        return engine_of(self._source)


def engine_of(source: Any) -> Engine:
    """The engine of a registry (what the edges hold), or ``source`` if it is one already.

    Feature services (webhooks, evaluations, outcomes) take a registry, so that the server
    and the CLI never handle an engine; the core and the tests may pass the engine.
    """
    return getattr(source, "engine", source)


def _configure_sqlite(engine: Engine, file: str | None = None) -> None:
    # pysqlite's own transaction handling defers BEGIN until the first write, which
    # breaks read-then-write isolation; take control as SQLAlchemy's docs recommend.
    @event.listens_for(engine, "do_connect")
    def _private(_dialect, _record, _args, _kwargs):
        # SQLite creates a missing file when it first connects (not when the engine is
        # made): create it 0600 just before, as SQLite would have, but private.
        private_file(file)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, record):
        dbapi_conn.isolation_level = None
        try:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode FULL syncs the log at every commit: a commit that returned
            # survives a power loss. NORMAL syncs at checkpoints only (docs/durability.md).
            record.info["synchronous"] = durability.sqlite_synchronous()
            cur.execute(f"PRAGMA synchronous={record.info['synchronous']}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
            private_file(file)  # side files made by an older release, or by WAL just now
        except BaseException:
            # The pool never received this connection: close it here, or the file stays
            # open for as long as the error (kept for its message) is referenced.
            dbapi_conn.close()
            raise

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # On the driver itself: through exec_driver_sql this statement cost more than the
        # index rows of a save (SQLAlchemy's per-execution work, ~60 µs here).
        options = conn.get_execution_options()
        driver = conn.connection.driver_connection
        # ``derived=True`` (the index catching up with Git, which replays a lost tail)
        # commits with NORMAL; everything else as durability says. Set only on a change.
        synchronous = durability.sqlite_synchronous(derived=bool(options.get("derived")))
        if conn.connection.info.get("synchronous") != synchronous:
            driver.execute(f"PRAGMA synchronous={synchronous}")
            conn.connection.info["synchronous"] = synchronous
        driver.execute("BEGIN IMMEDIATE" if options.get("write_lock") else "BEGIN")

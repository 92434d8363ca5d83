"""The one SQL engine factory: every database promptrev opens is made and migrated here.

SQLite gets WAL, a busy timeout, foreign keys and real transactions (``BEGIN`` when a
transaction starts, ``BEGIN IMMEDIATE`` for connections marked ``write_lock``); any other
SQLAlchemy URL (PostgreSQL for several processes or machines) is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from . import migrations


def create_engine(url: str, *, database: str = "registry", migrate: bool = True) -> Engine:
    """An engine for ``url``, its schema brought up to date unless ``migrate`` is false."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        _configure_sqlite(engine)
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    if migrate:
        try:
            migrations.upgrade(engine, database)
        except BaseException:
            engine.dispose()
            raise
    return engine


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


def engine_of(source: Any) -> Engine:
    """The engine of a registry (what the edges hold), or ``source`` if it is one already.

    Feature services (webhooks, evaluations, outcomes) take a registry, so that the server
    and the CLI never handle an engine; the core and the tests may pass the engine.
    """
    return getattr(source, "engine", source)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN until the first write, which
    # breaks read-then-write isolation; take control as SQLAlchemy's docs recommend.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # On the driver itself: through exec_driver_sql this statement cost more than the
        # index rows of a save (SQLAlchemy's per-execution work, ~60 µs here).
        mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("write_lock") else "BEGIN"
        conn.connection.driver_connection.execute(mode)

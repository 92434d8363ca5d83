"""Schema migrations (Alembic) for promptrev's two SQL databases.

- ``registry``: the database next to the Git repository (``--index-url``). It holds the
  derived index, which ``reindex`` rebuilds from Git, and tables that exist nowhere else:
  the event outbox, change requests with their comments and approvals, webhooks with
  their deliveries, evaluation runs and results, A/B outcomes.
- ``accounts``: users, tokens and their state (``PROMPTREV_ACCOUNTS_URL``).

Both are one Alembic environment, ``versions/`` here, with a branch per database and a
version table each, so both may share one PostgreSQL database. Every engine promptrev
opens goes through :func:`upgrade`: it reads the version table (one query when the schema
is current) and otherwise runs the missing revisions in one transaction, holding the
database's write lock, so that several processes opening one registry migrate it once.

A registry made before migrations existed (release 0.1.0) has no version table: the first
revision of each branch creates only the tables that are missing, so such a database is
adopted as it is and then upgraded like any other. How to add a revision: README here.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ...errors import StorageError

HERE = os.path.dirname(os.path.abspath(__file__))

# database -> (its Alembic branch label, its version table, the newest revision).
# tests/test_migrations.py checks these heads against the revision files.
DATABASES = {
    "registry": ("alembic_version", "r0009"),
    "accounts": ("alembic_version_accounts", "a0002"),
}


class MigrationError(StorageError):
    """The database's schema is newer than this release."""

    code = "schema_too_new"


def version_table(database: str) -> str:
    """The table that records which revision ``database`` is at."""
    return DATABASES[database][0]


def current(conn: Connection, database: str) -> list[str]:
    """The revisions recorded in ``database`` (empty before the first migration)."""
    table = version_table(database)
    if not sa.inspect(conn).has_table(table):
        return []
    return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {table}"))]


def upgrade(engine: Engine, database: str, revision: str | None = None) -> None:
    """Bring ``database`` (``registry`` or ``accounts``) to ``revision`` (default: head).

    A restore passes the revision its backup was taken at, loads the rows, then upgrades
    to head, so old backups go through the same revisions as old databases.
    """
    head = DATABASES[database][1]
    target = revision or head
    with engine.connect() as conn:
        if current(conn, database) == [target]:
            return
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)  # SQLite: BEGIN IMMEDIATE (see sql.py)
        with conn.begin():
            _lock(conn)
            found = current(conn, database)
            if found == [target]:
                return  # another process migrated it while this one waited
            known = known_revisions(database)
            unknown = [r for r in [*found, target] if r not in known]
            if unknown:
                raise MigrationError(
                    f"the {database} database is at schema revision {', '.join(unknown)}, "
                    "which this release of promptrev does not know: it was made by a "
                    "newer release; upgrade promptrev")
            _run(conn, database, "upgrade", target if revision else f"{database}@head")


def downgrade(engine: Engine, database: str, revision: str) -> None:
    """Take ``database`` back to ``revision`` (``base`` drops its tables); for tests."""
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            _lock(conn)
            _run(conn, database, "downgrade", revision)


def config(**attributes: Any):
    """An Alembic config for the environment here (``attributes`` reach env.py)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", HERE)
    cfg.attributes.update(attributes)
    return cfg


def _run(conn: Connection, database: str, verb: str, target: str) -> None:
    from alembic import command

    getattr(command, verb)(config(connection=conn, database=database), target)


def known_revisions(database: str) -> set[str]:
    """Every revision of ``database``'s branch that this release has."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(config())
    return {s.revision for s in scripts.iterate_revisions(f"{database}@head", "base")}


def _lock(conn: Connection) -> None:
    # SQLite's BEGIN IMMEDIATE already holds the one write lock; PostgreSQL takes an
    # advisory lock for the transaction so that concurrent openers queue here.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('promptrev-migrate'))"))


# The modules whose SQLModel classes are the tables; imported only for autogenerate and
# the test that compares models with migrations. All in storage: it imports nothing above.
_MODELS = ("promptrev.storage.index", "promptrev.storage.tables")
# Tables of the registry database that ``reindex`` rebuilds from Git: a backup leaves
# them out, a restore rebuilds them.
DERIVED_TABLES = frozenset({"index_state", "commit", "artifact", "version", "label",
                            "label_event", "prompt_include"})
# Tables of the registry database that hold a passing log, not state: the event outbox
# (its events were handed to their subscribers when recorded). A backup leaves them out;
# a restored registry starts them empty.
TRANSIENT_TABLES = frozenset({"event"})


def owns(database: str, table: str) -> bool:
    """Whether ``table`` belongs to ``database`` (both may share one PostgreSQL schema)."""
    if table in {v for v, _ in DATABASES.values()}:
        return False
    return table.startswith("account_") == (database == "accounts")


def compare(conn: Connection, database: str) -> list:
    """What differs between the live schema of ``database`` and the models (autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={
        "version_table": version_table(database), "compare_type": True,
        "include_name": lambda name, kind, _parents: kind != "table" or owns(database, name)})
    return compare_metadata(context, target_metadata(database))


def kept_tables(database: str, names: list[str]) -> list[str]:
    """Of the table ``names`` found in ``database``, those not derived from Git.

    Account tables are named ``account_*``; the registry keeps every other table except
    the derived ones, the transient ones and the version tables.
    """
    return [n for n in names if owns(database, n) and n not in DERIVED_TABLES
            and n not in TRANSIENT_TABLES]


def target_metadata(database: str) -> sa.MetaData:
    """The models' tables of ``database``: what autogenerate compares the schema to."""
    import importlib

    from sqlmodel import SQLModel

    for name in _MODELS:
        importlib.import_module(name)
    chosen = sa.MetaData()
    for table in SQLModel.metadata.sorted_tables:
        if owns(database, table.name):
            table.to_metadata(chosen)
    return chosen

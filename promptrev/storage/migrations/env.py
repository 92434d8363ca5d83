"""Alembic's environment for promptrev: run inside :func:`upgrade` or by the alembic CLI.

In process, ``upgrade`` passes the connection (already in a transaction) and the database
name. From a shell, for writing a revision (see README here)::

    alembic -c promptrev/storage/migrations/alembic.ini -x database=registry \
        -x url=sqlite:////tmp/scratch.sqlite revision --autogenerate --head registry@head -m "..."
"""

from alembic import context

from promptrev.storage import migrations

config = context.config
database = config.attributes.get("database") or context.get_x_argument(True).get("database")
if database not in migrations.DATABASES:
    raise SystemExit("say which database: -x database=registry or -x database=accounts")


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        version_table=migrations.version_table(database),
        target_metadata=migrations.target_metadata(database),
        render_as_batch=True,  # SQLite alters a table by copying it; batch mode does that
        transactional_ddl=True,  # SQLite's DDL is transactional too: one upgrade, one commit
        compare_type=True,
        include_name=lambda name, kind, _parents: (kind != "table"
                                                   or migrations.owns(database, name)),
    )


connection = config.attributes.get("connection")
if connection is not None:
    _configure(connection)
    context.run_migrations()
else:
    from promptrev.storage.sql import create_engine

    engine = create_engine(context.get_x_argument(True)["url"], migrate=False)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()

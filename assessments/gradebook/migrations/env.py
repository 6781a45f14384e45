"""Alembic environment of the gradebook (run through assessments.gradebook.db)."""

from alembic import context

from assessments.gradebook import db
from assessments.gradebook.tables import metadata

config = context.config


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=db.VERSION_TABLE,
                      compare_type=True,
                      # SQLite alters a table by copying it; later migrations get that for free.
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      version_table=db.VERSION_TABLE, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run(config.attributes["connection"])
else:
    engine = db.engine_for(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()

"""Alembic environment: the URL comes from the caller (``pipeline.core.migrate``), never from alembic.ini."""

from alembic import context

from pipeline.db import metadata

config = context.config
connectable = config.attributes.get("connection")


def run_migrations_online() -> None:
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    import sqlalchemy as sa

    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()

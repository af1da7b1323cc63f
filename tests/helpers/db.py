"""Database helpers shared by fixtures."""

from __future__ import annotations

import sqlalchemy as sa

from pipeline.core import migrate


def migrated_database(fresh_database, prefix: str) -> str:
    """A new database from the ``fresh_database`` factory with the tag-library schema at head."""
    url = fresh_database(prefix)
    eng = sa.create_engine(url)
    migrate.upgrade(eng)
    eng.dispose()
    return url

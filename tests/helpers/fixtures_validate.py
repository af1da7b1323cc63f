"""Fixtures for the validation-gate tests: an own migrated database (so the tag library and the snapshot
history are ours alone), settings pointing at it, a spec with a unique name per test (so drift baselines do
not leak between tests), and a tag-library writer."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import sqlalchemy as sa

from pipeline import db
from pipeline.catalog.spec import load_spec
from pipeline.settings import Settings


@pytest.fixture(scope="session")
def validate_db_url(fresh_database) -> str:
    from helpers.db import migrated_database

    return migrated_database(fresh_database, "validate")


@pytest.fixture
def validate_settings(tmp_path, validate_db_url) -> Settings:
    return Settings(home=tmp_path / "home", database_url=validate_db_url)


def unique_spec(name: str, **changes):
    """A shipped spec under a fresh name (its own snapshot history), optionally with fields changed."""
    return dataclasses.replace(load_spec(name), name=f"{name}_{uuid.uuid4().hex[:8]}", **changes)


@pytest.fixture
def myntra_spec():
    return unique_spec("myntra")


@pytest.fixture
def add_library_tags(validate_db_url):
    """Insert ``{slug: status}`` into the tag library of the validation database (idempotent)."""
    eng = sa.create_engine(validate_db_url)

    def add(tags: dict[str, str]) -> None:
        with eng.begin() as conn:
            for slug, status in tags.items():
                facet = slug.split(":", 1)[0]
                conn.execute(sa.dialects.postgresql.insert(db.facets).values(slug=facet).on_conflict_do_nothing())
                fid = conn.scalar(sa.select(db.facets.c.id).where(db.facets.c.slug == facet))
                stmt = sa.dialects.postgresql.insert(db.tags).values(slug=slug, facet_id=fid, status=status)
                conn.execute(stmt.on_conflict_do_update(index_elements=["slug"], set_={"status": status}))

    yield add
    eng.dispose()

"""Session-wide fixtures: one Postgres per test session, settings pointing at a temp home."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.core.services import ensure_database_exists
from pipeline.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))  # `helpers` is importable from every test module

pytest_plugins: list[str] = [
    "helpers.fixtures_train",
    "helpers.fixtures_registry",
    "helpers.fixtures_validate",
    "helpers.fixtures_serving",
]

MACHINE_PG = os.environ.get("TAGGER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session", autouse=True)
def _tests_own_home(tmp_path_factory):
    """Tests (and the CLI they run) never write into the checkout's own ``.tagger`` home (the demo's)."""
    if "TAGGER_HOME" not in os.environ:
        os.environ["TAGGER_HOME"] = str(tmp_path_factory.mktemp("default-home"))
        yield
        os.environ.pop("TAGGER_HOME", None)
    else:
        yield


def _machine_pg_up() -> bool:
    try:
        eng = sa.create_engine(MACHINE_PG, connect_args={"connect_timeout": 2})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> str:
    """Base URL (database ``postgres``) of a real PostgreSQL: the machine's service, else an embedded one."""
    if _machine_pg_up():
        return MACHINE_PG
    from pipeline.core.services import _as_sqlalchemy, _start_embedded

    return _as_sqlalchemy(_start_embedded(str(tmp_path_factory.mktemp("pgdata"))))


@pytest.fixture(scope="session")
def fresh_database(pg_server_url):
    """Factory: a new empty database on the session's server; dropped at session end."""
    made: list[str] = []
    base = sa.engine.make_url(pg_server_url)

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        url = base.set(database=name).render_as_string(hide_password=False)
        ensure_database_exists(url)
        made.append(name)
        return url

    yield make
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def session_db_url(fresh_database) -> str:
    """One migrated tag-library database shared by the session (tests must not assume it is empty)."""
    from helpers.db import migrated_database

    return migrated_database(fresh_database, "tagger")


@pytest.fixture(scope="session")
def session_mlflow_uri(fresh_database) -> str:
    return fresh_database("mlflow")


@pytest.fixture
def settings(tmp_path, session_db_url, session_mlflow_uri) -> Settings:
    """Settings with a temp home, the session database and MLflow store; nothing embedded is started."""
    return Settings(
        home=tmp_path / "home",
        database_url=session_db_url,
        mlflow_tracking_uri=session_mlflow_uri,
        mlflow_artifact_location=(tmp_path / "mlartifacts").as_uri(),
    )


@pytest.fixture
def engine(settings):
    from pipeline.core.services import get_engine

    return get_engine(settings)

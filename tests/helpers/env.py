"""The ``TAGGER_*`` environment of a test home, as DAG tasks and Airflow workers read it (like in production)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.settings import Settings, get_settings


def home_env(fresh_database, root: Path, prefix: str, **extra: str) -> dict[str, str]:
    """A home under ``root`` with its own tag-library and MLflow databases (``<prefix>_…``) and artifact store;
    ``extra`` adds or overrides ``TAGGER_*`` variables (keys without the prefix, any case)."""
    env = {
        "TAGGER_HOME": str(root / "home"),
        "TAGGER_DATABASE_URL": fresh_database(f"{prefix}_tagger"),
        "TAGGER_MLFLOW_TRACKING_URI": fresh_database(f"{prefix}_mlflow"),
        "TAGGER_MLFLOW_ARTIFACT_LOCATION": (root / "mlartifacts").as_uri(),
    }
    return env | {f"TAGGER_{k.upper()}": str(v) for k, v in extra.items()}


@contextlib.contextmanager
def tagger_env(env: dict[str, str]) -> Iterator[tuple[Settings, pytest.MonkeyPatch]]:
    """Set ``env`` for this process (and every process it starts), yield the settings read from it with the
    tag-library schema at head; everything is restored afterwards."""
    from pipeline.catalog.taglib import ensure_schema

    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            settings = get_settings()
            ensure_schema(settings)
            yield settings, mp
        finally:
            get_settings.cache_clear()

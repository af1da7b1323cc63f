"""Serving fixtures: one real ``tritonserver`` per test session and bundles with known answers.

``golden_bundle(scale, name)`` builds a bundle on the registry fixtures' tiny encoder (2 layers, hidden 32) whose
head is solved by least squares so that each of ``GOLDEN`` texts gets exactly its expected tags (logit +scale
for them, -scale for the rest); different ``scale`` values give different bundles (digests) with the same
answers. ``triton`` starts the server once (no model loaded; deploy tests load them) on free ports.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from pipeline.settings import Settings

_TOP = ["category:apparel", "category:apparel/topwear"]
GOLDEN = [
    {"text": "Turtle Check Men Navy Blue Shirt", "expected": [*_TOP, "color:blue", "gender:men"]},
    {"text": "Puma Women White Running Shoes", "expected": ["category:footwear", "color:white", "gender:women"]},
    {"text": "Manchester United Men Solid Black Track Pants", "expected": [_TOP[0], "color:black", "gender:men"]},
    {"text": "Fabindia Women Black Kurta", "expected": [*_TOP, "color:black", "gender:women"]},
]  # fmt: skip


def solve_head(bundle_path: Path, golden: list[dict], scale: float) -> None:
    """Overwrite head.safetensors so that golden texts map to their expected tags (exact least squares)."""
    import torch
    from safetensors.torch import save_file

    from pipeline.training.bundle import load_bundle

    b = load_bundle(bundle_path)
    b.model.head = torch.nn.Identity()  # logits() now returns the pooled embeddings [P, H]
    emb = b.logits([g["text"] for g in golden]).astype(np.float64)
    x = np.hstack([emb, np.ones((len(emb), 1))])  # [P, H+1]
    y = np.full((len(golden), len(b.label_map)), -scale)
    for i, g in enumerate(golden):
        for slug in g["expected"]:
            if slug in b.label_map.slugs and slug not in _ancestors_only(b.label_map, g["expected"]):
                y[i, b.label_map.index(slug)] = scale
    sol, *_ = np.linalg.lstsq(x, y, rcond=None)  # [H+1, N]
    head = {"weight": torch.tensor(sol[:-1].T, dtype=torch.float32).contiguous(),
            "bias": torch.tensor(sol[-1], dtype=torch.float32).contiguous()}  # fmt: skip
    save_file(head, str(bundle_path / "head.safetensors"))


def _ancestors_only(label_map, expected: list[str]) -> set[str]:
    """Expected slugs that are only there as an ancestor of another expected slug (not predicted directly)."""
    return {a for s in expected for a in label_map.ancestors.get(s, ())}


@pytest.fixture(scope="session")
def golden_bundle(make_bundle):
    """Factory: ``golden_bundle(scale=6.0, golden_file=GOLDEN) -> bundle path`` answering GOLDEN exactly.

    ``golden_file`` is written as the bundle's ``golden.json`` (the deploy smoke test's examples).
    """

    def make(scale: float = 6.0, golden_file: list[dict] | None = None) -> Path:
        path = make_bundle(name=f"golden-{scale}-{uuid.uuid4().hex[:6]}")
        solve_head(path, GOLDEN, scale)
        (path / "golden.json").write_text(json.dumps(GOLDEN if golden_file is None else golden_file))
        return path

    return make


@pytest.fixture(scope="session")
def serving_settings(tmp_path_factory, session_db_url, session_mlflow_uri) -> Settings:
    from serving.server import free_port

    root = tmp_path_factory.mktemp("serving")
    return Settings(
        home=root / "home",
        database_url=session_db_url,
        mlflow_tracking_uri=session_mlflow_uri,
        mlflow_artifact_location=(root / "mlartifacts").as_uri(),
        registered_model_name=f"srv-{uuid.uuid4().hex[:8]}",
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        triton_http_url=f"127.0.0.1:{free_port()}",
        triton_metrics_port=free_port(),
    )


@pytest.fixture(scope="session")
def triton(serving_settings):
    """A real tritonserver on ``serving_settings.model_repository`` (explicit mode, nothing loaded yet)."""
    from serving.server import TritonServer

    server = TritonServer(serving_settings, load=[])
    server.start()
    yield server
    prefix = server.shm_prefix
    server.stop()
    from serving.server import SHM_DIR

    assert not list(SHM_DIR.glob(f"{prefix}*")), "tritonserver left shared-memory files behind"

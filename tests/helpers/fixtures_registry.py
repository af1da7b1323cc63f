"""Fixtures for the registry area: cheap bundles with chosen metrics, and a registry of its own per test.

Bundles share one small encoder (BERT architecture, 2 layers, hidden 32, random weights, the real
all-MiniLM-L6-v2 tokenizer), so each bundle is ~4 MB and loads in well under a second; they differ only in
``metrics.json``, the head and the plots. Gate and registry logic only read metrics and files, and the pyfunc
test compares the pyfunc against ``load_bundle`` on the same folder, so random weights are enough.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

FACETS = {
    "category": ["category:apparel", "category:apparel/topwear", "category:footwear"],
    "color": ["color:black", "color:blue", "color:white"],
    "gender": ["gender:men", "gender:women"],
}
EXCLUSIVE = {"category": True, "color": True, "gender": True}
ANCESTORS = {"category:apparel/topwear": ["category:apparel"]}
TEST_DIGEST = "sha256:" + "a" * 64
DATASET_DIGEST = "sha256:" + "d" * 64


def metrics(micro_f1: float = 0.80, facets: dict[str, float] | None = None, **over) -> dict:
    """A metrics.json body (the training contract) with the given headline and per-facet micro-F1."""
    facet_f1 = {"category": micro_f1, "color": micro_f1, "gender": micro_f1, **(facets or {})}
    model = {
        "micro_f1": micro_f1,
        "macro_f1": round(micro_f1 - 0.1, 4),
        "precision_at_1": round(min(1.0, micro_f1 + 0.05), 4),
        "ece": 0.05,
        "facets": {
            f: {"exclusive": True, "accuracy": v, "micro_f1": v, "macro_f1": round(v - 0.1, 4)}
            for f, v in facet_f1.items()
        },
        "tags": {"color:black": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 40}},
    }
    baseline = copy.deepcopy(model)
    baseline["micro_f1"] = 0.5
    out = {
        "model": model,
        "baseline": baseline,
        "test_digest": TEST_DIGEST,
        "dataset_digest": DATASET_DIGEST,
        "n_test": 200,
        "n_train": 800,
        "n_val": 100,
    }
    out.update(over)
    return out


def _plot(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["category", "color", "gender"], [0.8, 0.7, 0.9])
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=50)
    plt.close(fig)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A small randomly initialised BERT with the real MiniLM tokenizer, saved once per session."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.training.bundle import default_encoder_path

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_encoder")
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def make_bundle(tiny_encoder_dir, tmp_path_factory):
    """Factory: ``make_bundle(metrics_dict, seed=0, name=None, card=True) -> bundle folder``."""
    import torch

    from pipeline.training.bundle import new_model, save_bundle
    from pipeline.training.labels import LabelMap

    root = tmp_path_factory.mktemp("bundles")
    label_map = LabelMap.build(FACETS, EXCLUSIVE, ANCESTORS)

    def make(body: dict | None = None, *, seed: int = 0, name: str | None = None, card: bool = True) -> Path:
        torch.manual_seed(seed)
        model, tok = new_model(str(tiny_encoder_dir), label_map)
        path = root / (name or f"b-{uuid.uuid4().hex[:8]}")
        body = metrics() if body is None else body
        save_bundle(
            path,
            model,
            tok,
            label_map,
            np.full(len(label_map), 0.2, dtype=np.float32),
            {"dataset_digest": body.get("dataset_digest"), "test_digest": body.get("test_digest")},
        )
        (path / "metrics.json").write_text(json.dumps(body, indent=1))
        if card:
            micro = body.get("model", {}).get("micro_f1")
            (path / "model_card.md").write_text(f"# Product tagger\n\nTest micro-F1: {micro}\n")
            _plot(path / "plots" / "facet_f1.png", f"facet F1 ({path.name})")
        return path

    return make


@pytest.fixture
def registry_settings(settings):
    """The ``settings`` fixture with a registered-model name of its own (tests share one MLflow store)."""
    return settings.model_copy(update={"registered_model_name": f"pt-{uuid.uuid4().hex[:8]}"})

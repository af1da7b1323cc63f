"""Smoke-train through the real entry point (tiny_bundle): the bundle, MLflow run, metrics and predictions."""

from __future__ import annotations

import json

import mlflow
import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_bundle_has_contract_files_and_metrics(tiny_bundle):
    p = tiny_bundle.path
    for name in ("bundle.json", "encoder", "head.safetensors", "label_map.json", "thresholds.json",
                 "metrics.json", "settings.json", "model_card.md", "plots/facet_f1.png",
                 "plots/precision_recall.png", "plots/confusion_category.png"):  # fmt: skip
        assert (p / name).exists(), name
    metrics = json.loads((p / "metrics.json").read_text())
    for block in ("model", "baseline"):
        m = metrics[block]
        assert {"micro_f1", "macro_f1", "precision_at_1", "ece", "facets", "tags"} <= set(m)
        assert m["facets"]["gender"]["exclusive"] is True and 0 <= m["facets"]["gender"]["accuracy"] <= 1
        assert {"precision", "recall", "f1", "support"} <= set(next(iter(m["tags"].values())))
    assert metrics["test_digest"] == tiny_bundle.result.test_digest and len(metrics["test_digest"]) == 64
    assert metrics["n_train"] > metrics["n_test"] > 0
    meta = json.loads((p / "bundle.json").read_text())
    for key in ("max_length", "text_fields", "encoder_source", "dataset_digest", "test_digest", "spec"):
        assert key in meta, key
    assert meta["max_length"] == 32 and meta["spec"] == "myntra"


def test_loss_fell_and_quality_clears_a_floor(tiny_bundle):
    history = json.loads((tiny_bundle.path / "history.json").read_text())
    assert len(history) >= 2, history  # one validation per epoch: at least two to compare
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    assert last < 0.8 * first, f"training loss went {first:.4f} -> {last:.4f}"
    assert max(h["val_micro_f1"] for h in history[1:]) >= history[0]["val_micro_f1"], history  # no collapse
    m = tiny_bundle.evaluation.metrics["model"]
    # Majority-class guessing of the 5 facets scores ~0.45 micro-F1 on this slice; the tagger must beat it.
    assert m["micro_f1"] > 0.55, m["micro_f1"]
    assert m["facets"]["gender"]["accuracy"] > 0.6


def test_run_is_in_mlflow_with_dataset_digest_metrics_and_artifacts(tiny_bundle):
    from pipeline.core.tracking import client

    c = client(tiny_bundle.settings)
    run = c.get_run(tiny_bundle.result.run_id)
    assert run.data.tags["dataset_digest"] == tiny_bundle.result.dataset_digest
    assert run.data.tags["test_digest"] == tiny_bundle.result.test_digest
    assert "test_micro_f1" in run.data.metrics and "baseline_test_micro_f1" in run.data.metrics
    assert len(c.get_metric_history(run.info.run_id, "val_micro_f1")) >= 1
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == tiny_bundle.result.dataset_digest[:32]
    top = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"bundle", "plots", "model_card.md", "metrics.json"} <= top
    bundle_files = {a.path for a in c.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/head.safetensors" in bundle_files
    assert mlflow.get_tracking_uri()


def test_bundle_predictions_are_hierarchy_consistent(tiny_bundle):
    from pipeline.training.bundle import load_bundle

    b = load_bundle(tiny_bundle.path)
    preds = b.predict(["Nike Men Black Running Shoes", "Puma Women Blue Printed T-shirt", "Titan Men Watch"])
    for tags in preds:
        slugs = {t["slug"] for t in tags}
        facets = [t["facet"] for t in tags if t["slug"] in b.label_map.slugs]
        assert len(facets) == len(set(facets)), "an exclusive facet got two values"
        for s in slugs:
            for anc in b.label_map.ancestors.get(s, ()):
                assert anc in slugs, f"{s} predicted without its ancestor {anc}"
    assert any(t["slug"] == "gender:male" for t in preds[0])


def test_product1m_trains_through_its_spec_on_e5_chosen_by_its_locale(e5_bundle):
    """Chinese titles, multi-valued brand/product_type facets: same code, per-tag thresholds calibrated; no encoder
    named, so the catalog's locale (zh) picks e5-small, trimmed to the catalog's pieces."""
    import mlflow

    from pipeline.training.bundle import load_bundle

    result, settings = e5_bundle.result, e5_bundle.settings
    facets = e5_bundle.evaluation.metrics["model"]["facets"]
    assert set(facets) == {"brand", "product_type"} and not facets["brand"]["exclusive"]
    b = load_bundle(result.bundle_path)
    assert b.meta["spec"] == "product1m" and b.meta["locale"] == "zh"
    assert b.meta["encoder"] == "e5-small" and b.meta["encoder_prefix"] == "query: "
    assert "e5-small" in (b.path / "model_card.md").read_text(encoding="utf-8")
    assert 1_000 < b.model.encoder.config.vocab_size < 100_000  # trimmed from 250,037 pieces
    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(result.run_id)
    assert run.data.params["encoder"] == "e5-small" and "zh" in run.data.params["encoder_choice"]
    multi = [i for f in b.label_map.facets for i in range(f.start, f.end) if not f.exclusive]
    assert len(multi) == len(b.label_map) and all(0.0 < b.thresholds[i] < 1.0 for i in multi)
    # the bundle as loaded decides exactly what training recorded for its held-out rows (what evaluation scored)
    import numpy as np

    from pipeline.training.labels import decide

    texts = [json.loads(line)["text"] for line in (b.path / "test_split.jsonl").read_text().splitlines()]
    with np.load(b.path / "heldout.npz") as held:
        recorded = held["model_pred"]
    assert len(texts) == len(recorded) > 0
    same_row = (decide(b.scores(texts), b.label_map, b.thresholds) == recorded).all(axis=1)
    assert same_row.mean() > 0.98, f"{(~same_row).sum()} of {len(texts)} rows decided differently"


@pytest.mark.unit
def test_psycopg_notes_on_handled_pipeline_aborts_are_dropped_and_other_warnings_kept(caplog):
    """MLflow's store handles a duplicate metric insert itself; psycopg's side note about the aborted batch goes,
    any other psycopg warning (here the same note about a real error) still shows."""
    import logging

    from pipeline.core.tracking import quiet_handled_pipeline_aborts

    quiet_handled_pipeline_aborts()
    quiet_handled_pipeline_aborts()  # idempotent
    psycopg_log = logging.getLogger("psycopg")
    assert len([f for f in psycopg_log.filters if getattr(f, "__name__", "") == "_not_a_handled_abort"]) == 1

    class Pipeline:  # how psycopg's warning shows its pipeline object (``%r``)
        def __repr__(self) -> str:
            return "<psycopg.Pipeline [INERROR, pipeline=ON] (user=postgres database=mlflow) at 0x7f>"

    pipeline = Pipeline()
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        psycopg_log.warning("error ignored terminating %r: %s", pipeline, "pipeline aborted")
        psycopg_log.warning("error ignored terminating %r: %s", pipeline, "duplicate key value violates unique")
    assert [r.getMessage()[-35:] for r in caplog.records] == ["duplicate key value violates unique"]


@pytest.mark.integration
def test_a_chinese_catalog_retrained_on_e5_shows_the_encoder_change_in_models_compare(e5_bundle, tmp_path):
    """The same 200 Product1M rows trained before on MiniLM (asked for by name) and now on e5-small (its locale's
    default): `tagger models compare` names each version's encoder beside the metric deltas."""
    from pipeline.evaluation.evaluate import evaluate_run
    from pipeline.registry.compare import compare
    from pipeline.registry.versions import register_bundle
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    settings = e5_bundle.settings.model_copy(update={"registered_model_name": f"zh-{tmp_path.name[-8:]}"})
    opts = TrainOptions(encoder="minilm-l6", max_length=40, batch_size=16, epochs=1, max_steps=6, min_tag_count=3,
                        progress=False, precision="fp32")  # fmt: skip
    before = train(str(e5_bundle.catalog), "product1m", settings, opts)
    evaluate_run(before.bundle_path, settings)
    v1 = register_bundle(settings, before.bundle_path).version
    v2 = register_bundle(settings, e5_bundle.path).version
    rows = {r["metric"]: r for r in compare(settings, v1, v2, tmp_path).rows}
    assert (rows["encoder"]["a"], rows["encoder"]["b"]) == ("minilm-l6", "e5-small")
    assert rows["micro_f1"]["delta"] is not None  # both scored on the same frozen test split


@pytest.mark.unit
def test_a_standardised_head_is_saved_folded_and_serves_the_same_logits(tmp_path):
    """Training's center/scale reparametrisation is folded into the saved head: the loaded bundle (a plain linear
    head, as ONNX and Triton see it) gives the logits the trained model gave."""
    import numpy as np
    import torch

    from pipeline.training.bundle import load_bundle, new_model, save_bundle
    from pipeline.training.labels import FacetSlice, LabelMap
    from pipeline.training.loop import standardize_head_input

    slugs = ["color:red", "color:blue", "gender:men"]
    label_map = LabelMap(tuple(slugs), (FacetSlice("color", True, 0, 2), FacetSlice("gender", False, 2, 3)))
    model, tok = new_model(None, label_map)
    texts = ["Red cotton shirt for men", "Blue denim jeans", "Women red handbag", "Navy blue sports shoe"]
    ids = [tok(t)["input_ids"] for t in texts]
    standardize_head_input(model, ids, tok.pad_token_id, torch.device("cpu"), bf16=False)
    assert float(model.scale.min()) > 0 and not torch.allclose(model.center, torch.zeros_like(model.center))
    model.eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        before = model(enc["input_ids"], enc["attention_mask"]).numpy()
    save_bundle(tmp_path / "b", model, tok, label_map, np.full(3, 0.5, dtype=np.float32), {})
    after = load_bundle(tmp_path / "b").logits(texts)
    assert np.allclose(before, after, atol=1e-4), np.abs(before - after).max()

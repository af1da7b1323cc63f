"""The hybrid tagger: the NumPy TF-IDF half reproduces scikit-learn, fusion weights come from validation only,
and the trained bundle serves exactly the fused scores it was evaluated with."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.data import myntra_slice

from pipeline.training.baseline import fit_baseline
from pipeline.training.dataset import prepare
from pipeline.training.hybrid import choose_weights, fit_temperatures
from pipeline.training.labels import LabelMap, decide, probabilities
from pipeline.training.tfidf import TfidfScorer, _char_wb_ngrams

pytestmark = pytest.mark.unit

ODD_TEXTS = ["A  b c", "x", "Ünïcode ß 漢字 t-shirt", "   ", "", "Men's 2-in-1 jacket (navy/grey)"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from pipeline.catalog.readers import read_catalog
    from pipeline.catalog.spec import load_spec

    spec = load_spec("myntra")
    csv = myntra_slice(tmp_path_factory.mktemp("hybrid") / "myntra.csv", 400)
    prep = prepare(read_catalog(csv, spec).frame, spec, min_tag_count=3)
    base = fit_baseline(prep.part("train")["text"].tolist(), prep.y("train"), prep.label_map)
    return prep, base


def test_char_wb_ngrams_match_scikit_learn_on_short_and_long_words():
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyzer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5)).build_analyzer()
    for text in ["a", "ab", "abc tee", "x  yz\tlonger-word", "漢字"]:
        assert _char_wb_ngrams(text.lower(), 2, 5) == analyzer(text), text


def test_numpy_scorer_reproduces_the_scikit_learn_decision_function(fitted, tmp_path):
    prep, base = fitted
    texts = prep.part("test")["text"].tolist() + ODD_TEXTS
    scorer = TfidfScorer.from_baseline(base)
    assert np.abs(scorer.decision(texts) - base.logits(texts)).max() < 1e-4
    scorer.temperatures, scorer.weights = {"color": 3.0}, {"color": 0.5}
    scorer.save(tmp_path)
    again = TfidfScorer.load(tmp_path)
    assert np.array_equal(again.decision(texts), scorer.decision(texts))
    assert again.temperatures == {"color": 3.0} and again.weights == {"color": 0.5}
    assert TfidfScorer.load(tmp_path / "nowhere") is None


def test_the_served_copy_needs_no_pipeline_package(fitted, tmp_path):
    """Triton's version folder holds tfidf.py + labels.py copies; they must work without ``pipeline``."""
    import shutil
    import subprocess
    import sys

    import pipeline.training.labels
    import pipeline.training.tfidf

    prep, base = fitted
    shutil.copy2(pipeline.training.tfidf.__file__, tmp_path / "tfidf.py")
    shutil.copy2(pipeline.training.labels.__file__, tmp_path / "labels.py")
    TfidfScorer.from_baseline(base).save(tmp_path)
    texts = prep.part("test")["text"].tolist()[:5]
    code = (
        "import sys, json; sys.modules['pipeline'] = None; sys.path.insert(0, sys.argv[1]); import tfidf; "
        "print(json.dumps(tfidf.TfidfScorer.load(sys.argv[1]).decision(json.loads(sys.argv[2])).tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), json.dumps(texts)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert np.allclose(np.array(json.loads(out)), base.logits(texts), atol=1e-4)


def test_zero_weights_leave_the_encoder_scores_untouched(fitted):
    prep, base = fitted
    scorer = TfidfScorer.from_baseline(base)
    logits = np.random.default_rng(0).normal(size=(3, len(prep.label_map))).astype(np.float32)
    texts = prep.part("test")["text"].tolist()[:3]
    fused = scorer.fuse(logits, scorer.decision(texts), prep.label_map)
    assert np.allclose(fused, probabilities(logits, prep.label_map))
    scorer.weights = {f.name: 1.0 for f in prep.label_map.facets}
    scorer.temperatures = {f.name: 2.0 for f in prep.label_map.facets}
    fused = scorer.fuse(logits, scorer.decision(texts), prep.label_map)
    expect = probabilities(2.0 * base.logits(texts), prep.label_map)
    assert np.allclose(fused, expect, atol=1e-4)


def _toy():
    lm = LabelMap.build({"a": ["a:x", "a:y"], "b": ["b:p", "b:q"]}, {"a": True, "b": True})
    y = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]], dtype=np.float32)
    return lm, y


def test_weights_follow_the_better_source_per_facet():
    lm, y = _toy()
    good = np.where(y > 0, 0.9, 0.1).astype(np.float32)
    bad = 1 - good
    # facet a: the encoder is right and TF-IDF wrong; facet b the other way round
    p_enc = np.concatenate([good[:, :2], bad[:, 2:]], axis=1)
    p_tfidf = np.concatenate([bad[:, :2], good[:, 2:]], axis=1)
    w = choose_weights(p_enc, p_tfidf, y, lm, lambda p, y, lm: np.zeros(4, np.float32))
    assert w["a"] < 0.5 < w["b"]
    assert w["a"] == 0.0  # ties go to the encoder


def test_temperature_sharpens_confident_correct_decisions():
    lm, y = _toy()
    decision = np.where(y > 0, 1.0, -1.0).astype(np.float32)  # always right: larger T, lower log-loss
    assert all(t >= 8 for t in fit_temperatures(decision, y, lm).values())  # (float32 saturates beyond ~10)
    assert fit_temperatures(-decision, y, lm) == {"a": 0.25, "b": 0.25}  # always wrong: as flat as possible


@pytest.mark.model
@pytest.mark.slow
def test_trained_bundle_is_a_hybrid_and_predicts_its_fused_scores(tiny_bundle):
    from pipeline.training.bundle import load_bundle

    b = load_bundle(tiny_bundle.path)
    metrics = json.loads((tiny_bundle.path / "metrics.json").read_text())
    assert b.tfidf is not None and set(metrics["hybrid"]["weights"]) == {f.name for f in b.label_map.facets}
    assert "encoder" in metrics and "baseline" in metrics
    texts = ["Puma Men Black Running Shoes", "Fabindia Women Blue Kurta"]
    fused = b.tfidf.fuse(b.logits(texts), b.tfidf.decision(texts), b.label_map)
    assert np.allclose(b.scores(texts), fused)
    pred = decide(fused, b.label_map, b.thresholds)
    served = [{t["slug"] for t in item if t["slug"] in b.label_map.slugs} for item in b.predict(texts)]
    assert served == [{b.label_map.slugs[j] for j in np.flatnonzero(row)} for row in pred]


def test_an_over_confident_encoder_is_temperature_scaled_and_its_served_scores_calibrate(fitted, tmp_path):
    """Logits five times too sharp (right 70% of the time, always ~certain): the fitted temperature softens them
    (T < 1), the served scores' ECE drops, the decisions of exclusive facets are unchanged (argmax), and the
    temperatures survive a save/load as Triton loads them."""
    from pipeline.metrics import expected_calibration_error
    from pipeline.training.hybrid import fit_hybrid

    prep, base = fitted
    lm, texts, y = prep.label_map, prep.part("val")["text"].tolist(), prep.y("val")
    rng = np.random.default_rng(0)
    truth = np.where(y, 2.0, -2.0) * np.where(rng.random(y.shape) < 0.7, 1.0, -1.0)  # wrong 30% of the time
    logits = (truth + rng.normal(0, 0.5, y.shape)).astype(np.float32) * 5.0
    thresholds = lambda p, yy, m: np.where([f.exclusive for f in m.facets for _ in range(f.end - f.start)], 0.0, 0.5)  # noqa: E731
    scorer = fit_hybrid(base, texts, logits, y, thresholds)
    assert all(scorer.encoder_temperatures[f.name] < 1.0 for f in lm.facets), scorer.encoder_temperatures
    scorer.weights = {}  # the encoder alone, to see its calibration
    thr = thresholds(None, None, lm)
    raw = scorer.fuse(logits, scorer.decision(texts), lm, calibrated=False)
    cal = scorer.fuse(logits, scorer.decision(texts), lm)
    assert np.array_equal(decide(raw, lm, thr)[:, : lm.facets[0].end] if lm.facets[0].exclusive else 0,
                          decide(cal, lm, thr)[:, : lm.facets[0].end] if lm.facets[0].exclusive else 0)  # fmt: skip
    ece_raw = expected_calibration_error(y, decide(raw, lm, thr), raw)
    ece_cal = expected_calibration_error(y, decide(cal, lm, thr), cal)
    assert ece_cal < ece_raw - 0.05, (ece_raw, ece_cal)
    scorer.save(tmp_path)
    assert TfidfScorer.load(tmp_path).encoder_temperatures == scorer.encoder_temperatures


def test_metrics_report_micro_f1_without_facets_read_off_the_input(tiny_bundle, tmp_path):
    import shutil

    from pipeline.evaluation.evaluate import heldout_metrics
    from pipeline.metrics import micro_f1

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.path, copy)
    meta = json.loads((copy / "bundle.json").read_text())
    leaked = [json.loads((copy / "label_map.json").read_text())["facets"][0]["name"]]
    (copy / "bundle.json").write_text(json.dumps({**meta, "facets_in_text": leaked}))
    metrics, _, y, served = heldout_metrics(copy)
    keep = np.array([f not in leaked for f in LabelMap.load(copy / "label_map.json").facet_of_index()])
    assert metrics["facets_in_text"] == leaked and "hybrid" in metrics
    assert metrics["model"]["micro_f1_without_text_facets"] == micro_f1(y[:, keep], served[:, keep])

"""Fit the hybrid tagger's fusion on the validation split: TF-IDF temperatures, per-facet weights, thresholds.

Given the fine-tuned encoder's validation logits and the TF-IDF baseline fitted on the training split, choose
for each facet the temperature that makes the linear model's decision values probabilities (least log-loss),
the temperature that calibrates the encoder's logits (least log-loss: temperature scaling, so the served scores
read as probabilities and pass the gate's ECE rule), then the weight ``w_f`` in
``p = (1 - w_f) * p_encoder + w_f * p_tfidf`` that maximises that facet's validation accuracy (exclusive) or
micro-F1 (multi-valued); ties go to the smaller weight, so a facet the TF-IDF half does not help stays
encoder-only. The test split is never looked at. See :mod:`pipeline.training.tfidf` for serving.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from pipeline.metrics import facet_score
from pipeline.training.labels import LabelMap, decide, probabilities
from pipeline.training.tfidf import TfidfScorer

log = logging.getLogger(__name__)

WEIGHT_GRID = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))
# temperature scaling of the encoder (Guo et al. 2017): a fine-tuned head is usually over-confident (T < 1 softens)
ENCODER_GRID = (0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)


def fit_temperatures(decision: np.ndarray, y: np.ndarray, label_map: LabelMap, grid=None) -> dict[str, float]:
    """Per facet, the temperature that minimises validation log-loss of softmax/sigmoid(T * decision)."""
    grid = grid or (0.25, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30)
    out = {}
    for f in label_map.facets:
        d, t = decision[:, f.start : f.end], y[:, f.start : f.end].astype(np.float32)
        rows = t.any(1) if f.exclusive else np.ones(len(t), bool)
        best = (math.inf, 1.0)
        for temp in grid if rows.any() else ():
            z = d[rows] * temp
            if f.exclusive:
                z = z - z.max(1, keepdims=True)
                nll = float(-((z - np.log(np.exp(z).sum(1, keepdims=True))) * t[rows]).sum(1).mean())
            else:
                nll = float((np.logaddexp(0, z) - t[rows] * z).mean())
            if nll < best[0]:
                best = (nll, float(temp))
        out[f.name] = best[1]
    return out


def choose_weights(p_enc: np.ndarray, p_tfidf: np.ndarray, y: np.ndarray, label_map: LabelMap, calibrate) -> dict:
    """Per facet, the fusion weight with the best validation score (``calibrate(probs, y, lm)`` -> thresholds)."""
    best = {f.name: (-1.0, 0.0) for f in label_map.facets}
    for w in WEIGHT_GRID:  # one fusion and one calibration per weight, scored for every facet
        fused = (1 - w) * p_enc + w * p_tfidf
        pred = decide(fused, label_map, calibrate(fused, y, label_map))
        for f in label_map.facets:
            s = facet_score(y, pred, f)
            if s > best[f.name][0] + 1e-9:
                best[f.name] = (s, float(w))
    return {name: w for name, (_, w) in best.items()}


def fit_hybrid(baseline, texts_val: list[str], logits_val: np.ndarray, y_val: np.ndarray, calibrate) -> TfidfScorer:
    """The TF-IDF half with temperatures and fusion weights fitted on validation."""
    lm = baseline.label_map
    scorer = TfidfScorer.from_baseline(baseline)
    decision = scorer.decision(texts_val)
    scorer.temperatures = fit_temperatures(decision, y_val, lm)
    scorer.encoder_temperatures = fit_temperatures(logits_val, y_val, lm, grid=ENCODER_GRID)
    p_tfidf = probabilities(scorer.scaled(decision, lm), lm)
    p_enc = probabilities(scorer.scaled(logits_val, lm, scorer.encoder_temperatures), lm)
    scorer.weights = choose_weights(p_enc, p_tfidf, y_val, lm, calibrate)
    log.info("hybrid: TF-IDF temperatures %s, encoder temperatures %s, fusion weights %s", scorer.temperatures,
             scorer.encoder_temperatures, scorer.weights)  # fmt: skip
    return scorer


def fuse_and_decide(baseline, val: tuple, test: tuple, calibrate):
    """Fit the fusion on validation, then the tagger as served on test: ``(scorer, thresholds, scores, decisions)``.

    ``val`` is ``(texts, encoder logits, y)``, ``test`` is ``(texts, encoder logits)``. Thresholds are calibrated
    on the fused validation scores, as the bundle serves them. Training and ``bench_quality --from-logits`` share it.
    """
    (val_texts, val_logits, y_val), (test_texts, test_logits) = val, test
    lm = baseline.label_map
    scorer = fit_hybrid(baseline, val_texts, val_logits, y_val, calibrate)
    thresholds = calibrate(scorer.fuse(val_logits, scorer.decision(val_texts), lm), y_val, lm)
    scores = scorer.fuse(test_logits, scorer.decision(test_texts), lm)
    return scorer, thresholds, scores, decide(scores, lm, thresholds)

"""The one place tag predictions are scored: F1 (micro, macro, per tag, per facet), precision@k, calibration,
bootstrap intervals and per-tag threshold calibration.

Every function takes label matrices: ``y_true`` [B, N] bool, ``y_pred`` [B, N] bool and ``scores`` [B, N] in
[0, 1], columns in label-map order (category *leaves*; ancestors follow from the hierarchy). Training uses these
for model selection (early stopping, fusion weights, thresholds on validation), evaluation for the frozen test
split, serving for the int8-vs-fp32 check. NumPy and scikit-learn only: this module sits under every stage.

Micro-F1 is computed from summed counts rather than by ``sklearn.metrics.f1_score``: the bootstrap calls it a
thousand times per system, and on a [4141, 190] matrix (Myntra's test split) sklearn took 37 ms a call against
1.6 ms for the counts (23x; best of 50 on an AMD EPYC), with the same value (``bench/bench_metrics.py``).
Per-tag precision, recall and F1, and macro-F1, come from scikit-learn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

if TYPE_CHECKING:
    from pipeline.training.labels import FacetSlice, LabelMap


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per tag, each [N] float."""
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    return tp, fp, fn


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 over all (row, tag) decisions; 0 when nothing is true and nothing predicted."""
    tp, fp, fn = counts(y_true, y_pred)
    return _f1(tp.sum(), fp.sum(), fn.sum())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over tags that occur in the truth or the predictions (tags absent from both are skipped)."""
    if not (y_true.any(0) | y_pred.any(0)).any():
        return 0.0
    with warnings.catch_warnings():  # nan = "absent from both": excluded from the mean, which is what we want
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return float(f1_score(y_true, y_pred, average="macro", zero_division=np.nan))


def precision_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over rows of the fraction of the k best-scored tags that are true (rows with no true tag skipped)."""
    rows = y_true.any(axis=1)
    if not rows.any():
        return 0.0
    top = np.argsort(-scores[rows], axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(y_true[rows], top, axis=1).mean())


def expected_calibration_error(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """ECE over the predicted tags: |accuracy - confidence| per score bin, weighted by the bin's size."""
    conf = scores[y_pred]
    correct = y_true[y_pred].astype(float)
    if conf.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def facet_score(y_true: np.ndarray, y_pred: np.ndarray, facet: FacetSlice) -> float:
    """A facet's headline number: accuracy over the rows whose true value is one of the head's tags
    (exclusive facet), or micro-F1 over its tags (multi-valued)."""
    t, p = y_true[:, facet.start : facet.end], y_pred[:, facet.start : facet.end]
    if not facet.exclusive:
        return micro_f1(t, p)
    rows = t.any(axis=1)
    return float((t[rows] == p[rows]).all(axis=1).mean()) if rows.any() else 0.0


def tag_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, label_map: LabelMap) -> dict:
    """The ``metrics.json`` block (``"model"``, ``"baseline"``, ``"encoder"``): overall, per facet and per tag."""
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    tags = {
        slug: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(n)}
        for i, (slug, n) in enumerate(zip(label_map.slugs, support, strict=True))
    }
    facets = {}
    for f in label_map.facets:
        t, p = y_true[:, f.start : f.end], y_pred[:, f.start : f.end]
        entry = {"exclusive": f.exclusive, "micro_f1": micro_f1(t, p), "macro_f1": macro_f1(t, p)}
        if f.exclusive:
            entry["accuracy"] = facet_score(y_true, y_pred, f)
            entry["n"] = int(t.any(axis=1).sum())
        facets[f.name] = entry
    return {
        "micro_f1": micro_f1(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "precision_at_1": precision_at_k(y_true, scores, 1),
        "precision_at_3": precision_at_k(y_true, scores, 3),
        "ece": expected_calibration_error(y_true, y_pred, scores),
        "facets": facets,
        "tags": tags,
    }


def slug_micro_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    """Micro-F1 of predicted slug lists against gold slug lists (one list per item, any order)."""
    binarizer = MultiLabelBinarizer().fit([*predicted, *gold])
    return micro_f1(binarizer.transform(gold).astype(bool), binarizer.transform(predicted).astype(bool))


def best_thresholds(probs: np.ndarray, y: np.ndarray, columns: Sequence[int], grid: np.ndarray) -> dict[int, float]:
    """For each column, the grid threshold with the best F1 of ``probs[:, j] >= t`` against ``y[:, j]``
    (first best on ties; 0.5 when the column has no positive)."""
    out = {}
    for j in columns:
        pos = y[:, j].astype(bool)
        if not pos.any():
            out[j] = 0.5
            continue
        pred = probs[:, j][None, :] >= grid[:, None]  # [G, B]
        tp = (pred & pos).sum(1)
        f1 = 2 * tp / np.maximum(pred.sum(1) + pos.sum(), 1)
        out[j] = float(grid[int(np.argmax(f1))])
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    preds: dict[str, np.ndarray],
    metric: Callable[[np.ndarray, np.ndarray], float],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float, float]]:
    """Paired bootstrap over test rows: name -> (point, low, high) for each prediction matrix in ``preds``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n, len(y_true)))
    out = {}
    for name, p in preds.items():
        vals = np.array([metric(y_true[i], p[i]) for i in idx])
        out[name] = (
            float(metric(y_true, p)),
            float(np.quantile(vals, alpha / 2)),
            float(np.quantile(vals, 1 - alpha / 2)),
        )
    return out

"""Evaluation plots (PNG): per-facet F1 model vs baseline, precision-recall curves, category confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from pipeline.training.labels import LabelMap


def _plt():
    import matplotlib  # deferred: the backend must be chosen before pyplot is imported

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def facet_f1_bars(model: dict, baseline: dict | None, path: Path) -> Path:
    """Grouped bars of each facet's micro-F1 (accuracy for exclusive facets equals it), model vs baseline."""
    plt = _plt()
    facets = list(model["facets"])
    x = np.arange(len(facets))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(facets)), 3.5))
    ax.bar(x - 0.2, [model["facets"][f]["micro_f1"] for f in facets], 0.4, label="tagger")
    if baseline:
        ax.bar(x + 0.2, [baseline["facets"][f]["micro_f1"] for f in facets], 0.4, label="TF-IDF baseline")
    ax.set_xticks(x, facets)
    ax.set_ylim(0, 1)
    ax.set_ylabel("micro-F1 (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pr_curves(y_true: np.ndarray, curves: dict[str, np.ndarray], path: Path) -> Path:
    """Micro-averaged precision-recall curve over all tags, one line per scorer."""

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, scores in curves.items():
        p, r, _ = precision_recall_curve(y_true.ravel(), scores.ravel())
        ap = average_precision_score(y_true.ravel(), scores.ravel())
        ax.plot(r, p, label=f"{name} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion(
    y_true: np.ndarray, y_pred: np.ndarray, label_map: LabelMap, path: Path, facet: str = "category", top: int = 12
) -> Path | None:
    """Row-normalised confusion matrix of the ``top`` largest tags of an exclusive facet (None if absent)."""
    sl = next((f for f in label_map.facets if f.name == facet and f.exclusive), None)
    if sl is None:
        sl = next((f for f in label_map.facets if f.exclusive), None)
    if sl is None:
        return None
    t, p = y_true[:, sl.start : sl.end], y_pred[:, sl.start : sl.end]
    rows = t.any(axis=1) & p.any(axis=1)
    ti, pi = t[rows].argmax(1), p[rows].argmax(1)
    keep = np.argsort(-t.sum(0))[:top]
    m = np.zeros((len(keep), len(keep)))
    pos = {k: i for i, k in enumerate(keep)}
    for a, b in zip(ti, pi, strict=True):
        if a in pos and b in pos:
            m[pos[a], pos[b]] += 1
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    names = [label_map.slugs[sl.start + k].split(":", 1)[1].rsplit("/", 1)[-1][:18] for k in keep]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{sl.name}: largest {len(names)} tags (row-normalised)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

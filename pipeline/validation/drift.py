"""Snapshot statistics and drift between two snapshots of the same catalog.

Statistics (stored in ``snapshots.stats``): per-facet label counts, a title-length histogram with fixed edges,
and the row count. Drift compares the current statistics with those of the last accepted snapshot:

* per-facet label distribution shift: population stability index (PSI) and Jensen-Shannon divergence (base 2,
  in [0, 1]); the label shares are smoothed with ``EPS`` so that a label seen on one side only stays finite;
* share of products whose id was not in the previous snapshot;
* PSI of the title-length histogram.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from pipeline.catalog.readers import facet_of

EPS = 1e-4
TITLE_LENGTH_EDGES = [0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000]


def label_counts(tags: pd.Series) -> dict[str, dict[str, int]]:
    """``{facet: {slug: rows}}`` over a Series of tag lists."""
    counts = Counter(t for ts in tags for t in ts)
    out: dict[str, dict[str, int]] = {}
    for slug, n in sorted(counts.items()):
        out.setdefault(facet_of(slug), {})[slug] = int(n)
    return out


def title_length_histogram(titles: pd.Series) -> dict:
    lengths = titles.fillna("").str.len().to_numpy()
    edges = TITLE_LENGTH_EDGES + [max(int(lengths.max(initial=0)) + 1, TITLE_LENGTH_EDGES[-1] + 1)]
    counts, _ = np.histogram(lengths, bins=edges)
    return {"edges": edges, "counts": [int(c) for c in counts]}


def snapshot_stats(frame: pd.DataFrame) -> dict:
    """Statistics of accepted contract rows, JSON-ready."""
    return {
        "rows": len(frame),
        "label_counts": label_counts(frame["tags"]),
        "title_length_hist": title_length_histogram(frame["title"]),
    }


def _shares(counts: dict[str, float], keys: list[str]) -> np.ndarray:
    v = np.array([float(counts.get(k, 0)) for k in keys]) + EPS
    return v / v.sum()


def psi(prev: dict[str, float], cur: dict[str, float]) -> float:
    keys = sorted(set(prev) | set(cur))
    if not keys:
        return 0.0
    p, q = _shares(prev, keys), _shares(cur, keys)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(prev: dict[str, float], cur: dict[str, float]) -> float:
    keys = sorted(set(prev) | set(cur))
    if not keys:
        return 0.0
    p, q = _shares(prev, keys), _shares(cur, keys)
    m = (p + q) / 2

    def kl(a, b):
        return float(np.sum(a * np.log2(a / b)))

    return max(0.0, (kl(p, m) + kl(q, m)) / 2)


def _hist_as_dict(hist: dict) -> dict[str, float]:
    # the last edge grows with the longest title; compare the fixed bins plus one overflow bin
    counts = list(hist["counts"])
    fixed = len(TITLE_LENGTH_EDGES) - 1
    return {str(i): float(c) for i, c in enumerate(counts[:fixed] + [sum(counts[fixed:])])}


def compare(
    prev_stats: dict,
    cur_stats: dict,
    prev_ids: set[str] | None,
    cur_ids: set[str],
    *,
    label_psi_warn: float,
    new_products_warn: float,
    title_length_psi_warn: float,
    label_psi_fail: float | None = None,
) -> dict:
    """Drift figures and the thresholds they crossed: ``{"facets": {...}, "new_product_share", ..., "alerts"}``."""
    facets = {}
    alerts, fails = [], []
    prev_labels, cur_labels = prev_stats.get("label_counts", {}), cur_stats.get("label_counts", {})
    for facet in sorted(set(prev_labels) | set(cur_labels)):
        p, c = prev_labels.get(facet, {}), cur_labels.get(facet, {})
        fig = {"psi": round(psi(p, c), 4), "js": round(jensen_shannon(p, c), 4), "labels": len(c)}
        facets[facet] = fig
        if fig["psi"] > label_psi_warn:
            alerts.append(f"label distribution of facet {facet!r} shifted: PSI {fig['psi']:.3f} > {label_psi_warn}")
        if label_psi_fail is not None and fig["psi"] > label_psi_fail:
            fails.append(f"label distribution of facet {facet!r} shifted: PSI {fig['psi']:.3f} > {label_psi_fail}")
    new_share = None
    if prev_ids is not None and cur_ids:
        new_share = round(len(cur_ids - prev_ids) / len(cur_ids), 4)
        if new_share > new_products_warn:
            alerts.append(f"{new_share:.1%} of products are new (threshold {new_products_warn:.0%})")
    t_psi = None
    if prev_stats.get("title_length_hist") and cur_stats.get("title_length_hist"):
        t_psi = round(
            psi(_hist_as_dict(prev_stats["title_length_hist"]), _hist_as_dict(cur_stats["title_length_hist"])), 4
        )
        if t_psi > title_length_psi_warn:
            alerts.append(f"title length distribution shifted: PSI {t_psi:.3f} > {title_length_psi_warn}")
    return {
        "facets": facets,
        "new_product_share": new_share,
        "title_length_psi": t_psi,
        "alerts": alerts,
        "fails": fails,
    }

"""Metrics on the frozen test split, and ``evaluate``: re-score a bundle (or a run's bundle) on it.

All metrics are computed on the head's outputs (category *leaves*; ancestors follow from the hierarchy), from
``y_true`` [B, N] bool, ``y_pred`` [B, N] bool and ``scores`` [B, N] in [0, 1]. The dict returned by
:func:`tag_metrics` is the ``"model"`` / ``"baseline"`` shape of ``metrics.json`` (read by the registry gate).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import BundleError
from pipeline.labels import LabelMap, decide, probabilities

log = logging.getLogger(__name__)


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def per_tag(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN counts per tag, each [N]."""
    tp = (y_true & y_pred).sum(0).astype(float)
    fp = (~y_true & y_pred).sum(0).astype(float)
    fn = (y_true & ~y_pred).sum(0).astype(float)
    return tp, fp, fn


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    tp, fp, fn = per_tag(y_true, y_pred)
    return _f1(tp.sum(), fp.sum(), fn.sum())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over tags that occur in the truth or the predictions (tags absent from both are skipped)."""
    tp, fp, fn = per_tag(y_true, y_pred)
    seen = (tp + fp + fn) > 0
    if not seen.any():
        return 0.0
    return float(np.mean([_f1(a, b, c) for a, b, c in zip(tp[seen], fp[seen], fn[seen], strict=True)]))


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


def facet_score(y_true: np.ndarray, y_pred: np.ndarray, facet) -> float:
    """A facet's headline number: accuracy over the rows whose true value is one of the head's tags
    (exclusive facet), or micro-F1 over its tags (multi-valued)."""
    t, p = y_true[:, facet.start : facet.end], y_pred[:, facet.start : facet.end]
    if not facet.exclusive:
        return micro_f1(t, p)
    rows = t.any(axis=1)
    return float((t[rows] == p[rows]).all(axis=1).mean()) if rows.any() else 0.0


def tag_metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, label_map: LabelMap) -> dict:
    """The metrics.json block: overall, per facet and per tag."""
    tp, fp, fn = per_tag(y_true, y_pred)
    tags = {}
    for i, slug in enumerate(label_map.slugs):
        p = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
        r = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
        tags[slug] = {"precision": p, "recall": r, "f1": _f1(tp[i], fp[i], fn[i]), "support": int(y_true[:, i].sum())}
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


def score(logits: np.ndarray, label_map: LabelMap, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits [B, N] -> (scores [B, N], predictions [B, N] bool), exactly as served."""
    probs = probabilities(logits, label_map)
    return probs, decide(probs, label_map, np.asarray(thresholds, dtype=np.float32))


def bootstrap_ci(
    y_true: np.ndarray, preds: dict[str, np.ndarray], metric, n: int = 1000, seed: int = 0, alpha: float = 0.05
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


# ---- evaluate a bundle --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalResult:
    bundle_path: str
    metrics: dict  # tag_metrics() of the bundle on the test split
    n_test: int
    test_digest: str
    report_path: str


def resolve_bundle(bundle_or_run: str, settings) -> Path:
    """A local bundle folder from a path, an MLflow run id or ``runs:/<id>/bundle`` URI (downloaded)."""
    path = Path(bundle_or_run)
    if (path / "bundle.json").exists():
        return path
    if ":/" not in bundle_or_run and not re.fullmatch(r"[0-9a-f]{32}", bundle_or_run):
        raise BundleError(
            f"no tagger bundle at {bundle_or_run!r} (bundle.json missing) and it is not an MLflow run id; "
            "pass a bundle folder, a run id or a runs:/<id>/bundle URI"
        )
    import mlflow

    from pipeline.tracking import configure

    configure(settings)
    uri = bundle_or_run if ":/" in bundle_or_run else f"runs:/{bundle_or_run}/bundle"
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(settings.home_dir / "downloads")))
    except Exception as exc:  # MLflow raises several types for unknown runs/URIs
        raise BundleError(
            f"{bundle_or_run!r} is neither a bundle folder nor an MLflow run id/URI with a 'bundle' artifact "
            f"({type(exc).__name__}: {exc}); pass a bundle path or a run id from `tagger train`"
        ) from exc


def evaluate(bundle_or_run: str | Path, settings, *, source: str | None = None, spec: str | None = None) -> EvalResult:
    """Score a bundle on the frozen test split of the catalog it was trained on (or ``source`` through ``spec``).

    Raises:
        BundleError: the bundle cannot be found, or the test split's digest differs from the bundle's
            (different data: numbers would not be comparable).
    """
    from pipeline.bundle import load_bundle
    from pipeline.dataset import load_source, prepare
    from pipeline.spec import load_spec

    path = resolve_bundle(str(bundle_or_run), settings)
    bundle = load_bundle(path)
    meta = bundle.meta
    spec_obj = load_spec(spec or meta["spec"])
    frame, _ = load_source(source or meta["source"], spec_obj, settings)
    prep = prepare(
        frame, spec_obj, min_tag_count=1, split_seed=meta.get("split_seed", 0), max_rows=meta.get("max_rows")
    )
    test = prep.part("test")
    if meta.get("test_digest") and prep.test_digest != meta["test_digest"]:
        raise BundleError(
            f"test split digest {prep.test_digest[:12]} differs from the bundle's {meta['test_digest'][:12]}: "
            "the catalog changed, so scores would not be comparable; pass the source the bundle was trained on"
        )
    from pipeline.dataset import targets

    y = targets(test["tags"], bundle.label_map)
    scores = bundle.scores(test["text"].tolist())  # as served: fused with the TF-IDF half when there is one
    pred = decide(scores, bundle.label_map, bundle.thresholds)
    metrics = tag_metrics(y, pred, scores, bundle.label_map)
    out = settings.reports_dir / "evaluations" / path.name
    out.mkdir(parents=True, exist_ok=True)
    report = out / "evaluation.json"
    result = EvalResult(str(path), metrics, len(test), prep.test_digest, str(report))
    report.write_text(json.dumps(asdict(result), indent=1))
    log.info("evaluated %s on %d test rows: micro-F1 %.4f", path, len(test), metrics["micro_f1"])
    return result

"""Stage 4, evaluation: score what training left on the frozen test split; or re-score any bundle.

:func:`evaluate_run` is the stage's entry after training: it reads a bundle's ``heldout.npz`` (the test-split
predictions of the tagger as served, the encoder alone and the TF-IDF baseline), computes their metrics with
:mod:`pipeline.metrics`, writes ``metrics.json`` (the shape the registry gate reads), the plots and the model
card into the bundle, and logs them to the training run in MLflow. :func:`evaluate` re-scores a bundle on the
frozen test split of a catalog (``tagger evaluate``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric

from pipeline.catalog.spec import load_spec
from pipeline.catalog.text import build_text, template_of
from pipeline.core.tracking import client as mlflow_client
from pipeline.core.tracking import configure
from pipeline.errors import BundleError
from pipeline.evaluation import model_card, plots
from pipeline.metrics import bootstrap_ci, micro_f1, tag_metrics
from pipeline.training.bundle import HELDOUT_ARRAYS, HELDOUT_INFO, HISTORY_FILE, TEST_SPLIT_FILE, load_bundle
from pipeline.training.dataset import load_source, prepare, split_digest, targets
from pipeline.training.labels import LabelMap, decide

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
EXPLAINED_EXAMPLES = 3
HEADLINE = ("micro_f1", "macro_f1", "precision_at_1", "ece")
CURVE_NAMES = {"model": "tagger", "encoder": "encoder only", "baseline": "TF-IDF baseline"}


@dataclass(frozen=True)
class RunEvaluation:
    run_id: str
    bundle_path: str
    metrics: dict  # metrics.json: {"model", "baseline"?, "encoder"?, "hybrid"?, digests, sizes}
    reused: bool = False


def evaluate_run(bundle_path: str | Path, settings, *, force: bool = False) -> RunEvaluation:
    """Score a training run's held-out predictions; write metrics.json, plots and model card; log to MLflow.

    Idempotent: a bundle whose ``metrics.json`` is already there is returned as it is (``force`` re-scores).

    Raises:
        BundleError: the bundle has no held-out predictions (not written by ``pipeline.training.train``).
    """
    bundle = Path(bundle_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    run_id = meta["run_id"]
    if (bundle / METRICS_FILE).exists() and not force:
        return RunEvaluation(run_id, str(bundle), json.loads((bundle / METRICS_FILE).read_text()), reused=True)
    metrics, curves, y, served = heldout_metrics(bundle, meta)
    metrics["encoder_name"] = meta.get("encoder") or meta.get("encoder_source")  # what `models compare` shows
    label_map = LabelMap.load(bundle / "label_map.json")
    _write_plots(bundle / "plots", metrics, curves, y, served, label_map)
    history = json.loads((bundle / HISTORY_FILE).read_text()) if (bundle / HISTORY_FILE).exists() else []
    card = model_card.render(
        meta=meta,
        metrics=metrics,
        dropped=meta.get("tags_left_out", {}),
        history=history,
        options=meta.get("train_options", {}),
        examples=explained_examples(bundle),
    )
    (bundle / "model_card.md").write_text(card, encoding="utf-8")
    pending = bundle / f".{METRICS_FILE}.tmp"  # metrics.json appears only once MLflow has everything: a retry after
    pending.write_text(json.dumps(metrics, indent=1, ensure_ascii=False))  # a failed upload scores and logs again
    _log_to_run(settings, run_id, bundle, metrics, pending)
    pending.replace(bundle / METRICS_FILE)
    base = metrics.get("baseline", {}).get("micro_f1")
    log.info(
        "test micro-F1 %.4f (baseline %s); bundle %s",
        metrics["model"]["micro_f1"],
        f"{base:.4f}" if base is not None else "skipped",
        bundle,
    )
    return RunEvaluation(run_id, str(bundle), metrics)


def explained_examples(bundle: Path, n: int = EXPLAINED_EXAMPLES, steps: int = 8) -> list[dict]:
    """The first ``n`` texts of the bundle's frozen test split, explained for the model card (``steps``: fewer
    integrated-gradient points than ``tagger explain``'s 16; the card shows the top words, not exact shares)."""
    from pipeline.evaluation.explain import explain

    split = bundle / TEST_SPLIT_FILE
    if not split.exists():
        return []
    with split.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]
    loaded = load_bundle(bundle)
    t0 = time.perf_counter()
    out = [explain(loaded, text, steps=steps) for text in texts]
    log.info("model card: %d examples explained in %.1f s", len(out), time.perf_counter() - t0)
    return out


def heldout_metrics(bundle: Path, meta: dict | None = None) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """(metrics.json body, PR curves by legend name, y_true, served decisions) from a bundle's held-out files;
    ``meta`` is its ``bundle.json`` when the caller has read it already."""
    if not (bundle / HELDOUT_ARRAYS).exists():
        raise BundleError(
            f"bundle {bundle} has no {HELDOUT_ARRAYS} (held-out predictions written by training); "
            "train it with `tagger train`, or score it on a catalog with `tagger evaluate BUNDLE`"
        )
    info = json.loads((bundle / HELDOUT_INFO).read_text())
    label_map = LabelMap.load(bundle / "label_map.json")
    with np.load(bundle / HELDOUT_ARRAYS) as arrays:
        y = arrays["y_true"]
        systems = {name: (arrays[f"{name}_scores"], arrays[f"{name}_pred"]) for name in info["systems"]}
    metrics = {name: tag_metrics(y, pred, scores, label_map) for name, (scores, pred) in systems.items()}
    meta = meta if meta is not None else json.loads((bundle / "bundle.json").read_text())
    leaked = meta.get("facets_in_text") or []
    if leaked:  # facets read off the model's own input: micro-F1 without them is the honest headline
        keep = np.array([f not in leaked for f in label_map.facet_of_index()])
        for name, (_, pred) in systems.items():
            metrics[name]["micro_f1_without_text_facets"] = micro_f1(y[:, keep], pred[:, keep]) if keep.any() else 0.0
        metrics["facets_in_text"] = leaked
    if info.get("hybrid"):
        metrics["hybrid"] = info["hybrid"]
    if info.get("calibration"):
        metrics["calibration"] = info["calibration"]
    metrics.update({k: info[k] for k in ("test_digest", "dataset_digest", "n_test", "n_train", "n_val")})
    hybrid = "encoder" in systems
    curves = {}
    for name in ("encoder", "model", "baseline"):
        if name in systems:
            legend = "tagger (hybrid)" if name == "model" and hybrid else CURVE_NAMES[name]
            curves[legend] = systems[name][0]
    return metrics, curves, y, systems["model"][1]


def heldout_intervals(bundle: Path, n: int = 500, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Micro-F1 of each system on the bundle's held-out split with a 95% paired-bootstrap interval:
    ``{"model" | "encoder" | "baseline": (point, low, high)}``; empty for a bundle without held-out predictions
    (trained before training wrote them)."""
    if not (Path(bundle) / HELDOUT_ARRAYS).exists():
        return {}
    with np.load(Path(bundle) / HELDOUT_ARRAYS) as arrays:
        y = arrays["y_true"]
        preds = {k.removesuffix("_pred"): arrays[k] for k in arrays.files if k.endswith("_pred")}
    return bootstrap_ci(y, preds, micro_f1, n=n, seed=seed)


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The MLflow metric names of a metrics.json body (``test_micro_f1``, ``baseline_test_color_micro_f1``...)."""
    flat = {f"test_{k}": metrics["model"][k] for k in HEADLINE}
    for other in ("baseline", "encoder"):
        if other in metrics:
            flat |= {f"{other}_test_{k}": metrics[other][k] for k in HEADLINE[:3]}
    for name, key in (("test", "model"), ("baseline_test", "baseline"), ("encoder_test", "encoder")):
        for f, e in (metrics.get(key) or {}).get("facets", {}).items():
            flat[f"{name}_{f}_{'accuracy' if e['exclusive'] else 'micro_f1'}"] = e.get("accuracy", e["micro_f1"])
    return flat


def _write_plots(pdir: Path, metrics: dict, curves: dict, y: np.ndarray, served: np.ndarray, lm: LabelMap) -> None:
    pdir.mkdir(exist_ok=True)
    plots.facet_f1_bars(metrics["model"], metrics.get("baseline"), pdir / "facet_f1.png")
    plots.pr_curves(y, curves, pdir / "precision_recall.png")
    plots.confusion(y, served, lm, pdir / "confusion_category.png")


def _log_to_run(settings, run_id: str, bundle: Path, metrics: dict, metrics_file: Path) -> None:
    """Test metrics, plots, model card and the completed bundle onto the (finished) training run."""
    client = mlflow_client(settings)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in flat_metrics(metrics).items()])
    with tempfile.TemporaryDirectory() as tmp:  # logged under its final name
        named = Path(tmp) / METRICS_FILE
        shutil.copy2(metrics_file, named)
        for path in (named, bundle / "model_card.md"):
            client.log_artifact(run_id, str(path), artifact_path="bundle")
            client.log_artifact(run_id, str(path))
    client.log_artifacts(run_id, str(bundle / "plots"), artifact_path="bundle/plots")
    client.log_artifacts(run_id, str(bundle / "plots"), artifact_path="plots")


# ---- re-score a bundle on a catalog ------------------------------------------------------------------------
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
    configure(settings)
    uri = bundle_or_run if ":/" in bundle_or_run else f"runs:/{bundle_or_run}/bundle"
    try:
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(settings.home_dir / "downloads")))
    except Exception as exc:  # MLflow raises several types for unknown runs/URIs
        raise BundleError(
            f"{bundle_or_run!r} is neither a bundle folder nor an MLflow run id/URI with a 'bundle' artifact "
            f"({type(exc).__name__}: {exc}); pass a bundle path or a run id from `tagger train`"
        ) from exc


def _bundle_spec(meta: dict, spec: str | None):
    """The spec to read the catalog with: the one asked for, else the YAML file the run was trained with (when it
    still exists), else the spec's name (a shipped one)."""
    if spec:
        return load_spec(spec)
    path = meta.get("spec_path")
    return load_spec(path if path and Path(path).is_file() else meta["spec"])


def evaluate(
    bundle_or_run: str | Path, settings, *, source: str | None = None, spec: str | None = None,
    on: str | None = None,
) -> EvalResult:  # fmt: skip
    """Score a bundle on the frozen test split of the catalog it was trained on (or ``source`` through ``spec``),
    or with ``on`` on every row of another held-out file (read through ``spec``, else the bundle's spec).

    The texts are built by the bundle's own template (as Triton builds them), whatever spec reads the rows.

    Raises:
        BundleError: the bundle cannot be found, or the test split's digest differs from the bundle's
            (different data: numbers would not be comparable).
    """
    path = resolve_bundle(str(bundle_or_run), settings)
    bundle = load_bundle(path)
    meta = bundle.meta
    spec_obj = _bundle_spec(meta, spec)
    if on is not None:
        frame, _ = load_source(on, spec_obj, settings)
        test = frame[frame["title"].astype(str).str.strip() != ""]
        digest = split_digest(test)
    else:
        frame, _ = load_source(source or meta["source"], spec_obj, settings)
        prep = prepare(
            frame, spec_obj, min_tag_count=1, split_seed=meta.get("split_seed", 0), max_rows=meta.get("max_rows")
        )
        test, digest = prep.part("test"), prep.test_digest
        if meta.get("test_digest") and digest != meta["test_digest"]:
            raise BundleError(
                f"test split digest {digest[:12]} differs from the bundle's {meta['test_digest'][:12]}: the catalog "
                "changed, so scores would not be comparable; pass the source the bundle was trained on (or --on FILE "
                "to score another held-out file)"
            )
    template = template_of(meta)
    texts = [build_text(r, template) for r in test.to_dict(orient="records")]
    y = targets(test["tags"], bundle.label_map)
    scores = bundle.scores(texts)  # as served: fused with the TF-IDF half when there is one
    pred = decide(scores, bundle.label_map, bundle.thresholds)
    metrics = tag_metrics(y, pred, scores, bundle.label_map)
    out = settings.reports_dir / "evaluations" / path.name
    out.mkdir(parents=True, exist_ok=True)
    report = out / ("evaluation.json" if on is None else f"evaluation_{Path(on).stem}.json")
    result = EvalResult(str(path), metrics, len(test), digest, str(report))
    report.write_text(json.dumps(asdict(result), indent=1))
    log.info("evaluated %s on %d rows: micro-F1 %.4f", path, len(test), metrics["micro_f1"])
    return result

"""Fine-tune an encoder into a tagger, fuse it with a TF-IDF model, write the bundle, log the run to MLflow.

``train(source, spec, settings, options)`` reads the steps top to bottom:
data (split by title, label map) -> model -> fit (resumable) -> TF-IDF baseline on the training split, fused
into the tagger per facet with weights chosen on validation (``options.hybrid``, :mod:`pipeline.training.hybrid`)
-> thresholds on validation -> predictions of the tagger as served, the encoder alone and the baseline on the
frozen test split (``heldout.npz``) -> bundle with smoke examples -> MLflow. Scoring those predictions (metrics,
plots, model card) is the next stage: :func:`pipeline.evaluation.evaluate.evaluate_run`.

The fit loop itself (optimizer, schedule, batches, precision, checkpoints, resume) is :mod:`pipeline.training.loop`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import torch

from pipeline.catalog import text
from pipeline.catalog.spec import DatasetSpec, load_spec
from pipeline.core.tracking import configure
from pipeline.metrics import expected_calibration_error
from pipeline.training import encoders
from pipeline.training.baseline import fit_baseline
from pipeline.training.bundle import (
    CONFIDENT,
    GOLDEN_FILE,
    HELDOUT_ARRAYS,
    HELDOUT_INFO,
    HISTORY_FILE,
    SMOKE_EXAMPLES,
    TEST_SPLIT_FILE,
    new_model,
    save_bundle,
)
from pipeline.training.dataset import Prepared, load_source, prepare_data
from pipeline.training.hybrid import fuse_and_decide
from pipeline.training.labels import LabelMap, decide, score
from pipeline.training.loop import (
    FitState,
    calibrate_thresholds,
    encoder_test_scores,
    fit,
    pick_device,
    tokenize_splits,
)
from pipeline.training.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    bundle_path: str
    dataset_digest: str
    test_digest: str
    device: str
    samples_per_s: float


@dataclass(frozen=True)
class Inputs:
    """What every step after the data reads, prepared once by :func:`prepare_inputs`: the spec, where the rows
    came from, the prepared catalog (splits, texts, label map, targets), the encoder chosen (trimmed to the
    catalog) and the options with that encoder's defaults filled in."""

    spec: DatasetSpec
    source_uri: str
    prep: Prepared
    encoder: encoders.Choice
    options: TrainOptions
    reviewer_labels: int | None = None  # a snapshot of db:products: tags reviewers decided (None: not known)


def reviewer_labels(source_uri: str, settings) -> int | None:
    """How many reviewer tags the snapshot behind ``source_uri`` holds (its validation stats); None for a file."""
    if not source_uri.startswith("snapshot:"):
        return None
    from pipeline.catalog.snapshot import get_snapshot  # deferred: a GPU box trains from files, without Postgres
    from pipeline.core.services import get_engine

    row = get_snapshot(get_engine(settings), source_uri.removeprefix("snapshot:"))
    return int((row or {}).get("stats", {}).get("reviewer_labels", 0))


@dataclass(frozen=True)
class Fitted:
    """What the fit leaves for the last step: the model (best weights loaded), its tokenizer and data."""

    model: torch.nn.Module
    tokenizer: object
    data: dict
    state: FitState
    device: torch.device
    bf16: bool


def prepare_inputs(source, spec, settings, options: TrainOptions | None = None) -> Inputs:
    """The encoder (named, a local folder, or by the catalog's locale) and the training defaults it brings, the
    rows of ``source`` read through ``spec``, split and labelled, and the encoder trimmed to their texts."""
    options = options or TrainOptions()
    spec_obj = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    choice = encoders.resolve(options.encoder or settings.encoder, spec_obj.encoder, spec_obj.locale,
                              settings.home_dir)  # fmt: skip
    options = replace(options.with_defaults(choice.defaults), encoder=choice.name)
    frame, source_uri = load_source(source, spec_obj, settings)
    prep = prepare_data(frame, spec_obj, options)
    if settings.database_url or source_uri.startswith("snapshot:"):  # a tag library to ask (never start one)
        prep.label_map = with_library_names(prep.label_map, settings)
    if options.trim_vocab:
        choice = choice.trimmed_to(prep.fit_texts(), settings.home_dir)
    return Inputs(spec_obj, source_uri, prep, choice, options, reviewer_labels(source_uri, settings))


def with_library_names(label_map: LabelMap, settings) -> LabelMap:
    """The label map with every locale's display name the tag library has for its tags (and their ancestors), so
    a served version answers ``locale=zh`` with Chinese names; unchanged where no library answers (a GPU box)."""
    from pipeline.catalog.taglib import all_names
    from pipeline.core.services import get_engine

    slugs = set(label_map.slugs) | {a for anc in label_map.ancestors.values() for a in anc}
    try:
        with get_engine(settings).connect() as conn:
            library = all_names(conn, slugs)
    except Exception as exc:  # noqa: BLE001  (no database, or no tag library yet: names from slugs stay)
        log.info("tag names from slugs only (no tag library: %s)", type(exc).__name__)
        return label_map
    names = {s: {**label_map.names.get(s, {}), **library.get(s, {})} for s in slugs}
    return replace(label_map, names=names)


def train(source, spec, settings, options: TrainOptions | None = None) -> TrainResult:
    """Train a tagger on ``source`` (catalog path or snapshot id) read through ``spec``; see the module doc.

    Raises:
        TrainingError: too little data (an empty split, no tag with enough examples) or an interrupted run.
    """
    # 0-1. encoder, data
    inputs = prepare_inputs(source, spec, settings, options)
    prep, options = inputs.prep, inputs.options
    # 2. model
    torch.manual_seed(options.seed)
    model, tokenizer = new_model(inputs.encoder.path, prep.label_map, options.dropout)
    data = tokenize_splits(prep, tokenizer, options.max_length)
    device, bf16 = pick_device(options)
    # 3. fit, resumable: the checkpoint folder is keyed by data + options
    key = json.dumps([prep.dataset_digest, inputs.spec.name, inputs.encoder.name, options.key_fields()], sort_keys=True)
    ckpt_dir = settings.home_dir / "checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:16]
    run_file = ckpt_dir / "run.json"
    exp_id = configure(settings)
    resume_id = json.loads(run_file.read_text())["run_id"] if options.resume and run_file.exists() else None
    with mlflow.start_run(
        run_id=resume_id, experiment_id=None if resume_id else exp_id, log_system_metrics=True
    ) as run:
        run_id = run.info.run_id
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"run_id": run_id}))
        if resume_id is None:
            _log_start(inputs, device, bf16, settings)
        log.info("training on %s (%s), run %s", device, "bf16 autocast" if bf16 else "fp32", run_id)
        state = fit(
            model,
            data,
            prep.label_map,
            options,
            pad_id=tokenizer.pad_token_id,
            device=device,
            bf16=bf16,
            checkpoint_dir=ckpt_dir,
            on_eval=lambda e: mlflow.log_metrics({k: v for k, v in e.items() if k != "step"}, step=e["step"]),
        )
        # 4-6. thresholds, held-out predictions, bundle, artifacts
        result = finish_run(run_id, Fitted(model, tokenizer, data, state, device, bf16), inputs, settings)
    _remove_checkpoint(ckpt_dir)
    return result


def write_test_split(bundle: Path, prep) -> Path:
    """The frozen test split (model text + human tags) inside the bundle: what serving checks int8 against."""
    test = prep.part("test")
    path = Path(bundle) / TEST_SPLIT_FILE
    with path.open("w", encoding="utf-8") as f:
        for text, tags in zip(test["text"], test["tags"], strict=True):
            f.write(json.dumps({"text": text, "tags": list(tags)}, ensure_ascii=False) + "\n")
    return path


def _resolvable(source_uri: str, settings) -> str:
    if source_uri.startswith("snapshot:"):
        snap = source_uri.removeprefix("snapshot:")
        return (settings.home_dir / "snapshots" / snap / "accepted.parquet").as_uri()
    return source_uri


def _log_start(inputs: Inputs, device, bf16: bool, settings) -> None:
    prep, spec, source_uri = inputs.prep, inputs.spec, inputs.source_uri
    sizes = prep.frame["split"].value_counts().to_dict()
    params = {
        **asdict(inputs.options),
        "encoder": inputs.encoder.name,
        "encoder_choice": inputs.encoder.why,
        "encoder_source": inputs.encoder.path,
        "spec": spec.name,
        "source": source_uri,
        "device": str(device),
        "bf16": bf16,
        "n_tags": len(prep.label_map),
        "n_tags_left_out": len(prep.dropped),
        "n_reviewer_labels": inputs.reviewer_labels,
        **{f"n_{k}": v for k, v in sizes.items()},
    }
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
    mlflow.set_tags({"dataset_digest": prep.dataset_digest, "test_digest": prep.test_digest, "spec": spec.name})
    df = prep.frame[["product_id", "title", "text", "split"]].assign(tags=prep.frame["tags"].map("|".join))
    # MLflow resolves the source string: give it a path/URI it knows (a snapshot's accepted Parquet file).
    mlflow.set_tag("source", source_uri)
    with warnings.catch_warnings():  # MLflow registers two equal local-file sources and warns that it picked one
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        ds = mlflow.data.from_pandas(
            df, source=_resolvable(source_uri, settings), name=f"{spec.name}-catalog", digest=prep.dataset_digest[:32]
        )
    mlflow.log_input(ds, context="training")


def finish_run(run_id: str, fitted: Fitted, inputs: Inputs, settings) -> TrainResult:
    """Thresholds on validation, the held-out predictions of every system, the bundle, training metrics to MLflow.

    With ``options.hybrid`` the baseline also becomes the bundle's TF-IDF half (fusion fitted on validation,
    :mod:`pipeline.training.hybrid`); the ``model`` predictions are then the fused tagger as served and
    ``encoder`` the fine-tuned encoder alone. Test metrics, plots and the model card are the evaluation stage's
    (:func:`pipeline.evaluation.evaluate.evaluate_run`), from the ``heldout.npz`` written here.
    """
    prep = inputs.prep
    predictions, thresholds, tfidf, calibration = heldout_predictions(fitted, prep, inputs.options)
    samples_per_s = fitted.state.samples / max(fitted.state.seconds, 1e-9)
    meta = _bundle_meta(run_id, fitted, inputs, samples_per_s)
    bundle = save_bundle(
        settings.bundles_dir / run_id, fitted.model.cpu(), fitted.tokenizer, prep.label_map, thresholds, meta, tfidf
    )
    write_test_split(bundle, prep)
    write_smoke_examples(bundle, prep, predictions["model"])
    write_heldout(bundle, predictions, prep, tfidf, calibration)
    (bundle / HISTORY_FILE).write_text(json.dumps(fitted.state.history, indent=1))
    (bundle / "settings.json").write_text(json.dumps(settings.resolved(), indent=1, default=str))
    device = f"{fitted.device}{' bf16' if fitted.bf16 else ''}"
    result = TrainResult(run_id, str(bundle), prep.dataset_digest, prep.test_digest, device, samples_per_s)
    (bundle / "train_result.json").write_text(json.dumps(asdict(result), indent=1))
    mlflow.log_metrics({"train_samples_per_s": samples_per_s, "best_val_micro_f1": fitted.state.best_f1})
    mlflow.log_artifacts(str(bundle), artifact_path="bundle")
    log.info("trained %s: best val micro-F1 %.4f; bundle %s", run_id, fitted.state.best_f1, bundle)
    return result


def heldout_predictions(fitted: Fitted, prep, options: TrainOptions):
    """Scores and decisions on the frozen test split for the tagger as served (``model``), the encoder alone and
    the TF-IDF baseline (when trained): ``({name: (scores, decisions)}, thresholds, tfidf half or None,
    calibration report or None)``; the report is the served scores' ECE on the test split with the encoder's
    temperature scaling and without it (same weights and thresholds)."""
    lm, data = prep.label_map, fitted.data
    y_val = data["val"][1]
    val_texts, test_texts = prep.texts("val"), prep.texts("test")
    val_logits, test_logits, thresholds, scores, pred = encoder_test_scores(
        fitted.model, data, lm, fitted.tokenizer.pad_token_id, fitted.device, fitted.bf16
    )
    predictions, tfidf, calibration = {"model": (scores, pred)}, None, None
    if options.baseline:
        base = fit_baseline(prep.texts("train"), data["train"][1], lm, seed=options.seed)
        b_thr = np.where(_exclusive_mask(lm), 0.0, 0.5).astype(np.float32)
        predictions["baseline"] = score(base.logits(test_texts), lm, b_thr)
        if options.hybrid:
            predictions["encoder"] = predictions["model"]
            tfidf, thresholds, h_scores, h_pred = fuse_and_decide(
                base, (val_texts, val_logits, y_val), (test_texts, test_logits), calibrate_thresholds
            )
            predictions["model"] = (h_scores, h_pred)
            raw = tfidf.fuse(test_logits, tfidf.decision(test_texts), lm, calibrated=False)
            y_test = data["test"][1]
            calibration = {
                "encoder_temperatures": tfidf.encoder_temperatures,
                "ece_before": expected_calibration_error(y_test, decide(raw, lm, thresholds), raw),
                "ece_after": expected_calibration_error(y_test, h_pred, h_scores),
            }
            log.info("calibration: test ECE %.3f before temperature scaling, %.3f after", calibration["ece_before"],
                     calibration["ece_after"])  # fmt: skip
    return predictions, thresholds, tfidf, calibration


def write_heldout(bundle: Path, predictions: dict, prep, tfidf, calibration: dict | None = None) -> Path:
    """``heldout.npz`` (truth, then each system's scores and decisions on the test split) + ``heldout.json``."""
    arrays = {"y_true": prep.y("test")}
    for name, (scores, pred) in predictions.items():
        arrays[f"{name}_scores"], arrays[f"{name}_pred"] = scores.astype(np.float32), pred
    np.savez_compressed(bundle / HELDOUT_ARRAYS, **arrays)
    info = {
        "systems": list(predictions),
        "test_digest": prep.test_digest,
        "dataset_digest": prep.dataset_digest,
        "n_train": len(prep.y("train")),
        "n_val": len(prep.y("val")),
        "n_test": len(arrays["y_true"]),
        "hybrid": {"temperatures": tfidf.temperatures, "weights": tfidf.weights} if tfidf else None,
        "calibration": calibration,
    }
    path = bundle / HELDOUT_INFO
    path.write_text(json.dumps(info, indent=1))
    return path


def write_smoke_examples(bundle: Path, prep, served: tuple[np.ndarray, np.ndarray], n: int = SMOKE_EXAMPLES) -> Path:
    """``golden.json``: up to ``n`` held-out texts with the tags the tagger as served is sure of.

    Deploys send them through Triton and expect the same tags back, so a smoke test needs only the bundle, for
    any catalog. Only confident tags: an int8 graph (logits within ~0.1 of PyTorch) can flip a borderline tag but
    not one the model is sure of.
    """
    scores, pred = served
    texts, lm = prep.texts("test"), prep.label_map
    golden = []
    for i in np.argsort(-np.where(pred, scores, 0).max(1, initial=0), kind="stable"):
        sure = np.flatnonzero(pred[i] & (scores[i] >= CONFIDENT))
        if len(sure):
            expected = {lm.slugs[j] for j in sure} | {a for j in sure for a in lm.ancestors.get(lm.slugs[j], ())}
            golden.append({"text": texts[i], "expected": sorted(expected)})
        if len(golden) == n:
            break
    path = bundle / GOLDEN_FILE
    path.write_text(json.dumps(golden, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def _bundle_meta(run_id, fitted: Fitted, inputs: Inputs, samples_per_s) -> dict:
    prep, options, spec = inputs.prep, inputs.options, inputs.spec
    return {
        "run_id": run_id,
        "spec": spec.name,
        "spec_path": str(Path(spec.source_path).resolve()) if Path(spec.source_path).is_file() else None,
        "source": inputs.source_uri,
        "max_length": options.max_length,
        "text_fields": text.template_fields(prep.template),
        "facets_in_text": spec.facets_in_text(prep.template),  # read off the input: reported apart
        "text_template": prep.template,  # pipeline.catalog.text: Triton builds product texts with it
        "encoder": inputs.encoder.name,
        "encoder_source": inputs.encoder.path,
        "encoder_prefix": inputs.encoder.prefix,
        "dataset_digest": prep.dataset_digest,
        "test_digest": prep.test_digest,
        "split_seed": options.split_seed,
        "max_rows": options.max_rows,
        "locale": spec.locale,
        "tags_left_out": prep.dropped,
        "reviewer_labels": inputs.reviewer_labels,
        "train_options": asdict(options),
        "device": str(fitted.device),
        "bf16": fitted.bf16,
        "samples_per_s": samples_per_s,
    }


def _exclusive_mask(lm: LabelMap) -> list[bool]:
    out = [False] * len(lm)
    for f in lm.facets:
        for i in range(f.start, f.end):
            out[i] = f.exclusive
    return out


def _remove_checkpoint(ckpt_dir: Path) -> None:
    for p in ckpt_dir.glob("*"):
        p.unlink()
    ckpt_dir.rmdir()

"""Fine-tune an encoder into a tagger, evaluate it against a TF-IDF baseline, write the bundle, log to MLflow.

``train(source, spec, settings, options)`` reads the steps top to bottom:
data (split by title, label map) -> model -> fit (resumable) -> TF-IDF baseline on the training split, fused
into the tagger per facet with weights chosen on validation (``options.hybrid``, :mod:`pipeline.hybrid`) ->
thresholds on validation -> test metrics for the tagger as served, the encoder alone and the baseline ->
bundle, plots, model card -> MLflow.

The fit loop itself (optimizer, schedule, batches, precision, checkpoints, resume) is :mod:`pipeline.loop`.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pipeline.labels import LabelMap
from pipeline.loop import calibrate_thresholds, encoder_test_scores, fit, pick_device, tokenize_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    encoder: str | None = None  # HF encoder path or name; None: settings.encoder, else packaged MiniLM
    max_length: int = 48  # tokens; Myntra titles are ~10-20 tokens
    batch_size: int = 32
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # encoder
    head_lr: float = 2e-3  # the freshly initialised head learns faster
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    epochs: int = 5  # early stopping may end sooner; on all of Myntra val F1 still rose at epoch 5
    max_steps: int | None = None  # optimizer steps cap (the schedule decays over it)
    max_rows: int | None = None  # sample the catalog first (demo slices); the test split shrinks with it
    max_train_rows: int | None = None  # cap only the training split (val/test stay whole)
    patience: int = 2  # evaluations without a better val micro-F1 before stopping
    eval_every: int | None = None  # optimizer steps between validations; None: once per epoch
    min_tag_count: int = 5  # tags with fewer training examples are left out of the head
    dropout: float = 0.1
    seed: int = 13
    split_seed: int = 0
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs where a probe finds it faster, else fp32 | bf16 | fp32
    device: str = "auto"  # auto | cpu | cuda
    checkpoint_every: int = 200  # optimizer steps
    resume: bool = True
    baseline: bool = True
    hybrid: bool = True  # fuse the TF-IDF baseline into the served scores (pipeline.hybrid); needs baseline
    progress: bool = True
    stop_after_steps: int | None = None  # simulate an interruption (checkpoint, then TrainingError)

    def key_fields(self) -> dict:
        """Options that define the run (a checkpoint is resumed only when these match)."""
        skip = {"resume", "progress", "stop_after_steps", "baseline", "hybrid", "checkpoint_every"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    bundle_path: str
    metrics: dict
    dataset_digest: str
    test_digest: str
    device: str
    samples_per_s: float


def prepare_data(frame, spec, options: TrainOptions):
    """Splits, label map and texts exactly as ``train`` builds them (benchmarks re-derive the same test split)."""
    from pipeline.dataset import prepare

    return prepare(
        frame,
        spec,
        min_tag_count=options.min_tag_count,
        split_seed=options.split_seed,
        max_rows=options.max_rows,
        max_train_rows=options.max_train_rows,
        sample_seed=options.seed,
    )


def train(source, spec, settings, options: TrainOptions | None = None) -> TrainResult:
    """Train a tagger on ``source`` (catalog path or snapshot id) read through ``spec``; see the module doc.

    Raises:
        TrainingError: too little data (an empty split, no tag with enough examples) or an interrupted run.
    """
    import hashlib

    import mlflow

    from pipeline.bundle import new_model
    from pipeline.dataset import load_source
    from pipeline.spec import DatasetSpec, load_spec
    from pipeline.tracking import configure

    options = options or TrainOptions()
    spec_obj = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    # 1. data
    frame, source_uri = load_source(source, spec_obj, settings)
    prep = prepare_data(frame, spec_obj, options)
    # 2. model
    encoder = options.encoder or settings.encoder
    torch.manual_seed(options.seed)
    model, tokenizer = new_model(encoder, prep.label_map, options.dropout)
    data = tokenize_splits(prep, tokenizer, options.max_length)
    device, bf16 = pick_device(options)
    # 3. fit, resumable: the checkpoint folder is keyed by data + options
    key_src = json.dumps([prep.dataset_digest, spec_obj.name, encoder, options.key_fields()], sort_keys=True)
    ckpt_dir = settings.home_dir / "checkpoints" / hashlib.sha256(key_src.encode()).hexdigest()[:16]
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
            _log_start(mlflow, prep, spec_obj, source_uri, options, device, bf16, encoder, settings)
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
        # 4-6. thresholds, test metrics vs baseline, bundle, plots, card, artifacts
        result = finish_run(
            run_id=run_id,
            model=model,
            tokenizer=tokenizer,
            prep=prep,
            data=data,
            state=state,
            options=options,
            settings=settings,
            spec=spec_obj,
            source_uri=source_uri,
            encoder=encoder,
            device=device,
            bf16=bf16,
        )
    _remove_checkpoint(ckpt_dir)
    return result


TEST_SPLIT_FILE = "test_split.jsonl"


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


def _log_start(mlflow, prep, spec, source_uri, options, device, bf16, encoder, settings) -> None:
    from pipeline.bundle import default_encoder_path

    sizes = prep.frame["split"].value_counts().to_dict()
    params = {
        **asdict(options),
        "encoder": encoder or default_encoder_path(),
        "spec": spec.name,
        "source": source_uri,
        "device": str(device),
        "bf16": bf16,
        "n_tags": len(prep.label_map),
        "n_tags_left_out": len(prep.dropped),
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


def finish_run(
    *, run_id, model, tokenizer, prep, data, state, options, settings, spec, source_uri, encoder, device, bf16
) -> TrainResult:
    """Thresholds on validation, test metrics for tagger and baseline, bundle + plots + card, MLflow artifacts.

    With ``options.hybrid`` the baseline also becomes the bundle's TF-IDF half (fusion fitted on validation,
    :mod:`pipeline.hybrid`); ``metrics["model"]`` is then the fused tagger as served, ``metrics["encoder"]``
    the fine-tuned encoder alone.
    """
    import mlflow

    from pipeline import model_card, plots
    from pipeline.baseline import fit_baseline
    from pipeline.bundle import default_encoder_path, save_bundle
    from pipeline.evaluate import score, tag_metrics
    from pipeline.hybrid import fuse_and_decide

    lm = prep.label_map
    y_val, y_test = data["val"][1], data["test"][1]
    val_texts, test_texts = prep.part("val")["text"].tolist(), prep.part("test")["text"].tolist()
    val_logits, test_logits, thresholds, scores, pred = encoder_test_scores(
        model, data, lm, tokenizer.pad_token_id, device, bf16
    )
    metrics, tfidf = {"model": tag_metrics(y_test, pred, scores, lm)}, None
    curves = {"tagger": scores}
    if options.baseline:
        base = fit_baseline(prep.part("train")["text"].tolist(), data["train"][1], lm, seed=options.seed)
        b_thr = np.where(_exclusive_mask(lm), 0.0, 0.5).astype(np.float32)
        b_scores, b_pred = score(base.logits(test_texts), lm, b_thr)
        metrics["baseline"] = tag_metrics(y_test, b_pred, b_scores, lm)
        if options.hybrid:
            metrics["encoder"], curves = metrics["model"], {"encoder only": scores}
            tfidf, thresholds, scores, pred = fuse_and_decide(
                base, (val_texts, val_logits, y_val), (test_texts, test_logits), calibrate_thresholds
            )
            metrics["model"] = tag_metrics(y_test, pred, scores, lm)
            metrics["hybrid"] = {"temperatures": tfidf.temperatures, "weights": tfidf.weights}
            curves["tagger (hybrid)"] = scores
        curves["TF-IDF baseline"] = b_scores
    metrics.update(
        test_digest=prep.test_digest,
        dataset_digest=prep.dataset_digest,
        n_test=len(y_test),
        n_train=len(data["train"][1]),
        n_val=len(data["val"][1]),
    )
    samples_per_s = state.samples / max(state.seconds, 1e-9)
    meta = {
        "run_id": run_id,
        "spec": spec.name,
        "source": source_uri,
        "max_length": options.max_length,
        "text_fields": prep.fields,
        "text_template": "parts joined with ' | ' (pipeline.dataset.build_text)",
        "encoder_source": encoder or default_encoder_path(),
        "dataset_digest": prep.dataset_digest,
        "test_digest": prep.test_digest,
        "split_seed": options.split_seed,
        "max_rows": options.max_rows,
        "locale": spec.locale,
        "tags_left_out": prep.dropped,
        "train_options": asdict(options),
        "device": str(device),
        "bf16": bf16,
        "samples_per_s": samples_per_s,
    }
    bundle = save_bundle(settings.bundles_dir / run_id, model.cpu(), tokenizer, lm, thresholds, meta, tfidf)
    (bundle / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False))
    write_test_split(bundle, prep)
    (bundle / "settings.json").write_text(json.dumps(settings.resolved(), indent=1, default=str))
    card = model_card.render(
        meta=meta, metrics=metrics, dropped=prep.dropped, history=state.history, options=asdict(options)
    )
    (bundle / "model_card.md").write_text(card, encoding="utf-8")
    pdir = bundle / "plots"
    pdir.mkdir(exist_ok=True)
    plots.facet_f1_bars(metrics["model"], metrics.get("baseline"), pdir / "facet_f1.png")
    plots.pr_curves(y_test, curves, pdir / "precision_recall.png")
    plots.confusion(y_test, pred, lm, pdir / "confusion_category.png")
    result = TrainResult(
        run_id,
        str(bundle),
        metrics,
        prep.dataset_digest,
        prep.test_digest,
        f"{device}{' bf16' if bf16 else ''}",
        samples_per_s,
    )
    (bundle / "train_result.json").write_text(json.dumps(asdict(result) | {"metrics": "metrics.json"}, indent=1))
    flat = {f"test_{k}": metrics["model"][k] for k in ("micro_f1", "macro_f1", "precision_at_1", "ece")}
    for other in ("baseline", "encoder"):
        if other in metrics:
            flat |= {f"{other}_test_{k}": metrics[other][k] for k in ("micro_f1", "macro_f1", "precision_at_1")}
    blocks = (("test", metrics["model"]), ("baseline_test", metrics.get("baseline")))
    for name, block in blocks + (("encoder_test", metrics.get("encoder")),):
        for f, e in (block or {}).get("facets", {}).items():
            flat[f"{name}_{f}_{'accuracy' if e['exclusive'] else 'micro_f1'}"] = e.get("accuracy", e["micro_f1"])
    mlflow.log_metrics(flat | {"train_samples_per_s": samples_per_s, "best_val_micro_f1": state.best_f1})
    mlflow.log_artifacts(str(bundle), artifact_path="bundle")
    mlflow.log_artifacts(str(pdir), artifact_path="plots")
    mlflow.log_artifact(str(bundle / "model_card.md"))
    mlflow.log_artifact(str(bundle / "metrics.json"))
    log.info(
        "test micro-F1 %.4f (baseline %s); bundle %s",
        metrics["model"]["micro_f1"],
        f"{metrics['baseline']['micro_f1']:.4f}" if "baseline" in metrics else "skipped",
        bundle,
    )
    return result


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

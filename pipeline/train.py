"""Fine-tune an encoder into a tagger, evaluate it against a TF-IDF baseline, write the bundle, log to MLflow.

``train(source, spec, settings, options)`` reads the steps top to bottom:
data (split by title, label map) -> model -> fit (resumable) -> TF-IDF baseline on the training split, fused
into the tagger per facet with weights chosen on validation (``options.hybrid``, :mod:`pipeline.hybrid`) ->
thresholds on validation -> test metrics for the tagger as served, the encoder alone and the baseline ->
bundle, plots, model card -> MLflow.

The fit loop: AdamW (no decay on biases/LayerNorm, a larger learning rate for the fresh head), linear warm-up
then linear decay, length-grouped batches with dynamic padding, gradient accumulation, bf16 autocast (CUDA, or a
CPU where bf16 matmuls measure faster), early stopping on validation micro-F1, a checkpoint every N steps and at
each epoch end. Batch order is a pure function of (seed, epoch) and the RNG state is checkpointed, so a resumed run ends
where an uninterrupted one would.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.dataset import SPLITS, collate, length_grouped_batches, tokenize
from pipeline.errors import TrainingError
from pipeline.labels import LabelMap

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


@dataclass
class FitState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_pos: int = 0  # micro-batches done in the current epoch
    best_f1: float = -1.0
    best_step: int = 0
    bad_evals: int = 0
    last_eval_step: int = -1
    done: bool = False
    samples: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)  # wall time of each optimizer step (data + compute)


def pick_device(options: TrainOptions) -> tuple[torch.device, bool]:
    """(device, bf16 autocast?) — CUDA when present, else CPU; bf16 unless fp32 is asked or unsupported."""
    name = options.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if options.precision == "fp32":
        return dev, False
    ok = torch.cuda.is_bf16_supported() if dev.type == "cuda" else (options.precision == "bf16" or _cpu_bf16())
    if not ok:
        log.info("bf16 autocast is not supported or not faster on %s: training in fp32", dev)
    return dev, ok


def native_cpu_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def _cpu_bf16() -> bool:
    """Whether bf16 autocast pays on this CPU, by measuring it: a training-shaped matmul ([256, 384] x
    [384, 1536], MiniLM's FFN) in bf16 must take at most 0.7x the fp32 time. CPUs with native bf16 kernels are far
    below that (AMD EPYC with AVX512-BF16: bf16 matmul 0.35-0.4x the fp32 time, training steps 1.55x faster;
    Sapphire Rapids with AMX: steps 1.43x faster); where bf16 is emulated it is several times slower, so the
    choice does not flip on timing noise.
    bf16 and fp32 reached the same test micro-F1 on a 3k-row slice (bench/bench_train_speed.py --accuracy-rows).
    One session's EPYC ran bf16 steps at 0.5-0.8x fp32 on an older torch; the probe covers such a CPU too."""
    if not native_cpu_bf16():
        return False
    gen = torch.Generator().manual_seed(0)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(256, 384, generator=gen).to(dtype)
        b = torch.randn(384, 1536, generator=gen).to(dtype)
        for _ in range(3):  # warm-up: kernel selection, caches
            a @ b
        t0 = time.perf_counter()
        for _ in range(8):
            a @ b
        seconds[dtype] = time.perf_counter() - t0
    ratio = seconds[torch.bfloat16] / seconds[torch.float32]
    log.info("CPU bf16 matmul probe: bf16 takes %.2fx the fp32 time", ratio)
    return ratio <= 0.7


def pad_multiple(device: torch.device) -> int:
    """Batch widths are rounded up to this many tokens. On CUDA 8 (tensor-core tiles, few cuBLAS shapes); on the
    CPU 1: Myntra titles are ~10 tokens, so rounding a length-grouped batch up to 16 computed a third more tokens
    than needed, and a bf16 step ran ~12% faster unrounded (oneDNN's per-shape kernels are cached after the first
    batch of each width, at most ``max_length`` of them)."""
    return 8 if device.type == "cuda" else 1


def tag_loss(logits: torch.Tensor, y: torch.Tensor, label_map: LabelMap) -> torch.Tensor:
    """Mean over the batch of: cross-entropy per exclusive facet (rows with a label) + BCE summed over
    multi-valued tags. logits [B, N] float, y [B, N] float 0/1.

    Rows without a label in an exclusive facet are ignored through ``ignore_index``, not by boolean indexing: a
    mask index (``block[has]``) or ``has.any()`` makes the host wait for the GPU, twice per facet and step. (On the
    H200 a step took ~27-38 ms at batch 32, 256 and 1024 alike, which such waits would explain; the change came
    after that device run and is not measured there. The loss is the same to the last bit on the CPU.)"""
    total = logits.new_zeros(())
    for f in label_map.facets:
        block, t = logits[:, f.start : f.end], y[:, f.start : f.end]
        if f.exclusive:
            target = torch.where(t.sum(1) > 0, t.argmax(1), -100)  # -100: no label in this facet
            total = total + F.cross_entropy(block, target, ignore_index=-100, reduction="sum")
        else:
            total = total + F.binary_cross_entropy_with_logits(block, t, reduction="sum")
    return total / logits.shape[0]


def _optimizer(model, options: TrainOptions) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.encoder.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [
        {"params": decay, "lr": options.lr, "weight_decay": options.weight_decay},
        {"params": no_decay, "lr": options.lr, "weight_decay": 0.0},
        {"params": list(model.head.parameters()), "lr": options.head_lr, "weight_decay": 0.0},
    ]
    try:  # the fused kernel (CPU and CUDA) does the whole update in one pass over the parameters
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError):
        log.info("fused AdamW is not available here: using the default implementation")
        return torch.optim.AdamW(groups)


def _schedule(opt, total: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )


@torch.inference_mode()
def predict_logits(model, ids: list[list[int]], pad_id: int, device, bf16: bool, batch_size: int = 128) -> np.ndarray:
    """[B, N] float32 logits; batches sorted by length so little padding is computed."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), model.head.out_features), dtype=np.float32)
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        input_ids, mask = collate([ids[i] for i in idx], pad_id, pad_multiple(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids.to(device), mask.to(device))
        out[idx] = logits.float().cpu().numpy()
    return out


def calibrate_thresholds(probs: np.ndarray, y: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Per-tag thresholds: 0 inside exclusive facets (always the best value); for multi-valued tags the
    threshold that maximises that tag's F1 on validation (0.5 when it has no validation positives)."""
    thr = np.zeros(len(label_map), dtype=np.float32)
    grid = np.linspace(0.05, 0.95, 19)
    for f in label_map.facets:
        if f.exclusive:
            continue
        for j in range(f.start, f.end):
            pos = y[:, j]
            if not pos.any():
                thr[j] = 0.5
                continue
            pred = probs[:, j][None, :] >= grid[:, None]  # [G, B]
            tp = (pred & pos).sum(1)
            f1 = 2 * tp / np.maximum(pred.sum(1) + pos.sum(), 1)
            thr[j] = grid[int(np.argmax(f1))]
    return thr


# ---- the resumable fit loop ------------------------------------------------------------------------------------
def _save_checkpoint(path: Path, model, opt, sched, state: FitState, best: dict | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    blob = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": torch.get_rng_state(),
        "state": asdict(state),
        "best": best,
    }
    tmp = path / "checkpoint.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(path / "checkpoint.pt")  # atomic: a crash mid-write keeps the previous checkpoint


def fit(
    model,
    data: dict[str, tuple[list[list[int]], np.ndarray]],
    label_map: LabelMap,
    options: TrainOptions,
    *,
    pad_id: int,
    device: torch.device,
    bf16: bool,
    checkpoint_dir: Path,
    on_eval=None,
) -> FitState:
    """Train ``model`` in place on data["train"], validating on data["val"]; leaves the best weights loaded."""
    from tqdm.auto import tqdm

    from pipeline.evaluate import micro_f1, score

    train_ids, y_train = data["train"]
    val_ids, y_val = data["val"]
    lengths = [len(x) for x in train_ids]
    n_batches = math.ceil(len(train_ids) / options.batch_size)
    steps_per_epoch = math.ceil(n_batches / options.grad_accum)
    total = options.epochs * steps_per_epoch
    total = min(total, options.max_steps) if options.max_steps else total
    model.to(device)
    opt = _optimizer(model, options)
    sched = _schedule(opt, total, options.warmup_ratio)
    state, best = FitState(), None
    ckpt = checkpoint_dir / "checkpoint.pt"
    if options.resume and ckpt.exists():
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["rng"])
        state, best = FitState(**blob["state"]), blob["best"]
        log.info("resumed from %s at step %d/%d (epoch %d)", ckpt, state.step, total, state.epoch)
    y_train_t = torch.from_numpy(y_train.astype(np.float32))
    multiple = pad_multiple(device)

    def validate() -> None:
        probs, pred = score(
            predict_logits(model, val_ids, pad_id, device, bf16), label_map, np.full(len(label_map), 0.5)
        )
        f1 = micro_f1(y_val, pred)
        nonlocal best
        if f1 > state.best_f1:
            state.best_f1, state.best_step, state.bad_evals = f1, state.step, 0
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.bad_evals += 1
        loss = float(torch.stack(run_loss).mean()) if run_loss else float("nan")
        entry = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": loss,
            "val_micro_f1": f1,
            "lr": sched.get_last_lr()[0],
            "samples_per_s": state.samples / max(state.seconds, 1e-9),
        }
        state.history.append(entry)
        state.last_eval_step = state.step
        run_loss.clear()
        log.info(
            "epoch %d step %d: train loss %.4f, val micro-F1 %.4f, %.1f samples/s",
            state.epoch,
            state.step,
            loss,
            f1,
            entry["samples_per_s"],
        )
        if on_eval:
            on_eval(entry)
        model.train()

    run_loss: list[torch.Tensor] = []
    bar = tqdm(total=total, initial=state.step, unit="step", disable=not options.progress, desc="train")
    model.train()
    while not state.done:
        batches = length_grouped_batches(lengths, options.batch_size, options.seed, state.epoch)
        for pos in range(state.batch_pos, len(batches), options.grad_accum):
            t0 = time.perf_counter()
            group = batches[pos : pos + options.grad_accum]
            n = sum(len(b) for b in group)
            step_loss = torch.zeros((), device=device)  # stays on the device: no sync per step (CUDA runs ahead)
            for b in group:
                input_ids, mask = collate([train_ids[i] for i in b], pad_id, multiple)  # [b, T]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = model(input_ids.to(device), mask.to(device))  # [b, N]
                loss = tag_loss(logits.float(), y_train_t[b].to(device), label_map) * (len(b) / n)
                loss.backward()
                step_loss += loss.detach()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step, state.batch_pos = state.step + 1, pos + len(group)
            state.samples += n
            state.step_seconds.append(time.perf_counter() - t0)
            state.seconds += state.step_seconds[-1]
            run_loss.append(step_loss)
            bar.update(1)
            if not bar.disable:
                bar.set_postfix(loss=f"{float(step_loss):.3f}", samples_s=f"{state.samples / state.seconds:.0f}")
            elif state.step % max(1, total // 10) == 0:  # no bar (logs, Airflow): 10 lines a run
                log.info(
                    "step %d/%d, loss %.4f, %.1f samples/s",
                    state.step,
                    total,
                    float(step_loss),
                    state.samples / state.seconds,
                )
            if options.eval_every and state.step % options.eval_every == 0:
                validate()
            if state.bad_evals >= options.patience or state.step >= total:
                break
            if state.step % options.checkpoint_every == 0:
                _save_checkpoint(checkpoint_dir, model, opt, sched, state, best)
            if options.stop_after_steps and state.step >= options.stop_after_steps:
                _save_checkpoint(checkpoint_dir, model, opt, sched, state, best)
                bar.close()
                raise TrainingError(
                    f"training interrupted after step {state.step} (stop_after_steps); "
                    f"run again with resume to continue from {ckpt}"
                )
        else:  # the epoch ran to its end
            state.epoch, state.batch_pos = state.epoch + 1, 0
            if not options.eval_every:
                validate()
        if state.batch_pos >= len(batches):  # stopped on the epoch's last batch: that epoch is complete
            state.epoch, state.batch_pos = state.epoch + 1, 0
        if state.last_eval_step != state.step:
            validate()
        state.done = state.bad_evals >= options.patience or state.step >= total or state.epoch >= options.epochs
        _save_checkpoint(checkpoint_dir, model, opt, sched, state, best)
    bar.close()
    if best is not None:
        model.load_state_dict(best)
    log.info("fit done: %d steps, best val micro-F1 %.4f at step %d", state.step, state.best_f1, state.best_step)
    return state


def tokenize_splits(prep, tokenizer, max_length: int) -> dict[str, tuple[list[list[int]], np.ndarray]]:
    return {s: (tokenize(prep.part(s)["text"].tolist(), tokenizer, max_length), prep.y(s)) for s in SPLITS}


# ---- the entry point ---------------------------------------------------------------------------------------------
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
    ds = mlflow.data.from_pandas(
        df, source=_resolvable(source_uri, settings), name=f"{spec.name}-catalog", digest=prep.dataset_digest[:32]
    )
    mlflow.log_input(ds, context="training")


def encoder_test_scores(model, data, label_map: LabelMap, pad_id: int, device, bf16: bool):
    """The encoder alone on the frozen test split: (val logits, test logits, thresholds calibrated on validation,
    test scores, test decisions)."""
    from pipeline.evaluate import score
    from pipeline.labels import probabilities

    val_logits = predict_logits(model, data["val"][0], pad_id, device, bf16)
    test_logits = predict_logits(model, data["test"][0], pad_id, device, bf16)
    thresholds = calibrate_thresholds(probabilities(val_logits, label_map), data["val"][1], label_map)
    return (val_logits, test_logits, thresholds, *score(test_logits, label_map, thresholds))


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

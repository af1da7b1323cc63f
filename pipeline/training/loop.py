"""The fit loop: a tagger model trained in place on tokenised splits, resumable, on CPU or CUDA.

AdamW (no decay on biases/LayerNorm, a larger learning rate for the fresh head), linear warm-up then linear
decay, length-grouped batches with dynamic padding, gradient accumulation, bf16 autocast (CUDA, or a CPU where
bf16 matmuls measure faster), early stopping on validation micro-F1, a checkpoint every N steps and at each epoch
end. Batch order is a pure function of (seed, epoch) and the RNG state is checkpointed, so a resumed run ends
where an uninterrupted one would. Also here: logits for id lists, thresholds calibrated on validation, and the
encoder-alone test scores that training and the benchmarks share.

Imports only torch, numpy, :mod:`pipeline.training.dataset` and :mod:`pipeline.metrics` (a GPU machine lent by the
device tool has no database or MLflow stack); :mod:`pipeline.training.train` is the entry point that uses it.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from pipeline.errors import TrainingError
from pipeline.metrics import best_thresholds, micro_f1
from pipeline.training.dataset import SPLITS, collate, length_grouped_batches, tokenize
from pipeline.training.labels import LabelMap, probabilities, score
from pipeline.training.options import TrainOptions

log = logging.getLogger(__name__)
THRESHOLD_GRID = np.linspace(0.05, 0.95, 19)  # candidate thresholds of multi-valued tags


@dataclass
class FitState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_pos: int = 0  # micro-batches done in the current epoch
    best_f1: float = -1.0
    best_val_loss: float = float("inf")  # breaks ties of val micro-F1 (a catalog of rare tags sits at 0 at first)
    best_step: int = 0
    bad_evals: int = 0
    last_eval_step: int = -1
    done: bool = False
    samples: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)  # wall time of each optimizer step (data + compute)


def improves(state: FitState, f1: float, val_loss: float) -> bool:
    """Does a validation beat the best so far: a higher micro-F1, or the same with a lower loss? With many rare tags
    no score passes 0.5 for epochs (F1 stays 0) while the model still learns; F1 alone would early-stop such a run
    after ``patience`` validations."""
    return f1 > state.best_f1 + 1e-9 or (abs(f1 - state.best_f1) <= 1e-9 and val_loss < state.best_val_loss)


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
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0 (transformers' schedule; its
    warm-up starts at lr 0 where our earlier hand-written one started at lr / warm-up steps)."""
    return get_linear_schedule_with_warmup(
        opt, num_warmup_steps=max(1, int(total * warmup_ratio)), num_training_steps=total
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


@torch.inference_mode()
def standardize_head_input(model, ids: list[list[int]], pad_id: int, device, bf16: bool, limit: int = 2048) -> None:
    """Set the model's ``center``/``scale`` to the per-dimension mean and spread of the pretrained encoder's pooled
    features over (up to ``limit``) training texts, so the head starts on features of unit spread.

    Why: multilingual-e5 puts 92% of a pooled feature's energy in a direction every text shares (mean cosine 0.92
    between Product1M titles, against 0.58 for MiniLM) and the rest spreads half as wide, so its head learns slowly:
    on a 792-row Chinese catalog e5 alone stayed at validation micro-F1 0 for 600 steps. Dimensions that barely vary
    are not blown up: the spread is floored at a tenth of the mean spread."""
    model.eval()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ids), size=min(limit, len(ids)), replace=False) if ids else []
    chunks = []
    sample = sorted((ids[i] for i in pick), key=len)
    for k in range(0, len(sample), 128):
        input_ids, mask = collate(sample[k : k + 128], pad_id, pad_multiple(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            chunks.append(model.pooled(input_ids.to(device), mask.to(device)).float())
    if not chunks:
        return
    pooled = torch.cat(chunks)
    spread = pooled.std(0) if len(pooled) > 1 else torch.ones_like(pooled[0])
    model.center.copy_(pooled.mean(0))
    model.scale.copy_(spread.clamp(min=0.1 * float(spread.mean())))


def calibrate_thresholds(probs: np.ndarray, y: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Per-tag thresholds: 0 inside exclusive facets (always the best value); for multi-valued tags the
    threshold that maximises that tag's F1 on validation (0.5 when it has no validation positives)."""
    thr = np.zeros(len(label_map), dtype=np.float32)
    multi = [j for f in label_map.facets if not f.exclusive for j in range(f.start, f.end)]
    for j, t in best_thresholds(probs, y, multi, THRESHOLD_GRID).items():
        thr[j] = t
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

    train_ids, y_train = data["train"]
    val_ids, y_val = data["val"]
    lengths = [len(x) for x in train_ids]
    n_batches = math.ceil(len(train_ids) / options.batch_size)
    steps_per_epoch = math.ceil(n_batches / options.grad_accum)
    # a small catalog gets more epochs until min_steps optimizer steps (few steps teach a fine facet nothing)
    epochs = max(options.epochs, math.ceil(options.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
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
    if options.standardize and state.step == 0:
        standardize_head_input(model, train_ids, pad_id, device, bf16)
    y_train_t = torch.from_numpy(y_train.astype(np.float32))
    y_val_t = torch.from_numpy(y_val.astype(np.float32))
    multiple = pad_multiple(device)

    def validate() -> None:
        val_logits = predict_logits(model, val_ids, pad_id, device, bf16)
        probs, pred = score(val_logits, label_map, np.full(len(label_map), 0.5))
        f1 = micro_f1(y_val, pred)
        val_loss = float(tag_loss(torch.from_numpy(val_logits), y_val_t, label_map))
        nonlocal best
        if improves(state, f1, val_loss):
            state.best_f1, state.best_val_loss, state.best_step, state.bad_evals = f1, val_loss, state.step, 0
            best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.bad_evals += 1
        loss = float(torch.stack(run_loss).mean()) if run_loss else float("nan")
        entry = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": loss,
            "val_micro_f1": f1,
            "val_loss": val_loss,
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
        state.done = state.bad_evals >= options.patience or state.step >= total or state.epoch >= epochs
        _save_checkpoint(checkpoint_dir, model, opt, sched, state, best)
    bar.close()
    if best is not None:
        model.load_state_dict(best)
    log.info("fit done: %d steps, best val micro-F1 %.4f at step %d", state.step, state.best_f1, state.best_step)
    return state


def tokenize_splits(prep, tokenizer, max_length: int) -> dict[str, tuple[list[list[int]], np.ndarray]]:
    return {s: (tokenize(prep.part(s)["text"].tolist(), tokenizer, max_length), prep.y(s)) for s in SPLITS}


# ---- the entry point ---------------------------------------------------------------------------------------------
def decide_with_val_thresholds(val_logits: np.ndarray, y_val: np.ndarray, test_logits: np.ndarray, label_map):
    """Thresholds calibrated on validation, then (thresholds, test scores, test decisions) for the encoder alone."""

    thresholds = calibrate_thresholds(probabilities(val_logits, label_map), y_val, label_map)
    return (thresholds, *score(test_logits, label_map, thresholds))


def encoder_test_scores(model, data, label_map: LabelMap, pad_id: int, device, bf16: bool):
    """The encoder alone on the frozen test split: (val logits, test logits, thresholds calibrated on validation,
    test scores, test decisions)."""
    val_logits = predict_logits(model, data["val"][0], pad_id, device, bf16)
    test_logits = predict_logits(model, data["test"][0], pad_id, device, bf16)
    return (val_logits, test_logits, *decide_with_val_thresholds(val_logits, data["val"][1], test_logits, label_map))

"""Quality on the frozen test split: the tagger as served vs TF-IDF + linear SVM baseline, with bootstrap CIs.

The tagger is the hybrid bundle (fine-tuned encoder fused per facet with the TF-IDF model, weights chosen on
validation); the encoder alone is reported beside it so the fusion's share is visible.

Trains through the real entry point (``pipeline.training.train.train``, MLflow included) on the Myntra catalog (or any
spec), then re-scores the bundle and a baseline refitted on the *same* training rows on the whole frozen test
split, and bootstraps (paired, 1000 resamples of test rows) micro-F1 and each exclusive facet's accuracy.

Targets (issue 4, Myntra): the tagger cuts the baseline's micro-F1 error by >= 20%, and is no worse than the
baseline by more than 0.3 points on any exclusive facet.
Run: .venv/bin/python bench/bench_quality.py --spec myntra --max-train-rows 12000 --epochs 3

``--from-logits FILE`` takes the encoder from a GPU run instead of training here (``bench/bench_gpu.py`` leaves
``logits_NAME.npz``: validation and test logits, the options, the test digest): the same splits are rebuilt from
the catalog and checked against that digest and label set, the baseline is fitted here on the same training
rows, and the fusion is fitted on validation exactly as training does (``pipeline.training.hybrid.fuse_and_decide``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, save


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--source", default=None)
    ap.add_argument("--max-train-rows", type=int, default=None)
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="default: TrainOptions' (or the encoder's own)")
    ap.add_argument("--lr", type=float, default=None, help="encoder learning rate (default: TrainOptions' / encoder's)")
    ap.add_argument("--min-steps", type=int, default=None, help="floor of optimizer steps (default: TrainOptions')")
    ap.add_argument("--encoder", default=None, help="minilm-l6, e5-small or a folder (default: by the spec's locale)")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--from-logits", type=Path, default=None, help="logits_NAME.npz from bench/bench_gpu.py")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    from pipeline.cli import setup_logging

    setup_logging()
    prep, preds, meta, base = from_logits(args) if args.from_logits else (*from_training(args), None)
    report(args, prep, preds, meta, base)


def from_training(args):
    """Train through the real entry point, then re-score the bundle as served and the encoder alone."""
    import atexit

    import torch
    from common import drop_database, scratch_settings

    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.training.bundle import load_bundle
    from pipeline.training.dataset import load_source, prepare_data
    from pipeline.training.labels import decide
    from pipeline.training.loop import decide_with_val_thresholds
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    torch.set_num_threads(os.cpu_count() or 1)
    settings = scratch_settings(f"bench_quality_{load_spec(args.spec).name}")  # a spec may be a YAML path
    for url in (settings.database_url, settings.mlflow_tracking_uri):  # scratch databases go when the bench ends
        atexit.register(drop_database, url)
    source = args.source or default_source(args.spec, settings.data_dir)
    opts = TrainOptions(
        **({"epochs": args.epochs} if args.epochs else {}),
        **({"lr": args.lr} if getattr(args, "lr", None) else {}),
        **({"min_steps": args.min_steps} if getattr(args, "min_steps", None) is not None else {}),
        encoder=args.encoder,
        max_train_rows=args.max_train_rows,
        max_rows=args.max_rows,
        max_length=args.max_length,
        precision=args.precision,
        progress=sys.stderr.isatty(),
    )
    t0 = time.perf_counter()
    result = train(source, args.spec, settings, opts)
    train_s = time.perf_counter() - t0
    spec = load_spec(args.spec)
    frame, _ = load_source(source, spec, settings)
    bundle = load_bundle(result.bundle_path)
    opts = TrainOptions(**{**bundle.meta["train_options"], "progress": False})  # as trained (encoder defaults)
    prep = prepare_data(frame, spec, opts)
    assert prep.test_digest == result.test_digest
    lm, test = bundle.label_map, prep.part("test")
    preds = {"tagger": decide(bundle.scores(test["text"].tolist()), lm, bundle.thresholds)}  # as served (hybrid)
    if bundle.tfidf is not None:  # the encoder alone, thresholds calibrated on validation as training does
        val_logits, test_logits = (bundle.logits(prep.part(s)["text"].tolist()) for s in ("val", "test"))
        *_, preds["encoder alone"] = decide_with_val_thresholds(val_logits, prep.y("val"), test_logits, lm)
    device = result.device + ("" if torch.cuda.is_available() else " (no GPU on this machine)")
    meta = {"source": source, "run_id": result.run_id, "bundle": result.bundle_path, "device": device,
            "encoder": bundle.meta.get("encoder"), "epochs": opts.epochs, "train_wall_s": train_s,
            "train_samples_per_s": result.samples_per_s}  # fmt: skip
    return prep, preds, meta


def from_logits(args):
    """The encoder's logits from a GPU run (bench_gpu.py), fused with a baseline fitted here on the same rows."""
    import json

    from pipeline.catalog.readers import read_catalog
    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.errors import TrainingError
    from pipeline.settings import Settings
    from pipeline.training.baseline import fit_baseline
    from pipeline.training.dataset import prepare_data
    from pipeline.training.hybrid import fuse_and_decide
    from pipeline.training.loop import calibrate_thresholds, decide_with_val_thresholds
    from pipeline.training.options import TrainOptions

    blob = np.load(args.from_logits)
    options = json.loads(str(blob["options"]))
    opts = TrainOptions(**options)
    spec = load_spec(args.spec)
    source = args.source or default_source(args.spec, Settings().data_dir)
    prep = prepare_data(read_catalog(source, spec).frame, spec, opts)
    lm = prep.label_map
    if prep.test_digest != str(blob["test_digest"]) or tuple(blob["slugs"]) != lm.slugs:
        raise TrainingError(
            f"{args.from_logits} was not made from these splits: its test digest {str(blob['test_digest'])[:12]} "
            f"and {len(blob['slugs'])} tags, here {prep.test_digest[:12]} and {len(lm)} tags (catalog {source})"
        )
    val_logits, test_logits = blob["val"].astype(np.float32), blob["test"].astype(np.float32)
    *_, encoder_alone = decide_with_val_thresholds(val_logits, prep.y("val"), test_logits, lm)
    base = fit_baseline(prep.part("train")["text"].tolist(), prep.y("train"), lm, seed=opts.seed)
    val = (prep.part("val")["text"].tolist(), val_logits, prep.y("val"))
    *_, hybrid = fuse_and_decide(base, val, (prep.part("test")["text"].tolist(), test_logits), calibrate_thresholds)
    gpu = json.loads((args.from_logits.parent / "bench_gpu.json").read_text())
    run = gpu.get(args.from_logits.stem.removeprefix("logits_"), {})
    meta = {
        "source": source,
        "logits": str(args.from_logits),
        "device": f"{gpu.get('device')} ({gpu.get('precision')})",
        "epochs": opts.epochs,
        "train_wall_s": run.get("fit_wall_s", float("nan")),
        "train_samples_per_s": run.get("samples_per_s"),
        "options": options,
    }
    return prep, {"tagger": hybrid, "encoder alone": encoder_alone}, meta, base


def report(args, prep, preds: dict, meta: dict, base=None) -> dict:
    """The baseline (``base``, else refitted on the same training rows) beside ``preds``; paired bootstrap CIs;
    JSON + Markdown table in bench/results."""
    from pipeline.metrics import bootstrap_ci, facet_score, micro_f1
    from pipeline.training.baseline import fit_baseline
    from pipeline.training.labels import score
    from pipeline.training.train import _exclusive_mask

    lm, test, y = prep.label_map, prep.part("test"), prep.y("test")
    base = base or fit_baseline(prep.part("train")["text"].tolist(), prep.y("train"), lm)
    _, p_base = score(base.logits(test["text"].tolist()), lm, np.where(_exclusive_mask(lm), 0.0, 0.5))
    preds = {"tagger": preds["tagger"], "baseline": p_base, **{k: v for k, v in preds.items() if k != "tagger"}}
    p_model = preds["tagger"]
    cis = {"micro_f1": bootstrap_ci(y, preds, micro_f1, n=args.bootstrap)}
    for sl in lm.facets:
        name = f"{sl.name} {'accuracy' if sl.exclusive else 'micro_f1'}"
        cis[name] = bootstrap_ci(y, preds, lambda t, p, sl=sl: facet_score(t, p, sl), n=args.bootstrap)
    # error reduction with its own paired bootstrap
    rng = np.random.default_rng(1)
    red = []
    for _ in range(args.bootstrap):
        i = rng.integers(0, len(y), len(y))
        eb, em = 1 - micro_f1(y[i], p_base[i]), 1 - micro_f1(y[i], p_model[i])
        red.append((eb - em) / eb if eb > 0 else 0.0)
    eb, em = 1 - cis["micro_f1"]["baseline"][0], 1 - cis["micro_f1"]["tagger"][0]
    reduction = (eb - em) / eb if eb else 0.0
    worst = (
        min((cis[k]["tagger"][0] - cis[k]["baseline"][0], k) for k in cis if k.endswith("accuracy"))
        if any(k.endswith("accuracy") for k in cis)
        else (0.0, "-")
    )
    out = {
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "spec": args.spec,
        **meta,
        "train_rows": int((prep.frame["split"] == "train").sum()),
        "test_rows": len(test),
        "test_digest": prep.test_digest,
        "ci": {k: {n: list(v) for n, v in d.items()} for k, d in cis.items()},
        "micro_f1_error_reduction": reduction,
        "micro_f1_error_reduction_ci": [float(np.quantile(red, 0.025)), float(np.quantile(red, 0.975))],
        "worst_exclusive_facet_delta": {"facet": worst[1], "delta": worst[0]},
        "targets": {
            "error_reduction>=0.20": reduction >= 0.20,
            "no_exclusive_facet_worse_by>0.003": worst[0] >= -0.003,
        },
    }
    from pipeline.catalog.spec import load_spec

    name = f"quality_{load_spec(args.spec).name}{('_' + args.tag) if args.tag else ''}"
    save(name, out)
    lines = [
        f"# Quality: {args.spec} frozen test split ({len(test)} rows, digest {prep.test_digest[:12]})",
        "",
        f"`{out['command']}` — {out['train_rows']} training rows, {meta['epochs']} epochs, {out['device']}, "
        f"training {meta['train_wall_s'] / 60:.1f} min",
        "",
        "| metric | " + " | ".join(f"{n} [95% CI]" for n in preds) + " |",
        "|---|" + "---|" * len(preds),
    ]
    for k, d in cis.items():
        lines.append(f"| {k} | " + " | ".join(f"{d[n][0]:.4f} [{d[n][1]:.4f}, {d[n][2]:.4f}]" for n in preds) + " |")
    lo, hi = out["micro_f1_error_reduction_ci"]
    lines += [
        "",
        f"micro-F1 error reduction: {reduction:.1%} [{lo:.1%}, {hi:.1%}] (target >= 20%)",
        f"worst exclusive facet vs baseline: {worst[1]} {worst[0] * 100:+.2f} points (target >= -0.3)",
    ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()

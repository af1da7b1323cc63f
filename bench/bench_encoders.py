"""Encoders against each other on one catalog, in one run: quality as served and alone vs TF-IDF, and cost.

For each encoder (default ``minilm-l6`` then ``e5-small``) the catalog is trained through the real entry point
with that encoder's own defaults (``bench_quality.from_training``), scored on the frozen test split with paired
bootstrap intervals (``bench_quality.report``), and its cost recorded: training samples/s, wall time, the
vocabulary and bundle encoder size after trimming against the encoder as shipped. Same catalog, same splits (the
test digest is checked equal), same CPU, same precision rule.

    .venv/bin/python bench/bench_encoders.py --spec product1m
    .venv/bin/python bench/bench_encoders.py --spec myntra --max-train-rows 12000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_quality import from_training, report
from common import save


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="product1m")
    ap.add_argument("--source", default=None)
    ap.add_argument("--encoders", nargs="+", default=["minilm-l6", "e5-small"])
    ap.add_argument("--max-train-rows", type=int, default=None)
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="default: each encoder's own")
    ap.add_argument("--lr", type=float, default=None, help="default: each encoder's own")
    ap.add_argument("--min-steps", type=int, default=None, help="floor of optimizer steps (default: TrainOptions')")
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    args = ap.parse_args()
    from pipeline.cli import setup_logging
    from pipeline.settings import get_settings
    from pipeline.training import encoders

    setup_logging()
    rows, digest = {}, None
    for name in args.encoders:
        tag = f"{name}_{args.tag}" if args.tag else name
        run = argparse.Namespace(**{**vars(args), "tag": tag}, encoder=name, from_logits=None)
        prep, preds, meta = from_training(run)
        if digest is not None and prep.test_digest != digest:
            raise SystemExit(f"{name} was scored on another test split ({prep.test_digest[:12]} vs {digest[:12]})")
        digest = prep.test_digest
        out = report(run, prep, preds, meta)
        bundle_enc = Path(meta["bundle"]) / "encoder"
        shipped = Path(encoders.encoder_path(name, get_settings().home_dir))
        config = json.loads((bundle_enc / "config.json").read_text())
        rows[name] = {
            "micro_f1": {k: v[0] for k, v in out["ci"]["micro_f1"].items()},
            "micro_f1_ci": out["ci"]["micro_f1"],
            "error_cut": out["micro_f1_error_reduction"],
            "error_cut_ci": out["micro_f1_error_reduction_ci"],
            "epochs": meta["epochs"],
            "train_wall_s": meta["train_wall_s"],
            "train_samples_per_s": meta["train_samples_per_s"],
            "vocab": config["vocab_size"],
            "layers": config["num_hidden_layers"],
            "bundle_encoder_mb": _size_mb(bundle_enc),
            "shipped_encoder_mb": _size_mb(shipped),
            "device": meta["device"],
        }
    result = {"command": ".venv/bin/python " + " ".join(sys.argv), "spec": args.spec, "test_digest": digest,
              "encoders": rows}  # fmt: skip
    from pipeline.catalog.spec import load_spec

    # --spec may be a YAML path
    save(f"bench_encoders_{load_spec(args.spec).name}{('_' + args.tag) if args.tag else ''}", result)
    print(f"\n{args.spec}: frozen test split {digest[:12]}")
    print("| encoder | epochs | tagger as served | encoder alone | TF-IDF | error cut | training | samples/s | vocab | "
          "encoder MB (shipped) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ci = r["micro_f1_ci"]
        cell = {k: f"{v[0]:.4f} [{v[1]:.3f}, {v[2]:.3f}]" for k, v in ci.items()}
        lo, hi = r["error_cut_ci"]
        print(f"| {name} | {r['epochs']} | {cell['tagger']} | {cell.get('encoder alone', '-')} | {cell['baseline']} | "
              f"{r['error_cut']:.1%} [{lo:.1%}, {hi:.1%}] | {r['train_wall_s'] / 60:.1f} min | "
              f"{r['train_samples_per_s']:.0f} | {r['vocab']:,} | {r['bundle_encoder_mb']:.0f} "
              f"({r['shipped_encoder_mb']:.0f}) |")  # fmt: skip


if __name__ == "__main__":
    main()

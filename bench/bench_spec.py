"""Foreign-format catalogs end to end: spec init -> spec check -> train on a small slice -> served tagger vs TF-IDF.

Real Myntra rows are rewritten in shapes its hand-written spec cannot read (``pipeline.catalog.samples
.foreign_shapes``: a marketplace CSV with the category tree in one column, Ruby-hash specifications and no id;
nested JSON Lines; Parquet), and a Chinese marketplace file as it comes (``zh_lines``: Product1M's own line format,
``id#####title#####url#####url#####label#;#label``, no header, every k-th line of dev + test). For each shape: the
spec ``tagger spec init`` drafts (used as drafted: no hand edit), rows read = accepted + quarantined by the
validation row suite (``spec check``), then a tagger trained through the real entry point on that file, with the
training defaults (``--min-steps`` to compare the floor of optimizer steps), scored on its frozen test split:
micro-F1 of the tagger as served (hybrid), the encoder alone and the TF-IDF baseline, with 95% paired-bootstrap
intervals.

    .venv/bin/python bench/bench_spec.py --rows 1000
    .venv/bin/python bench/bench_spec.py --rows 1000 --min-steps 0 --tag nofloor
    .venv/bin/python bench/bench_spec.py --rows 1000 --shapes zh_lines --tag zh
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from common import drop_database, save, scratch_settings


def product1m_lines(dest: Path, rows: int) -> Path:
    """``rows`` lines of Product1M (dev + test, every k-th line: the files are sorted by brand), as shipped."""
    from pipeline.settings import Settings

    root = Settings().data_dir / "product1m_zh"
    lines = [ln for f in ("product1m_dev_ossurl_v2.txt", "product1m_test_ossurl_v2.txt")
             for ln in (root / f).read_text(encoding="utf-8").splitlines() if ln.strip()]  # fmt: skip
    step = max(1, len(lines) // rows)
    out = dest / "product1m_sample.txt"
    out.write_text("\n".join(lines[::step][:rows]) + "\n", encoding="utf-8")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--shapes", nargs="+", default=["csv", "jsonl", "parquet"],
                    choices=["csv", "jsonl", "parquet", "zh_lines"])  # fmt: skip
    ap.add_argument("--min-steps", type=int, default=None, help="default: TrainOptions'")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="OPTION=VALUE",
        help="other training options, e.g. encoder=minilm-l6 head_lr=0.01 (default: TrainOptions')",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    from pipeline.catalog.draft import draft_spec
    from pipeline.catalog.samples import foreign_shapes
    from pipeline.cli import setup_logging
    from pipeline.metrics import bootstrap_ci, micro_f1
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train
    from pipeline.validation.validate import preview_catalog

    setup_logging()
    types = {f.name: f.type for f in dataclasses.fields(TrainOptions)}
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            ap.error(f"--set {item}: unknown training option {key!r}")
        extra[key] = value if "str" in str(types[key]) else yaml.safe_load(value)
    settings = scratch_settings("bench_spec")
    for url in (settings.database_url, settings.mlflow_tracking_uri):
        atexit.register(drop_database, url)
    work = Path(tempfile.mkdtemp(prefix="bench_spec-"))
    shapes = {**foreign_shapes(work, args.rows), "zh_lines": product1m_lines(work, args.rows)}
    rows = {}
    for shape in args.shapes:
        path = shapes[shape]
        spec_path = work / f"{shape}.yaml"
        spec_path.write_text(draft_spec(path, f"foreign_{shape}"), encoding="utf-8")
        preview = preview_catalog(path, str(spec_path), show=0)
        opts = TrainOptions(progress=sys.stderr.isatty(), **({} if args.min_steps is None else
                                                             {"min_steps": args.min_steps}), **extra)  # fmt: skip
        result = train(str(path), str(spec_path), settings, opts)
        held = np.load(Path(result.bundle_path) / "heldout.npz")
        y = held["y_true"]
        systems = {"tagger": held["model_pred"], "encoder": held["encoder_pred"], "tfidf": held["baseline_pred"]}
        ci = bootstrap_ci(y, systems, micro_f1, n=args.bootstrap)
        info = json.loads((Path(result.bundle_path) / "heldout.json").read_text())
        history = json.loads((Path(result.bundle_path) / "history.json").read_text())
        meta = json.loads((Path(result.bundle_path) / "bundle.json").read_text())
        rows[shape] = {
            "rows_read": preview.rows_read,
            "accepted": preview.accepted,
            "quarantined": preview.quarantined,
            "quarantine_by_rule": preview.by_rule,
            "facets": sorted(yaml.safe_load(spec_path.read_text())["facets"]),
            "n_train": info["n_train"],
            "encoder": meta["encoder"],
            "locale": meta["locale"],
            "tags_trained": int(y.shape[1]),
            "steps": history[-1]["step"] if history else None,
            "micro_f1": {k: v[0] for k, v in ci.items()},
            "micro_f1_ci": ci,
            "test_rows": int(len(y)),
            "hand_edits": "none (the draft as written)",
        }
    result = {"command": ".venv/bin/python " + " ".join(sys.argv), "rows": args.rows, "shapes": rows, "options": extra,
              "min_steps": TrainOptions().min_steps if args.min_steps is None else args.min_steps}  # fmt: skip
    save(f"bench_spec{('_' + args.tag) if args.tag else ''}", result)
    print(f"\nforeign shapes of {args.rows} rows, min_steps {result['min_steps']}")
    head = ["shape", "rows read = accepted + quarantined", "facets drafted", "encoder", "training rows, steps, tags",
            "tagger", "encoder alone", "TF-IDF"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for shape, r in rows.items():
        f = {k: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for k, v in r["micro_f1_ci"].items()}
        print(f"| {shape} | {r['rows_read']} = {r['accepted']} + {r['quarantined']} | {', '.join(r['facets'])} | "
              f"{r['encoder']} | {r['n_train']}, {r['steps']}, {r['tags_trained']} | {f['tagger']} | {f['encoder']} | "
              f"{f['tfidf']} |")  # fmt: skip


if __name__ == "__main__":
    main()

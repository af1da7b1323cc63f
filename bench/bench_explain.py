"""What an explanation costs: ``pipeline.evaluation.explain`` per item against the bundle's own prediction of the
same items in the same run (one at a time, as the review page asks), and per explained tag.

Each item's predicted tags are explained (integrated gradients, ``--steps`` points, all tags of an item in one
batch) plus the TF-IDF half's exact n-gram shares. The ratio says how far explanations must stay from the serving
path. Without ``--bundle`` a bundle is trained first on a Myntra slice (MiniLM, 2 epochs; not timed).

    .venv/bin/python bench/bench_explain.py [--bundle DIR] [--items 40] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from common import drop_database, read_rows, save, scratch_settings, write_csv


def _bundle(rows: int) -> tuple[Path, object]:
    from pipeline.catalog.spec import load_spec
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    settings = scratch_settings("explain")
    header, body = read_rows(load_spec("myntra"), settings.data_dir)
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    path = write_csv(settings.home_dir / "myntra.csv", header, body[:rows])
    opts = TrainOptions(max_length=48, batch_size=32, epochs=2, min_tag_count=3, progress=False)
    return Path(train(str(path), "myntra", settings, opts).bundle_path), settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rows", type=int, default=2000, help="training rows when no --bundle is given")
    args = ap.parse_args()

    import torch

    from pipeline.evaluation.explain import explain
    from pipeline.training.bundle import TEST_SPLIT_FILE, load_bundle

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    settings = None
    path = Path(args.bundle) if args.bundle else None
    if path is None:
        path, settings = _bundle(args.rows)
    try:
        bundle = load_bundle(path)
        with (path / TEST_SPLIT_FILE).open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line, _ in zip(f, range(args.items), strict=False)]
        explain(bundle, texts[0], steps=args.steps)  # warm-up (first call builds Captum's hooks, allocator)
        bundle.predict([texts[0]])
        predict_s, explain_s, n_tags = [], [], []
        for text in texts:
            t0 = time.perf_counter()
            bundle.predict([text])
            predict_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = explain(bundle, text, steps=args.steps)
            explain_s.append(time.perf_counter() - t0)
            n_tags.append(len(out["tags"]))
    finally:
        if settings is not None:
            drop_database(settings.database_url)
            drop_database(settings.mlflow_tracking_uri)
    result = {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "encoder": bundle.meta.get("encoder") or bundle.meta.get("encoder_source"),
        "items": len(texts),
        "steps": args.steps,
        "tags_per_item": statistics.mean(n_tags),
        "predict_ms_median": 1000 * statistics.median(predict_s),
        "explain_ms_median": 1000 * statistics.median(explain_s),
        "explain_ms_per_tag": 1000 * sum(explain_s) / max(sum(n_tags), 1),
    }
    result["ratio_explain_to_predict"] = result["explain_ms_median"] / result["predict_ms_median"]
    print(json.dumps(result, indent=1))
    print(f"saved {save('bench_explain', result)}")


if __name__ == "__main__":
    main()

"""Does the review loop help? A simulated reviewer corrects the top suspect labels of the training split, the tagger
is retrained, and both runs are scored on the same frozen test split (issue 19).

1. A seeded sample of ``--rows`` Myntra rows (CSV as shipped, re-written with proper quoting).
2. ``pipeline.review.suspects.find_suspects`` (out-of-fold TF-IDF probabilities + cleanlab) on the training
   split only (splits are grouped by normalised title, so a title's rows are all in one split).
3. The simulated reviewer takes the ``--top`` least likely suspects. Where the suspect's title occurs more than
   once and most of its rows carry another value, it corrects the label to that majority value (copying the facet's
   columns from such a row); otherwise it has no better answer and leaves the label.
4. Two training runs, same options and seed: on the sample as it is, and with the corrections. Frozen-test micro-F1
   of each (as served), the paired-bootstrap CI of the difference, and the same on the test rows outside the
   known-noise set (``common.title_disagreement``), whose labels are not contradicted by their own title.

    .venv/bin/python bench/bench_review_loop.py [--rows 8000] [--top 400] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import drop_database, read_rows, save, scratch_settings, timed_suspects, title_disagreement, write_csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--rows", type=int, default=8000)
    ap.add_argument("--top", type=int, default=400, help="suspects the simulated reviewer looks at")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    from pipeline.catalog.spec import load_spec
    from pipeline.catalog.splits import split_of
    from pipeline.evaluation.evaluate import evaluate_run
    from pipeline.metrics import micro_f1
    from pipeline.training.bundle import HELDOUT_ARRAYS
    from pipeline.training.dataset import load_source, prepare
    from pipeline.training.options import TrainOptions
    from pipeline.training.train import train

    settings = scratch_settings("reviewloop")
    spec = load_spec(args.spec)
    header, rows = read_rows(spec, settings.data_dir)
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), size=min(args.rows, len(rows)), replace=False))]
    home = settings.home_dir
    home.mkdir(parents=True, exist_ok=True)
    as_is = write_csv(home / "as_is.csv", header, rows)

    frame, _ = load_source(as_is, spec, settings)
    frame = frame.reset_index(drop=True)
    frame["split"] = [split_of(t) for t in frame["title"]]
    train_rows = frame[frame["split"] == "train"].reset_index()  # "index": the row in frame
    _, exclusive, suspects, suspect_s = timed_suspects(train_rows, spec)
    print(f"{len(suspects)} suspect labels among {len(train_rows)} training rows ({suspect_s:.0f} s)")

    # the simulated reviewer: the majority value of the suspect's title, where its title says so
    by_id = {r[header.index(spec.columns["product_id"])]: i for i, r in enumerate(rows)}
    norm = frame["title"].str.lower().str.split().str.join(" ")
    corrected_rows = [list(r) for r in rows]
    corrections, looked = {f: 0 for f in exclusive}, 0
    values = {f: title_disagreement(frame, f)[0] for f in exclusive}  # each row's value per facet, once
    rows_of_title = frame.groupby(norm).indices  # normalised title -> row positions
    for s in suspects[: args.top]:
        looked += 1
        row = train_rows.iloc[s.row]
        value = values[s.facet]
        same = [i for i in rows_of_title[norm[row["index"]]] if pd.notna(value[i])]
        if len(same) < 2:
            continue
        majority = value[same].value_counts()  # frame has a RangeIndex: positions are labels
        if majority.iloc[0] <= len(same) / 2 or majority.index[0] == value[row["index"]]:
            continue
        donor = next(i for i in same if value[i] == majority.index[0])
        rule = spec.facets[s.facet]
        columns = list(spec.category_path) if rule.from_category_path else [rule.column]
        src, dst = by_id[str(frame.loc[donor, "product_id"])], by_id[str(row["product_id"])]
        for c in columns:
            j = header.index(c)
            corrected_rows[dst][j] = rows[src][j]
        corrections[s.facet] += 1
    corrected = write_csv(home / "corrected.csv", header, corrected_rows)
    print(f"simulated reviewer: {sum(corrections.values())} corrections among the top {looked} suspects {corrections}")

    opts = TrainOptions(max_length=48, batch_size=32, epochs=args.epochs, min_tag_count=3, progress=False)
    runs = {}
    try:
        for name, path in (("as_is", as_is), ("corrected", corrected)):
            t0 = time.perf_counter()
            result = train(str(path), spec.name, settings, opts)
            evaluate_run(result.bundle_path, settings)
            with np.load(Path(result.bundle_path) / HELDOUT_ARRAYS) as z:
                runs[name] = {"y": z["y_true"], "pred": z["model_pred"], "digest": result.test_digest,  # own labels
                              "seconds": time.perf_counter() - t0}  # fmt: skip
            print(f"{name}: trained and scored in {runs[name]['seconds']:.0f} s")
    finally:
        drop_database(settings.database_url)
        drop_database(settings.mlflow_tracking_uri)
    assert runs["as_is"]["digest"] == runs["corrected"]["digest"], "the frozen test split differs between the runs"
    # each run scores against its own label map's targets (a tag can fall under min_tag_count in one of them);
    # the rows are the same frozen test rows in the same order
    ya, a, yb, b = runs["as_is"]["y"], runs["as_is"]["pred"], runs["corrected"]["y"], runs["corrected"]["pred"]

    # test rows outside the known-noise set, in the held-out arrays' order (prepare's test split)
    test_index = prepare(frame.drop(columns="split"), spec, min_tag_count=3).part("test").index
    noisy = set()
    for f in exclusive:
        noisy |= set(title_disagreement(frame, f)[2])
    clean = np.array([i not in noisy for i in test_index])
    assert len(clean) == len(ya) == len(yb), (len(clean), len(ya), len(yb))

    def paired(mask: np.ndarray) -> dict:
        f_a, f_b = micro_f1(ya[mask], a[mask]), micro_f1(yb[mask], b[mask])
        rows, boot, diffs = np.flatnonzero(mask), np.random.default_rng(1), []
        for _ in range(args.bootstrap):
            i = rows[boot.integers(0, len(rows), len(rows))]
            diffs.append(micro_f1(yb[i], b[i]) - micro_f1(ya[i], a[i]))
        return {"rows": len(rows), "as_is": f_a, "corrected": f_b, "diff": f_b - f_a,
                "diff_ci": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]}  # fmt: skip

    out = {
        "command": ".venv/bin/python " + " ".join(sys.argv),
        "cpu": platform.processor() or platform.machine(),
        "rows": len(frame),
        "train_rows": len(train_rows),
        "suspects": len(suspects),
        "suspect_seconds": round(suspect_s, 1),
        "looked_at": looked,
        "corrections": corrections,
        "epochs": args.epochs,
        "test_all": paired(np.ones(len(ya), bool)),
        "test_outside_known_noise": paired(clean),
    }
    for key in ("test_all", "test_outside_known_noise"):
        r = out[key]
        print(f"{key} ({r['rows']} rows): micro-F1 as is {r['as_is']:.4f}, corrected {r['corrected']:.4f}, "
              f"difference {r['diff']:+.4f} [{r['diff_ci'][0]:+.4f}, {r['diff_ci'][1]:+.4f}]")  # fmt: skip
    print(json.dumps(out, indent=1))
    print(f"saved {save('review_loop_' + args.spec, out)}")


if __name__ == "__main__":
    main()

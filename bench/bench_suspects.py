"""Suspect-label flags against a known-noise set: how many of the rows cleanlab flags are known to be mislabelled.

The known-noise set is the one ``bench_label_noise.py`` measures: among rows whose normalised title occurs more than
once, those whose value in a facet differs from the most common value for that title (the same title cannot be two
genders or two seasons). For every exclusive facet, ``pipeline.review.suspects.find_suspects`` (out-of-fold TF-IDF
probabilities, stratified 5-fold, then cleanlab's ``find_label_issues``) flags rows; the flag precision is the
share of flagged rows in the known-noise set, against a random pick's precision: the known-noise share of all the
facet's rows. Also the precision of the 200 least likely flags. Goal (issue 19): at least 3x random.

``--compare`` also runs the first implementation in the same run (``previous_suspects``: vectorisers refitted in
every fold of every facet, one fold at a time) and reports both times and how many flags they share.

    .venv/bin/python bench/bench_suspects.py [--spec myntra] [--rows N] [--compare]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from common import save, timed_suspects, title_disagreement


def previous_suspects(texts: list[str], tags: list[list[str]], exclusive: list[str], folds: int = 5, seed: int = 13):
    """The first ``find_suspects`` (kept here as the baseline): a full TF-IDF + logistic regression pipeline
    refitted in every fold of every facet, folds one after another. Returns {(row, facet)} flagged."""
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import FeatureUnion, make_pipeline

    flagged = set()
    for facet in exclusive:
        pairs = [(i, m[0]) for i, t in enumerate(tags) if len(m := [x for x in t if x.split(":")[0] == facet]) == 1]
        classes, counts = np.unique([lab for _, lab in pairs], return_counts=True)
        keep = set(classes[counts >= folds])
        pairs = [(i, lab) for i, lab in pairs if lab in keep]
        if len(keep) < 2:
            continue
        names = sorted(keep)
        y = np.array([names.index(lab) for _, lab in pairs])
        features = FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)),
        ])  # fmt: skip
        model = make_pipeline(features, LogisticRegression(max_iter=2000, C=10.0))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        probs = cross_val_predict(model, [texts[i] for i, _ in pairs], y, cv=cv, method="predict_proba")
        ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
        flagged |= {(pairs[k][0], facet) for k in ranked}
    return flagged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--source", default=None)
    ap.add_argument("--rows", type=int, default=None, help="a seeded sample of this many rows (default: all)")
    ap.add_argument("--top", type=int, default=200)
    ap.add_argument("--compare", action="store_true", help="also time the first implementation in this run")
    args = ap.parse_args()

    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.settings import Settings
    from pipeline.training.dataset import load_source

    settings = Settings(home=tempfile.mkdtemp(prefix="suspects-"))
    spec = load_spec(args.spec)
    frame, _ = load_source(args.source or default_source(args.spec, settings.data_dir), spec, settings)
    if args.rows:
        frame = frame.sample(n=min(args.rows, len(frame)), random_state=0)
    frame = frame.reset_index(drop=True)
    texts, exclusive, suspects, seconds = timed_suspects(frame, spec)
    if args.compare:
        t0 = time.perf_counter()
        before = previous_suspects(texts, list(frame["tags"]), exclusive)
        previous_s = time.perf_counter() - t0
        now = {(s.row, s.facet) for s in suspects}
        shared = len(now & before) / max(len(now | before), 1)
        print(f"previous implementation: {previous_s:.0f} s, {len(before)} flags; now {seconds:.0f} s, {len(now)} "
              f"flags; {previous_s / seconds:.1f}x faster; flags shared (Jaccard) {shared:.2f}")  # fmt: skip
    out = {"command": ".venv/bin/python " + " ".join(sys.argv), "spec": args.spec, "rows": len(frame),
           "seconds": round(seconds, 1), "facets": {}}  # fmt: skip
    if args.compare:
        out |= {"previous_seconds": round(previous_s, 1), "flags_jaccard_with_previous": round(shared, 3)}
    print(f"{args.spec}: {len(frame)} rows, suspects found in {seconds:.0f} s")
    print("| facet | rows labelled | known noise | flagged | flag precision | random | ratio | top-200 precision |")
    print("|---|---|---|---|---|---|---|---|")
    for facet in exclusive:
        value, _, noisy_index = title_disagreement(frame, facet)
        labelled, noisy = value.notna(), set(noisy_index)
        flagged = [s.row for s in suspects if s.facet == facet]  # least likely first
        if not flagged or not labelled.any():
            continue
        precision = sum(r in noisy for r in flagged) / len(flagged)
        top = flagged[: args.top]
        top_precision = sum(r in noisy for r in top) / len(top)
        random = len(noisy) / int(labelled.sum())
        out["facets"][facet] = {"rows": int(labelled.sum()), "known_noise": len(noisy), "flagged": len(flagged),
                                "precision": precision, "random": random, "top_precision": top_precision}  # fmt: skip
        ratio = precision / random if random else float("nan")
        print(f"| {facet} | {int(labelled.sum())} | {len(noisy)} | {len(flagged)} | {precision:.1%} | {random:.1%} | "
              f"{ratio:.1f}x | {top_precision:.1%} |")  # fmt: skip
    save(f"suspects_{args.spec}{'_' + str(args.rows) if args.rows else ''}", out)


if __name__ == "__main__":
    main()

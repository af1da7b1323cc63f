"""Suspect-label flags against a known-noise set: how many of the rows cleanlab flags are known to be mislabelled.

The known-noise set is the one ``bench_label_noise.py`` measures: among rows whose normalised title occurs more than
once, those whose value in a facet differs from the most common value for that title (the same title cannot be two
genders or two seasons). For every exclusive facet, ``pipeline.review.suspects.find_suspects`` (out-of-fold TF-IDF
probabilities, stratified 5-fold, then cleanlab's ``find_label_issues``) flags rows; the flag precision is the
share of flagged rows in the known-noise set, against a random pick's precision: the known-noise share of all the
facet's rows. Also the precision of the 200 least likely flags. Goal (issue 19): at least 3x random.

    .venv/bin/python bench/bench_suspects.py [--spec myntra] [--rows N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from common import save, title_disagreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--source", default=None)
    ap.add_argument("--rows", type=int, default=None, help="a seeded sample of this many rows (default: all)")
    ap.add_argument("--top", type=int, default=200)
    args = ap.parse_args()

    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.catalog.text import build_text, template_for
    from pipeline.review.suspects import find_suspects
    from pipeline.settings import Settings
    from pipeline.training.dataset import load_source

    settings = Settings(home=tempfile.mkdtemp(prefix="suspects-"))
    spec = load_spec(args.spec)
    frame, _ = load_source(args.source or default_source(args.spec, settings.data_dir), spec, settings)
    if args.rows:
        frame = frame.sample(n=min(args.rows, len(frame)), random_state=0)
    frame = frame.reset_index(drop=True)
    template = template_for(spec)
    texts = [build_text(r, template) for r in frame.to_dict(orient="records")]
    exclusive = [f for f, rule in spec.facets.items() if rule.exclusive]
    t0 = time.perf_counter()
    suspects = find_suspects(texts, list(frame["tags"]), exclusive)
    seconds = time.perf_counter() - t0
    out = {"command": ".venv/bin/python " + " ".join(sys.argv), "spec": args.spec, "rows": len(frame),
           "seconds": round(seconds, 1), "facets": {}}  # fmt: skip
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

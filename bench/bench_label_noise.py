"""How much of a facet no title-only model can get right: label disagreement among rows that share a title.

For every exclusive facet, among the rows whose normalised title occurs more than once, the share whose value
differs from the most common value for that title. Even a model that knew that majority value would get those
rows wrong, so this is a floor under the error of any tagger that reads only the title.

    .venv/bin/python bench/bench_label_noise.py [--spec myntra] [--source PATH]
"""

from __future__ import annotations

import argparse
import tempfile

from common import save, title_disagreement


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="myntra")
    ap.add_argument("--source", default=None)
    args = ap.parse_args()

    from pipeline.catalog.spec import default_source, load_spec
    from pipeline.settings import Settings
    from pipeline.training.dataset import load_source

    settings = Settings(home=tempfile.mkdtemp(prefix="label_noise-"))
    spec = load_spec(args.spec)
    frame, _ = load_source(args.source or default_source(args.spec, settings.data_dir), spec, settings)
    norm = frame["title"].str.lower().str.split().str.join(" ")
    n_shared = int((norm.groupby(norm).transform("size") > 1).sum())
    out = {"spec": args.spec, "rows": len(frame), "rows_sharing_a_title": n_shared, "facets": {}}
    print(f"{args.spec}: {n_shared} of {len(frame)} rows share their normalised title with another row")
    facets = sorted({t.split(":", 1)[0] for tags in frame["tags"] for t in tags})
    for facet in facets:
        # the most specific tag of the facet (a category leaf rather than its ancestors)
        _, rows, noisy = title_disagreement(frame, facet)
        if not rows.any():
            continue
        share = len(noisy) / int(rows.sum())
        out["facets"][facet] = {"rows": int(rows.sum()), "disagree_with_title_majority": share}
        print(f"  {facet:10s} {share:6.1%} of {int(rows.sum())} rows disagree with their title's majority value")
    save(f"label_noise_{args.spec}", out)


if __name__ == "__main__":
    main()

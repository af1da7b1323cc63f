"""Benchmark: the GX validation gate on a whole catalog vs a plain-pandas pass checking the same row rules.

    .venv/bin/python bench/bench_validate.py [PATH] [--spec myntra]

Uses the settings from the environment (``TAGGER_HOME``, ``TAGGER_DATABASE_URL``; unset: embedded Postgres).
Prints seconds for

* end to end: ``validate_catalog`` (read, derive, GX suites + Data Docs, quarantine, Parquet, drift, Postgres)
  vs the plain-pandas pass (read, derive, the same row rules as boolean masks, tag counts and library check);
* validation pass, from the parsed frame: derived columns + GX checkpoints + Data Docs vs derived columns +
  pandas masks (the file read is left out of both);
* checks only, on the same derived frame: the two GX checkpoints (with Data Docs) vs the pandas masks;

and the ratios. Targets: GX on 44k rows under 30 s, at most 5x the plain-pandas pass.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.catalog.readers import read_catalog  # noqa: E402
from pipeline.catalog.spec import default_source, load_spec  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.validation import expectations  # noqa: E402
from pipeline.validation.validate import ValidationOptions, validate_catalog  # noqa: E402


def pandas_checks(rows: pd.DataFrame, library: set[str], opts: ValidationOptions) -> dict[str, int]:
    """The row rules of the GX suite as plain pandas masks; returns failing rows per rule."""
    length = rows["title_length"]
    masks = {
        "product_id_present": rows["product_id_value"].isna(),
        "product_id_unique": rows["duplicate_of_row"].notna(),
        "title_present": rows["title_missing"],
        "title_length": length.notna() & ((length < opts.min_title_chars) | (length > opts.max_title_chars)),
        "title_utf8": ~rows["title_utf8_ok"],
        "title_no_control_chars": ~rows["title_control_free"],
        "title_single_split": rows["title_splits"] != 1,
    }
    bad = pd.concat(masks, axis=1).any(axis=1)
    tags = expectations.tags_frame(rows.loc[~bad], {})
    out = {k: int(m.sum()) for k, m in masks.items()}
    out["tag_in_library"] = int((~tags["tag"].isin(library)).sum())
    out["tag_min_examples"] = int((tags["trainable_examples"] < opts.min_examples_per_tag).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=None, help="Catalog file (default: the spec's data_file)")
    parser.add_argument("--spec", default="myntra")
    args = parser.parse_args()
    args.path = args.path or default_source(args.spec, Settings().data_dir)
    logging.basicConfig(level=logging.WARNING)
    spec = load_spec(args.spec)
    opts = ValidationOptions()
    settings = Settings()
    import great_expectations  # noqa: F401  (import cost is not validation cost)

    # end to end
    t0 = time.perf_counter()
    result = validate_catalog(args.path, spec, settings, options=opts)
    t_gx_total = time.perf_counter() - t0
    t0 = time.perf_counter()
    read = read_catalog(args.path, spec)
    rows = expectations.rows_frame(read.frame, spec.null_values, opts.split_seed)
    pandas_counts = pandas_checks(rows, set(), opts)
    t_pd_total = time.perf_counter() - t0

    # from the parsed frame: derive + checks (the work the two passes do beyond reading the file)
    t0 = time.perf_counter()
    rows = expectations.rows_frame(read.frame, spec.null_values, opts.split_seed)
    t_derive = time.perf_counter() - t0
    t0 = time.perf_counter()
    pandas_checks(rows, set(), opts)
    t_pd_checks = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as site:
        t0 = time.perf_counter()
        E = expectations
        batches = [
            E.Batch(
                E.ROW_SUITE,
                "row_number",
                E.row_rules(opts.min_title_chars, opts.max_title_chars),
                lambda _: E.scalar_rows(rows),
            ),
            E.Batch(E.TAG_SUITE, "tag", E.tag_rules([], opts.min_examples_per_tag), lambda _: E.tags_frame(rows, {})),
        ]
        run = E.run_suites(batches, Path(site), "bench")
        t_gx_checks = time.perf_counter() - t0
    gx_counts = {o.name: o.unexpected_count for o in run.outcomes if not o.name.startswith("column_")}
    t_gx_pass, t_pd_pass = t_derive + t_gx_checks, t_derive + t_pd_checks

    print(
        f"catalog: {args.path} ({result.rows_read:,} rows, verdict {result.verdict}, "
        f"{result.rows_quarantined} quarantined)"
    )
    print(
        f"end to end   GX validate_catalog {t_gx_total:7.2f} s | plain pandas {t_pd_total:6.2f} s | "
        f"ratio {t_gx_total / t_pd_total:5.2f}x"
    )
    print(
        f"validation   GX derive+suites+docs {t_gx_pass:5.2f} s | pandas derive+masks {t_pd_pass:5.2f} s | "
        f"ratio {t_gx_pass / t_pd_pass:5.2f}x   (derive {t_derive:.2f} s, shared)"
    )
    print(
        f"checks only  GX suites+docs {t_gx_checks:11.2f} s | pandas masks {t_pd_checks:12.2f} s | "
        f"ratio {t_gx_checks / t_pd_checks:5.1f}x"
    )
    agree = all(gx_counts.get(k) == v for k, v in pandas_counts.items() if k != "tag_min_examples")
    print(f"rule counts agree (GX vs pandas): {agree}  {pandas_counts}")
    print(
        f"target: GX under 30 s -> {'OK' if t_gx_total < 30 else 'MISSED'}; "
        f"end-to-end ratio <= 5x -> {'OK' if t_gx_total <= 5 * t_pd_total else 'MISSED'}; "
        f"validation-pass ratio <= 5x -> {'OK' if t_gx_pass <= 5 * t_pd_pass else 'MISSED'}"
    )


if __name__ == "__main__":
    main()

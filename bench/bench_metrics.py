"""Micro-F1 from summed counts (pipeline.metrics.micro_f1) against scikit-learn's ``f1_score(average="micro")``.

Why the hand-written piece stays: the paired bootstrap calls micro-F1 a thousand times per system. Both are timed
on the same label matrices in the same run, shaped like Myntra's frozen test split by default ([4141, 190], ~3%
of cells true, ~1% of predictions flipped), and the bench fails if the two values differ.

    .venv/bin/python bench/bench_metrics.py [--rows 4141 --tags 190 --repeats 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import save
from sklearn.metrics import f1_score

from pipeline.metrics import micro_f1


def _best_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4141)
    ap.add_argument("--tags", type=int, default=190)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.random((args.rows, args.tags)) < 0.03
    p = y ^ (rng.random(y.shape) < 0.01)
    ours, theirs = micro_f1(y, p), float(f1_score(y, p, average="micro", zero_division=0))
    assert abs(ours - theirs) < 1e-12, (ours, theirs)
    ours_ms = _best_ms(lambda: micro_f1(y, p), args.repeats)
    sk_ms = _best_ms(lambda: f1_score(y, p, average="micro", zero_division=0), args.repeats)
    result = {"shape": list(y.shape), "micro_f1": ours, "counts_ms": ours_ms, "sklearn_ms": sk_ms}
    result["sklearn_over_counts"] = sk_ms / ours_ms
    print(f"micro-F1 {ours:.6f} both; counts {ours_ms:.2f} ms, sklearn {sk_ms:.2f} ms ({sk_ms / ours_ms:.0f}x)")
    save("bench_metrics", result)


if __name__ == "__main__":
    main()

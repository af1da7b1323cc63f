"""Metric functions against hand-computed examples; hierarchy consistency of post-processed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import (
    bootstrap_ci,
    expected_calibration_error,
    macro_f1,
    micro_f1,
    precision_at_k,
    tag_metrics,
)
from pipeline.training.labels import LabelMap, postprocess

pytestmark = pytest.mark.unit

T = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=bool)
P = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)


def test_micro_and_macro_f1_by_hand():
    # TP = 4 (r0:2, r1:1, r2:1), FP = 1 (r1 tag0), FN = 2 (r1 tag1, r2 tag3): F1 = 8 / (8 + 1 + 2)
    assert micro_f1(T, P) == pytest.approx(8 / 11)
    # per tag: t0 tp2 fp1 -> 0.8; t1 fn1 -> 0; t2 tp2 -> 1; t3 fn1 -> 0  => mean 0.45
    assert macro_f1(T, P) == pytest.approx(0.45)
    assert micro_f1(T, np.zeros_like(T)) == 0.0


def test_precision_at_k_and_ece_by_hand():
    scores = np.array([[0.9, 0.1, 0.8, 0.0], [0.7, 0.2, 0.6, 0.1], [0.3, 0.2, 0.1, 0.9]])
    assert precision_at_k(T, scores, 1) == pytest.approx(2 / 3)  # r0 t0 yes, r1 t0 no, r2 t3 yes
    assert precision_at_k(T, scores, 2) == pytest.approx((2 + 1 + 2) / 6)
    # predicted scores: 0.9 (ok), 0.8 (ok), 0.7 (wrong), 0.6 (ok), 0.3 (ok) in bins 9, 8, 7, 6, 3
    expected = (0.1 + 0.2 + 0.7 + 0.4 + 0.7) / 5
    assert expected_calibration_error(T, P, scores) == pytest.approx(expected)


def test_tag_metrics_facets_and_tags():
    lm = LabelMap.build({"gender": ["gender:f", "gender:m"], "material": ["material:a", "material:b"]},
                        {"gender": True, "material": False})  # fmt: skip
    scores = np.full(T.shape, 0.5)
    m = tag_metrics(T, P, scores, lm)
    g = m["facets"]["gender"]
    assert g["exclusive"] and g["accuracy"] == pytest.approx(2 / 3)  # rows 0, 2 right; row 1 wrong
    assert m["facets"]["material"]["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert m["tags"]["gender:f"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert m["micro_f1"] == pytest.approx(8 / 11)


def test_bootstrap_ci_brackets_the_point():
    rng = np.random.default_rng(0)
    y = rng.random((200, 5)) > 0.5
    p = y ^ (rng.random((200, 5)) > 0.9)
    point, lo, hi = bootstrap_ci(y, {"m": p}, micro_f1, n=200)["m"]
    assert lo < point < hi and hi - lo < 0.1


def test_postprocess_brings_ancestors_and_one_value_per_exclusive_facet():
    leaf = "category:apparel/topwear/tshirts"
    lm = LabelMap.build(
        {"category": [leaf, "category:footwear/shoes/casual"], "color": ["color:red", "color:blue"]},
        {"category": True, "color": True},
        ancestors={leaf: ["category:apparel/topwear", "category:apparel"]},
    )
    logits = np.array([[4.0, 0.0, 1.0, 2.0]])  # label map sorts: blue (1.0) then red (2.0)
    out = postprocess(logits, lm, np.zeros(4))[0]
    slugs = [t["slug"] for t in out]
    assert slugs[0] == leaf and set(slugs) == {
        leaf, "category:apparel/topwear", "category:apparel", "color:red"}  # fmt: skip
    assert all(t["facet"] == "category" for t in out if t["slug"].startswith("category:"))

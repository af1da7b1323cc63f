"""Drift figures (PSI, Jensen-Shannon, new products, title lengths): pure functions, no services."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.validation import drift

pytestmark = pytest.mark.unit


def test_identical_distributions_do_not_drift_and_shifted_ones_do():
    a = {"gender:male": 50, "gender:female": 50}
    assert drift.psi(a, a) == pytest.approx(0, abs=1e-9)
    assert drift.jensen_shannon(a, a) == pytest.approx(0, abs=1e-9)
    b = {"gender:male": 5, "gender:female": 95}
    assert drift.psi(a, b) > 0.5
    assert 0 < drift.jensen_shannon(a, b) < 1
    only_new = {"gender:unisex": 10}
    assert drift.jensen_shannon(a, only_new) == pytest.approx(1, abs=1e-2)  # disjoint: maximal, finite
    assert drift.psi(a, only_new) < 50


def test_compare_reports_numbers_and_crossed_thresholds():
    frame = pd.DataFrame(
        {"tags": [["gender:male"], ["gender:female"]] * 50, "title": ["Blue shirt"] * 100, "product_id": range(100)}
    )
    shifted = frame.assign(tags=[["gender:female"]] * 100, title=["A much longer title for a blue shirt"] * 100)
    prev, cur = drift.snapshot_stats(frame), drift.snapshot_stats(shifted)
    fig = drift.compare(
        prev,
        cur,
        {str(i) for i in range(100)},
        {str(i) for i in range(50, 150)},
        label_psi_warn=0.2,
        new_products_warn=0.4,
        title_length_psi_warn=0.2,
        label_psi_fail=100.0,
    )
    assert fig["facets"]["gender"]["psi"] > 0.2 and fig["new_product_share"] == 0.5
    assert fig["title_length_psi"] > 0.2
    assert len(fig["alerts"]) == 3 and not fig["fails"]
    same = drift.compare(prev, prev, None, {"1"}, label_psi_warn=0.2, new_products_warn=0.4, title_length_psi_warn=0.2)
    assert same["alerts"] == [] and same["new_product_share"] is None

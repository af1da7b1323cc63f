"""``evaluate`` and the CLI on the session's tiny trained bundle."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.errors import BundleError
from pipeline.evaluation.evaluate import evaluate


@pytest.mark.model
def test_evaluate_reproduces_training_metrics_by_path_and_run_id(tiny_bundle):
    by_path = evaluate(tiny_bundle.path, tiny_bundle.settings)
    trained = json.loads((tiny_bundle.path / "metrics.json").read_text())
    assert by_path.test_digest == trained["test_digest"] and by_path.n_test == trained["n_test"]
    # tiny_bundle trains in fp32, so re-scoring the bundle is the same computation as training's held-out scores
    assert by_path.metrics["micro_f1"] == pytest.approx(trained["model"]["micro_f1"], abs=1e-9)
    assert by_path.metrics["macro_f1"] == pytest.approx(trained["model"]["macro_f1"], abs=1e-9)
    for facet, entry in trained["model"]["facets"].items():
        assert by_path.metrics["facets"][facet]["micro_f1"] == pytest.approx(entry["micro_f1"], abs=1e-9), facet
    by_run = evaluate(tiny_bundle.result.run_id, tiny_bundle.settings)
    assert by_run.metrics["micro_f1"] == pytest.approx(by_path.metrics["micro_f1"])
    with open(by_run.report_path) as fh:
        assert json.load(fh)["n_test"] == by_path.n_test


@pytest.mark.unit
def test_evaluate_names_a_missing_bundle(settings):
    with pytest.raises(BundleError, match="no tagger bundle at '/no/such/bundle'"):
        evaluate("/no/such/bundle", settings)


@pytest.mark.unit
def test_cli_has_train_and_evaluate():
    from pipeline.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["train", "--help"])
    assert out.exit_code == 0 and "--spec" in out.output and "--max-rows" in out.output
    out = runner.invoke(app, ["evaluate", "--help"])
    assert out.exit_code == 0 and "run_or_model" in out.output.lower()

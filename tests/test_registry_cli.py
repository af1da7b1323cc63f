"""``tagger models ...`` end to end through the CLI, on the real store (compare HTML, history, manual mode)."""

from __future__ import annotations

import json

import pytest
import typer
from helpers.fixtures_registry import metrics
from typer.testing import CliRunner

from pipeline.commands import models as models_cmd
from pipeline.errors import RegistryError
from pipeline.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(registry_settings, monkeypatch):
    s = registry_settings
    for key, value in {
        "TAGGER_HOME": str(s.home),
        "TAGGER_DATABASE_URL": s.database_url,
        "TAGGER_MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "TAGGER_MLFLOW_ARTIFACT_LOCATION": s.mlflow_artifact_location,
        "TAGGER_REGISTERED_MODEL_NAME": s.registered_model_name,
        "TAGGER_ACTOR": "cli-user",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    app = typer.Typer()
    models_cmd.register(app)
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, list(map(str, args)))
    get_settings.cache_clear()


def test_models_cli_flow(cli, make_bundle, registry_settings):
    r = cli("models", "register", make_bundle(metrics(0.80), seed=41))
    assert r.exit_code == 0, r.output
    assert f"registered models:/{registry_settings.registered_model_name}/1" in r.output
    assert cli("models", "gate", 1).exit_code == 0
    assert cli("models", "promote", 1, "--reason", "first").exit_code == 0

    assert cli("models", "register", make_bundle(metrics(0.86, facets={"color": 0.79}), seed=42)).exit_code == 0
    r = cli("models", "gate", 2, "--policy", "manual")
    assert r.exit_code == 3 and "needs-review" in r.output and "review.manual" in r.output

    r = cli("models", "compare", 1, 2)
    assert r.exit_code == 0, r.output
    assert "color.micro_f1" in r.output and "-0.0100" in r.output and "+0.0600" in r.output
    html_path = registry_settings.reports_dir / "compare" / f"{registry_settings.registered_model_name}-v1-v2.html"
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 2 and "<h3>v1</h3>" in page and "<h3>v2</h3>" in page
    rows = json.loads(html_path.with_suffix(".json").read_text())["rows"]
    assert {r["metric"]: r["delta"] for r in rows}["micro_f1"] == pytest.approx(0.06)

    r = cli("models", "promote", 2)
    assert isinstance(r.exception, RegistryError) and "no reviewer approved it yet" in str(r.exception)
    assert cli("models", "review", 2, "--approve", "--reason", "looks right").exit_code == 0
    assert cli("models", "review", 2, "--wait", "--timeout", "1").exit_code == 0
    assert cli("models", "promote", 2, "--reason", "reviewed").exit_code == 0

    r = cli("models", "list")
    assert r.exit_code == 0 and "champion" in r.output and "previous" in r.output
    r = cli("models", "rollback", "--reason", "drill")
    assert r.exit_code == 0 and "rollback" in r.output
    r = cli("models", "history", "--json")
    events = [json.loads(line) for line in r.output.splitlines()]
    assert [(e["action"], e["to_version"], e["actor"]) for e in events if e["alias"] == "champion"] == [
        ("promote", 1, "cli-user"),
        ("promote", 2, "cli-user"),
        ("rollback", 1, "cli-user"),
    ]
    assert cli("models", "history").exit_code == 0

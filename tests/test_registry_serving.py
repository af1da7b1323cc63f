"""The registered pyfunc in a fresh process, and the MLflow UI / tracking server on the project's store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers.fixtures_registry import metrics

from pipeline import registry
from pipeline.commands.models import start_mlflow_ui, stop_mlflow_ui
from pipeline.registry.gate import gate
from pipeline.training.bundle import load_bundle

pytestmark = pytest.mark.integration

TEXTS = ["Men Navy Blue Cotton Slim Fit Casual Shirt", "Women Black Leather Handbag", "耐克 男子 跑步鞋", ""]

LOAD_AND_PREDICT = """
import json, sys
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(json.loads(sys.argv[2]))
print("RESULT" + json.dumps({"columns": list(out.columns), "tags": out["tags"].tolist(),
                              "slugs": [list(s) for s in out["slugs"]]}))
"""


@pytest.mark.slow
def test_pyfunc_loads_in_a_fresh_process_and_tags_like_the_bundle(registry_settings, make_bundle, tmp_path):
    s = registry_settings
    bundle = make_bundle(metrics(0.8), seed=7)
    ref = registry.register_bundle(s, bundle)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "MLFLOW_", "PYTHONPATH"))}
    env["MLFLOW_TRACKING_URI"] = s.mlflow_tracking_uri
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, ref.uri, json.dumps(TEXTS)],
        cwd=tmp_path,  # not the repository: `pipeline` comes from the model's own code path
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert out["columns"] == ["tags", "slugs", "scores"]

    expected = load_bundle(bundle).predict(TEXTS)
    got = [json.loads(t) for t in out["tags"]]
    assert [[t["slug"] for t in items] for items in got] == [[t["slug"] for t in items] for items in expected]
    assert out["slugs"] == [[t["slug"] for t in items] for items in expected]
    np.testing.assert_allclose(
        [t["score"] for items in got for t in items], [t["score"] for items in expected for t in items], rtol=1e-5
    )
    assert all(items for items in got)  # every exclusive facet at threshold 0.2 yields a tag

    # logged as a model from code: the registry holds the pyfunc's source, no CloudPickle to unpickle on load
    import mlflow
    import yaml

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    path = mlflow.artifacts.download_artifacts(f"{ref.uri}/MLmodel", dst_path=str(tmp_path / "mlmodel"))
    mlmodel = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model" and "python_model" not in flavor


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode("utf-8", errors="replace")


@pytest.mark.slow
def test_mlflow_ui_serves_the_version_a_reviewer_opens(registry_settings, make_bundle):
    s = registry_settings
    name = s.registered_model_name
    v1 = registry.register_bundle(s, make_bundle(metrics(0.8), seed=8)).version
    port = _free_port()
    proc = start_mlflow_ui(s, port=port, timeout_s=60)
    try:
        base = f"http://127.0.0.1:{port}"
        # production shape: the same code, pointed at the server by the settings alone
        remote = s.model_copy(update={"mlflow_tracking_uri": base})
        assert registry.get_alias(remote, "challenger") == v1
        assert gate(remote, v1).verdict == "approve"
        registry.promote(remote, v1, actor="reviewer", reason="via server")
        v2 = registry.register_bundle(remote, make_bundle(metrics(0.9), seed=9)).version
        assert (registry.get_alias(s, "champion"), registry.get_alias(s, "challenger")) == (v1, v2)

        q = urllib.parse.urlencode({"name": name})
        status, body = _get(f"{base}/api/2.0/mlflow/registered-models/get?{q}")
        rm = json.loads(body)["registered_model"]
        assert status == 200 and rm["name"] == name
        assert {a["alias"]: a["version"] for a in rm["aliases"]} == {"champion": str(v1), "challenger": str(v2)}

        q = urllib.parse.urlencode({"name": name, "version": v1})
        mv = json.loads(_get(f"{base}/api/2.0/mlflow/model-versions/get?{q}")[1])["model_version"]
        tags = {t["key"]: t["value"] for t in mv["tags"]}
        assert tags["gate_verdict"] == "approve" and tags["micro_f1"] == "0.8000"
        assert "Test micro-F1: 0.8" in mv["description"]

        # the model card and the plots, as the version page links them
        sub = tags["bundle_path"]
        q = urllib.parse.urlencode({"name": name, "version": v1, "path": f"{sub}/model_card.md"})
        assert "# Product tagger" in _get(f"{base}/model-versions/get-artifact?{q}")[1]
        q = urllib.parse.urlencode({"run_uuid": mv["run_id"], "path": "review/plots/facet_f1.png"})
        with urllib.request.urlopen(f"{base}/get-artifact?{q}", timeout=10) as r:
            assert r.read(8) == b"\x89PNG\r\n\x1a\n"

        # the single-page UI itself (its routes are #/models/<name>/versions/<v>) and its script
        status, page = _get(f"{base}/")
        assert status == 200 and "<title>MLflow</title>" in page
        script = page.split('src="', 1)[1].split('"', 1)[0]
        assert _get(f"{base}/{script.lstrip('./')}")[0] == 200
    finally:
        stop_mlflow_ui(proc)
    assert proc.poll() is not None

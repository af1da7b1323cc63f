"""The GPU check's path, run on the CPU: bench_gpu.py trains on a catalog sample and leaves its logits, and
bench_quality.py --from-logits rebuilds the same splits, refuses logits made from other splits, and fuses them
with the TF-IDF baseline into the quality table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAGGER_BENCH_RESULTS": str(out)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def gpu_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    proc = _run(["bench/bench_gpu.py", "--device", "cpu", "--max-rows", "600", "--epochs", "1", "--runs", "batch32",
                 "--carry", str(out / "no-carry"), "--out", str(out)], out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_bench_gpu_reports_each_run_and_leaves_its_logits(gpu_out):
    result = json.loads((gpu_out / "bench_gpu.json").read_text())
    run = result["batch32"]
    assert result["device"] == "cpu" and run["steps"] > 0 and run["samples_per_s"] > 0
    assert 0 < run["test_micro_f1"] <= 1 and run["options"]["max_rows"] == 600
    blob = np.load(gpu_out / "logits_batch32.npz")
    assert blob["val"].shape[1] == blob["test"].shape[1] == len(blob["slugs"])
    assert str(blob["test_digest"]) == run["test_digest"]


def test_quality_from_logits_fuses_them_with_the_baseline(gpu_out):
    proc = _run(["bench/bench_quality.py", "--from-logits", str(gpu_out / "logits_batch32.npz"), "--bootstrap", "20",
                 "--tag", "t"], gpu_out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    q = json.loads((gpu_out / "quality_myntra_t.json").read_text())
    assert q["test_digest"] == json.loads((gpu_out / "bench_gpu.json").read_text())["batch32"]["test_digest"]
    assert set(q["ci"]["micro_f1"]) == {"tagger", "baseline", "encoder alone"}
    enc = q["ci"]["micro_f1"]["encoder alone"][0]
    bench_f1 = json.loads((gpu_out / "bench_gpu.json").read_text())["batch32"]["test_micro_f1"]
    assert abs(enc - bench_f1) < 0.01  # the same encoder scored here as on the "device" (logits stored in fp16)


def test_quality_from_logits_refuses_logits_of_other_splits(gpu_out, tmp_path):
    blob = dict(np.load(gpu_out / "logits_batch32.npz"))
    blob["test_digest"] = np.asarray("0" * 64)
    np.savez(tmp_path / "logits_batch32.npz", **blob)
    (tmp_path / "bench_gpu.json").write_text((gpu_out / "bench_gpu.json").read_text())
    proc = _run(["bench/bench_quality.py", "--from-logits", str(tmp_path / "logits_batch32.npz")], tmp_path)
    assert proc.returncode != 0
    assert "was not made from these splits" in proc.stderr and "000000000000" in proc.stderr

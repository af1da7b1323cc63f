"""Device and precision choice of the fit loop: the bf16 probe, explicit precisions, batch padding per device."""

from __future__ import annotations

import pytest
import torch

from pipeline.training import loop
from pipeline.training.loop import pad_multiple, pick_device
from pipeline.training.options import TrainOptions


@pytest.mark.unit
def test_explicit_precisions_are_obeyed_on_the_cpu():
    assert pick_device(TrainOptions(device="cpu", precision="fp32")) == (torch.device("cpu"), False)
    assert pick_device(TrainOptions(device="cpu", precision="bf16")) == (torch.device("cpu"), True)


@pytest.mark.unit
def test_auto_precision_on_the_cpu_follows_the_matmul_probe(monkeypatch):
    loop._cpu_bf16.cache_clear()
    try:
        measured = loop._cpu_bf16()
        assert isinstance(measured, bool)
        assert pick_device(TrainOptions(device="cpu", precision="auto"))[1] is measured
        loop._cpu_bf16.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert loop._cpu_bf16() is False  # no oneDNN: never bf16 on the CPU
        assert pick_device(TrainOptions(device="cpu", precision="auto"))[1] is False
    finally:
        loop._cpu_bf16.cache_clear()


@pytest.mark.unit
def test_batches_are_padded_to_their_longest_row_on_the_cpu_and_to_8_on_cuda():
    assert pad_multiple(torch.device("cpu")) == 1
    assert pad_multiple(torch.device("cuda")) == 8


# What a GPU machine lent by the device tool has: torch, transformers, pandas, PyYAML, scikit-learn; not the
# project's database / MLflow / settings stack (bench/bench_gpu.py runs the training path there).
_BLOCKED = ("sqlalchemy", "psycopg", "pydantic", "pydantic_settings", "mlflow", "alembic", "great_expectations")
_IMPORT_WITHOUT_STACK = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {_BLOCKED!r}:
            raise ImportError("not on the GPU machine: " + name)
sys.meta_path.insert(0, Block())
import pipeline.training.loop, pipeline.training.dataset, pipeline.training.bundle, pipeline.metrics
import pipeline.catalog.readers
import pipeline.catalog.spec
from pipeline.training.loop import fit, tokenize_splits
from pipeline.training.dataset import prepare_data
import pickle, os
spec = pickle.loads(open(os.environ["SPEC_PICKLE"], "rb").read())  # what bench_gpu --prepare carries
assert spec.name == "myntra" and spec.facets["category"].from_category_path
print("OK")
"""


@pytest.mark.unit
def test_the_training_path_imports_without_the_database_and_mlflow_stack(tmp_path):
    """Also the spec: parsed here (its schema needs pydantic), it unpickles there as bench_gpu carries it."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.catalog.spec import load_spec

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(load_spec("myntra")))
    env = {**os.environ, "SPEC_PICKLE": str(tmp_path / "spec.pkl")}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITHOUT_STACK], cwd=root, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-2000:]


@pytest.mark.unit
def test_new_model_keeps_fp32_master_weights_from_a_bf16_checkpoint(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from pipeline.training.bundle import default_encoder_path, new_model
    from pipeline.training.labels import FacetSlice, LabelMap

    src = default_encoder_path()
    AutoModel.from_pretrained(src).to(torch.bfloat16).save_pretrained(tmp_path / "enc")  # as bench_gpu --prepare
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp_path / "enc")
    lm = LabelMap(slugs=("color:black", "color:white"), facets=(FacetSlice("color", True, 0, 2),))
    model, _ = new_model(str(tmp_path / "enc"), lm)
    assert {p.dtype for p in model.parameters()} == {torch.float32}

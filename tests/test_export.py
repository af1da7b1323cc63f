"""ONNX export and model-repository generation (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fixtures_serving import GOLDEN


@pytest.fixture(scope="module")
def exported(golden_bundle, tmp_path_factory):
    from pipeline.catalog.samples import sample_titles
    from serving.export import export_onnx

    bundle = golden_bundle(6.0)
    out = tmp_path_factory.mktemp("onnx")
    return bundle, export_onnx(bundle, out, parity_texts=sample_titles(24), quantize=True)


@pytest.mark.model
def test_onnx_matches_pytorch_on_real_titles_with_dynamic_axes(exported):
    from pipeline.catalog.samples import sample_titles
    from pipeline.training.bundle import load_bundle
    from serving.export import onnx_logits, ort_session

    bundle_path, res = exported
    assert res.parity_max_abs_diff <= 1e-4 and res.parity_texts == 24
    b = load_bundle(bundle_path)
    sess = ort_session(res.fp32_path)
    texts = sample_titles(40)[-7:]  # another batch size, zh titles included (other sequence lengths)
    assert any(not t.isascii() for t in texts)
    diff = np.abs(onnx_logits(sess, b.tokenizer, texts, b.max_length, batch_size=7) - b.logits(texts)).max()
    assert diff <= 1e-4


@pytest.mark.model
def test_exported_graph_has_fused_attention_and_no_skip_layernorm(exported):
    import onnx

    _, res = exported
    ops = {n.op_type for n in onnx.load(res.fp32_path).graph.node}
    assert {"Attention", "EmbedLayerNormalization", "LayerNormalization"} <= ops
    assert "SkipLayerNormalization" not in ops
    int8_ops = {n.op_type for n in onnx.load(res.int8_path).graph.node}
    assert "QAttention" in int8_ops and "SkipLayerNormalization" not in int8_ops


@pytest.mark.unit
def test_split_skip_layernorm_computes_what_the_fused_node_did():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from serving.export import split_skip_layernorm

    h, rng = 8, np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=h).astype(np.float32), n) for n in ("g", "b", "bias")]
    node = helper.make_node("SkipLayerNormalization", ["x", "s", "g", "b", "bias"], ["y"], domain="com.microsoft",
                            epsilon=1e-5, name="sln")  # fmt: skip
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, h]) for n in ("x", "s")]
    graph = helper.make_graph([node], "g", io, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    feed = {n: rng.normal(size=(2, 3, h)).astype(np.float32) for n in ("x", "s")}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]

    fused = run(model)
    assert split_skip_layernorm(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add", "Add", "LayerNormalization"]
    np.testing.assert_allclose(run(model), fused, atol=1e-5)


@pytest.mark.model
def test_int8_is_written_but_not_served_without_a_test_split(exported):
    _, res = exported
    assert res.int8_path and res.int8_max_abs_diff is not None
    assert res.onnx_path == res.fp32_path and not res.int8_kept


@pytest.mark.unit
def test_config_lists_versions_io_and_instance_kind():
    from serving.repository import config_text

    cpu = config_text("product_tagger", [3, 2], registered_name="product-tagger")
    assert "versions: [ 2, 3 ]" in cpu and "KIND_CPU" in cpu and "max_batch_size: 64" in cpu
    assert 'string_value: "models:/product-tagger/3"' in cpu and "dynamic_batching" in cpu
    for name in ("TEXT", "TAGS", "SLUGS", "SCORES", "FACETS", "MODEL_URI"):
        assert f'name: "{name}"' in cpu
    gpu = config_text("m", [1], registered_name="r", gpu=True)
    assert "KIND_GPU" in gpu and "count: 1 " in gpu


def test_cpu_instances_follow_the_cores():
    from serving.repository import config_text, cpu_layout

    assert cpu_layout(1) == (1, 1) and cpu_layout(2) == (2, 1) and cpu_layout(16) == (4, 4)
    cfg = config_text("m", [1], registered_name="r", instances=3, ort_threads=2)
    assert "count: 3 kind: KIND_CPU" in cfg and 'key: "ort_threads" value: { string_value: "2" }' in cfg


@pytest.mark.model
def test_build_version_writes_a_self_contained_version_dir(golden_bundle, tmp_path):
    from serving.repository import build_version, versions_on_disk

    bundle = golden_bundle(6.5)
    vdir = build_version(bundle, tmp_path, "product_tagger", 7, "models:/product-tagger/7", golden=GOLDEN)
    names = {p.name for p in vdir.iterdir()}
    assert {"model.py", "labels.py", "model.onnx", "tokenizer.json", "label_map.json", "thresholds.json",
            "golden.json", "version.json"} <= names  # fmt: skip
    meta = json.loads((vdir / "version.json").read_text())
    assert meta["model_uri"] == "models:/product-tagger/7" and meta["export"]["parity_max_abs_diff"] <= 1e-4
    assert "max |logit diff|" in (vdir / "model_card.md").read_text()
    assert versions_on_disk(tmp_path, "product_tagger") == [7]
    assert "versions: [ 7 ]" in (tmp_path / "product_tagger" / "config.pbtxt").read_text()
    assert not list((tmp_path / "product_tagger").glob(".*tmp"))


@pytest.mark.model
def test_golden_bundle_answers_its_golden_examples_in_pytorch(golden_bundle):
    from pipeline.training.bundle import load_bundle

    preds = load_bundle(golden_bundle(6.0)).predict([g["text"] for g in GOLDEN])
    for g, p in zip(GOLDEN, preds, strict=True):
        assert sorted(t["slug"] for t in p) == sorted(g["expected"]), g["text"]


@pytest.mark.model
@pytest.mark.slow
def test_int8_is_served_only_within_half_an_f1_point_on_the_frozen_test_split(tiny_bundle, tmp_path):
    """A trained bundle carries its frozen test split; the int8 decision is made on it and recorded."""
    import json

    from pipeline.catalog.samples import sample_titles
    from serving.export import export_onnx
    from serving.repository import frozen_test_split

    texts, tags = frozen_test_split(tiny_bundle.path)
    metrics = json.loads((tiny_bundle.path / "metrics.json").read_text())
    assert texts and len(texts) == len(tags) == metrics["n_test"]
    res = export_onnx(tiny_bundle.path, tmp_path, parity_texts=sample_titles(8), quantize=True,
                      test_texts=texts, test_tags=tags)  # fmt: skip
    assert res.f1_fp32 is not None and res.f1_int8 is not None
    assert res.int8_kept == ((res.f1_fp32 - res.f1_int8) * 100 <= 0.5)
    assert res.onnx_path.endswith("model.int8.onnx" if res.int8_kept else "model.onnx")

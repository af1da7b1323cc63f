"""The served model over real gRPC: known answers, contract, server-side limits, client behaviour."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers.fixtures_serving import GOLDEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "tagger_direct"


@pytest.fixture(scope="module")
def direct(triton, serving_settings, golden_bundle):
    """The golden bundle served as its own model (no registry), version 1."""
    import tritonclient.grpc as grpcclient

    from serving.repository import build_version

    build_version(golden_bundle(6.0), serving_settings.model_repository, MODEL, 1, "models:/direct/1", golden=GOLDEN)
    c = grpcclient.InferenceServerClient(serving_settings.triton_grpc_url)
    c.load_model(MODEL)
    yield serving_settings.triton_grpc_url
    c.unload_model(MODEL)
    c.close()


@pytest.fixture
def client(direct):
    from serving.client import TaggerClient

    with TaggerClient(direct, MODEL, timeout=20) as c:
        yield c


def test_known_products_get_their_expected_tags(client):
    res = client.infer([g["text"] for g in GOLDEN], locale="en")
    for g, tags in zip(GOLDEN, res.tags, strict=True):
        assert sorted(t["slug"] for t in tags) == sorted(g["expected"]), g["text"]
        assert all(t["facet"] == t["slug"].split(":")[0] and 0 <= t["score"] <= 1 for t in tags)
    assert set(res.model_uris) == {"models:/direct/1"}


def test_top_k_caps_predicted_tags(client):
    tags = client.tag([GOLDEN[1]["text"]], top_k=1)[0]
    assert len(tags) == 1


def test_padded_tensors_agree_with_tags_json(direct):
    import tritonclient.grpc as g

    c = g.InferenceServerClient(direct)
    x = g.InferInput("TEXT", [2, 1], "BYTES")
    x.set_data_from_numpy(np.array([[GOLDEN[0]["text"].encode()], ["AHC黄金玻尿酸水乳面霜".encode()]], dtype=object))
    r = c.infer(MODEL, [x])
    tags = [json.loads(t[0]) for t in r.as_numpy("TAGS")]
    slugs, scores = r.as_numpy("SLUGS"), r.as_numpy("SCORES")
    assert slugs.shape == scores.shape == r.as_numpy("FACETS").shape
    assert [s.decode() for s in slugs[0] if s] == [t["slug"] for t in tags[0]]
    assert np.allclose(scores[0][: len(tags[0])], [t["score"] for t in tags[0]])
    c.close()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "TEXT item 0 is empty"),
        ("   ", "TEXT item 0 is empty"),
        ("x" * 5000, "5000 bytes, over the limit of 4096"),
        (b"Puma \xff\xfe shoes", "TEXT item 0 is not valid UTF-8"),
    ],
)
def test_bad_texts_get_clear_errors_and_the_server_stays_up(client, bad, message):
    from pipeline.errors import ServingError

    with pytest.raises(ServingError, match=message):
        client.tag([GOLDEN[0]["text"], bad][1:])
    assert client.tag([GOLDEN[0]["text"]])[0]  # still serving


def test_batch_over_the_maximum_and_bad_top_k_are_refused(client):
    from pipeline.errors import ServingError

    with pytest.raises(ServingError, match="batch-size must be <= 64"):
        client._infer_chunk(["Puma Men Grey T-shirt"] * 65, {})
    with pytest.raises(ServingError, match="top_k=0 must be a positive integer"):
        client.tag(["Puma Men Grey T-shirt"], top_k=0)


def test_client_batches_large_inputs_and_one_response_per_request(client, direct):
    from serving.client import TaggerClient

    texts = [g["text"] for g in GOLDEN] * 40  # 160 > 64: three requests
    assert [sorted(t["slug"] for t in tags) for tags in client.tag(texts)] == [
        sorted(g["expected"]) for g in GOLDEN
    ] * 40
    sizes = [1, 3, 16, 64, 2, 7, 1, 33]  # mixed batch sizes, concurrently: dynamic batcher merges them

    def one(n):
        with TaggerClient(direct, MODEL) as c:
            return len(c.tag(texts[:n]))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, sizes)) == sizes


def test_asyncio_client_and_name_enrichment(direct):
    from serving.client import TaggerClient

    names = {"color:blue": {"zh": "蓝色", "en": "Blue"}}

    async def go():
        c = TaggerClient(direct, MODEL, names=names, max_batch=2)
        try:
            return await c.atag([g["text"] for g in GOLDEN], locale="zh")
        finally:
            await c.aclose()

    tags = asyncio.run(go())
    assert len(tags) == len(GOLDEN)
    blue = [t for t in tags[0] if t["slug"] == "color:blue"][0]
    assert blue["name"] == "蓝色"


def test_unreachable_server_is_retried_then_named(tmp_path):
    from pipeline.errors import ServingError
    from serving.client import TaggerClient
    from serving.server import free_port

    c = TaggerClient(f"127.0.0.1:{free_port()}", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServingError, match="is the Triton server running"):
        c.tag(["Puma Men Grey T-shirt"])


def _served_as_its_bundle_predicts(settings, name: str, bundle_path, texts: list[str]) -> tuple[object, list]:
    """Build ``bundle_path`` as Triton model ``name`` v1, load it, tag ``texts`` over gRPC, unload; assert the tags
    and scores equal what the bundle predicts in PyTorch. Returns (the version folder, the served tags)."""
    import tritonclient.grpc as grpcclient

    from pipeline.training.bundle import load_bundle
    from serving.client import TaggerClient
    from serving.repository import build_version

    vdir = build_version(bundle_path, settings.model_repository, name, 1, f"models:/{name}/1", golden=[])
    want = load_bundle(bundle_path).predict(texts)
    admin = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    admin.load_model(name)
    try:
        with TaggerClient(settings.triton_grpc_url, name, timeout=60) as c:
            got = c.tag(texts)
    finally:
        admin.unload_model(name)
        admin.close()
    for w, g in zip(want, got, strict=True):
        assert [t["slug"] for t in g] == [t["slug"] for t in w]
        assert np.allclose([t["score"] for t in g], [t["score"] for t in w], atol=1e-3)
    return vdir, got


def test_a_hybrid_version_serves_the_fused_tags_its_bundle_predicts(triton, serving_settings, tiny_bundle):
    """The trained (hybrid) bundle through Triton: encoder ONNX + the NumPy TF-IDF half, fused server-side."""
    from pipeline.catalog.samples import sample_titles

    vdir, _ = _served_as_its_bundle_predicts(serving_settings, "tagger_hybrid", tiny_bundle.path, sample_titles(24))
    assert (vdir / "tfidf.npz").exists() and (vdir / "tfidf.py").exists()


def test_an_e5_version_round_trips_chinese_text_through_triton(triton, serving_settings, e5_bundle):
    """The Chinese catalog's e5-small bundle (trimmed vocabulary, ``query: `` prefix inside its tokenizer) served by
    Triton tags Chinese titles exactly as the bundle does in PyTorch."""
    lines = (e5_bundle.path / "test_split.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines][:16]
    texts += ["香港直邮韩国AHC黄金水乳霜套盒", "欧莱雅男士洗面奶控油补水～100ml"]  # characters the slice lacks
    vdir, got = _served_as_its_bundle_predicts(serving_settings, "tagger_e5", e5_bundle.path, texts)
    assert "query: " in (vdir / "tokenizer.json").read_text(encoding="utf-8")
    assert any(got), "the tiny e5 tagger predicted nothing at all"


def test_products_sent_as_json_are_built_into_text_by_the_served_versions_own_template(
    triton, serving_settings, tiny_bundle
):
    """``input=product``: the version builds each product's text with the template in its ``version.json`` (here a
    template with brand, a capped description and one attribute), exactly as ``pipeline.catalog.text`` does in
    training; a product without a title, bad JSON or an unknown input kind is one clear error."""
    import tritonclient.grpc as grpcclient

    from pipeline.catalog.text import build_text
    from pipeline.errors import ServingError
    from serving.client import TaggerClient
    from serving.repository import build_version

    name = "tagger_products"
    vdir = build_version(tiny_bundle.path, serving_settings.model_repository, name, 1, f"models:/{name}/1", golden=[])
    from pipeline.catalog.text import part

    template = [part("title"), part("brand"), part("description", 20), part("attributes.material")]
    meta = json.loads((vdir / "version.json").read_text())
    assert meta["text_template"] == json.loads((tiny_bundle.path / "bundle.json").read_text())["text_template"]
    (vdir / "version.json").write_text(json.dumps({**meta, "text_template": template}))
    products = [
        {"title": "Puma Men Grey T-shirt", "brand": "Puma", "description": "Soft cotton tee for summer runs " * 3,
         "attributes": {"material": "Cotton", "year": "2012"}},
        {"title": "Nike Women Black Running Shoes", "description": None, "attributes": {}},
        {"title": "Lavie Women Brown Handbag", "brand": "Lavie"},
    ]  # fmt: skip
    admin = grpcclient.InferenceServerClient(serving_settings.triton_grpc_url)
    admin.load_model(name)
    try:
        with TaggerClient(serving_settings.triton_grpc_url, name, timeout=60) as c:
            as_products = c.infer_products(products)
            as_texts = c.infer([build_text(p, template) for p in products])
            assert (
                build_text(products[0], template)
                == "Puma Men Grey T-shirt | Puma | Soft cotton tee for | material: Cotton"
            )
            assert as_products.tags == as_texts.tags
            assert as_products.tags != c.infer([p["title"] for p in products]).tags  # the template mattered
            for items, message in [
                (["{not json"], "TEXT item 0 is not a product JSON object"),
                (['{"brand": "Puma"}'], "TEXT item 0 is not a product with a title"),
                (['{"title": "x", "attributes": ["a"]}'], "TEXT item 0: attributes must be an object"),
            ]:
                with pytest.raises(ServingError, match=message):
                    c._infer_chunk(items, {"input": "product"})
            with pytest.raises(ServingError, match="parameter input='xml' must be 'text' or 'product'"):
                c._infer_chunk(["Puma Men Grey T-shirt"], {"input": "xml"})
            again = c.infer_products(products[:1]).tags[0]  # still serving (alone in its batch: scores within 1e-3)
            assert [t["slug"] for t in again] == [t["slug"] for t in as_products.tags[0]]
    finally:
        admin.unload_model(name)
        admin.close()

"""Deploy/rollback against a real tritonserver and the real registry (MLflow store + alias_events)."""

from __future__ import annotations

import threading
import time

import pytest
from helpers.fixtures_serving import GOLDEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def versions(serving_settings, golden_bundle):
    """Two registered versions with the same answers and other weights; v2 is the challenger."""
    from pipeline.registry import register_bundle

    return [register_bundle(serving_settings, golden_bundle(s)).version for s in (6.0, 7.0)]


def _served(settings) -> set[str]:
    from serving.client import TaggerClient

    with TaggerClient(settings.triton_grpc_url, settings.triton_model_name) as c:
        res = c.infer([g["text"] for g in GOLDEN])
    for g, tags in zip(GOLDEN, res.tags, strict=True):
        assert sorted(t["slug"] for t in tags) == sorted(g["expected"])
    return set(res.model_uris)


def _uri(settings, v: int) -> str:
    return f"models:/{settings.registered_model_name}/{v}"


def test_deploy_serves_the_version_and_moves_champion(triton, serving_settings, versions):
    from pipeline import registry
    from serving.deploy import deploy

    v1 = versions[0]
    res = deploy(serving_settings, v1, actor="test", reason="first")
    assert res.served_versions == [v1] and res.alias_moved and res.smoke_examples == len(GOLDEN)
    assert registry.get_alias(serving_settings, "champion") == v1
    assert _served(serving_settings) == {_uri(serving_settings, v1)}
    assert list((serving_settings.home_dir / "deployments").glob(f"*-deploy-v{v1}.json"))


def test_swap_under_concurrent_load_loses_no_request(triton, serving_settings, versions):
    from pipeline import registry
    from serving.client import TaggerClient
    from serving.deploy import deploy

    v1, v2 = versions[:2]
    stop, errors, seen, count = threading.Event(), [], set(), [0]

    def hammer():
        with TaggerClient(serving_settings.triton_grpc_url, serving_settings.triton_model_name, retries=0) as c:
            while not stop.is_set():
                try:
                    seen.update(c.infer([g["text"] for g in GOLDEN[:2]]).model_uris)
                    count[0] += 1
                except Exception as exc:  # any failure fails the test
                    errors.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    try:
        res = deploy(serving_settings, actor="test", reason="challenger")  # default: the challenger
    finally:
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and count[0] > 20
    assert res.version == v2 and res.served_versions == [v1, v2]  # default: the challenger
    assert registry.get_alias(serving_settings, "champion") == v2
    assert seen == {_uri(serving_settings, v1), _uri(serving_settings, v2)}


def test_failed_smoke_test_leaves_champion_and_serving_unchanged(triton, serving_settings, versions, golden_bundle):
    from pipeline import registry
    from pipeline.errors import DeployError
    from serving.deploy import deploy

    impossible = [{"text": GOLDEN[0]["text"], "expected": ["color:white"]}]
    v3 = registry.register_bundle(serving_settings, golden_bundle(8.0, golden_file=impossible)).version
    before = registry.get_alias(serving_settings, "champion")
    with pytest.raises(DeployError, match=r"smoke test of version \d+ failed on 1/1 golden examples.*color:white"):
        deploy(serving_settings, v3, actor="test")
    assert registry.get_alias(serving_settings, "champion") == before
    assert _served(serving_settings) == {_uri(serving_settings, before)}


def test_rollback_serves_the_previous_version(triton, serving_settings, versions):
    from pipeline import registry
    from serving.deploy import rollback

    before = registry.get_alias(serving_settings, "champion")
    res = rollback(serving_settings, actor="test", reason="bad numbers")
    assert res.version == versions[0] and res.previous == before
    assert registry.get_alias(serving_settings, "champion") == versions[0]
    assert _served(serving_settings) == {_uri(serving_settings, versions[0])}


def test_deploy_without_server_says_what_to_do(triton, serving_settings, versions):
    from pipeline.errors import DeployError
    from serving.deploy import deploy
    from serving.server import free_port

    down = serving_settings.model_copy(
        update={
            "triton_grpc_url": f"127.0.0.1:{free_port()}",
            "triton_http_url": f"127.0.0.1:{free_port()}",
            "triton_metrics_port": free_port(),
        }
    )
    with pytest.raises(DeployError, match="is not ready; start it with `tagger serve`"):
        deploy(down, versions[1], actor="test")
    # this home's server is up, but on other addresses than these settings name: said, not used
    moved = serving_settings.model_copy(update={"triton_grpc_url": f"127.0.0.1:{free_port()}"})
    with pytest.raises(DeployError, match=r"held by this home's own Triton \(pid \d+\), started with other"):
        deploy(moved, versions[1], actor="test")


@pytest.mark.unit
def test_deploy_reaches_every_replica_behind_a_headless_service(monkeypatch):
    """A headless Service resolves to one address per ready replica: deploy loads on each of them."""
    import socket

    from serving.deploy import replica_urls

    fake = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 8001)) for ip in ("10.1.0.7", "10.1.0.5", "10.1.0.5")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: fake)
    assert replica_urls("triton-replicas.catalog-tagger.svc:8001") == ["10.1.0.5:8001", "10.1.0.7:8001"]
    loop = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 8001, 0, 0)),
        (socket.AF_INET, 1, 6, "", ("127.0.0.1", 8001)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: loop)
    assert replica_urls("localhost:8001") == ["localhost:8001"]  # one local server, not two replicas

"""Each home owns its services: ports chosen once and recorded, foreign servers never used, exactly what a home
started is shown and stopped. Real tritonserver processes, a real listener socket, the real CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from helpers.fixtures_serving import GOLDEN

from pipeline.settings import Settings

TAGGER = str(Path(sys.executable).with_name("tagger"))


@pytest.fixture
def listener():
    """A process-local TCP listener on a free loopback port: something that is not this home's Triton."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    return subprocess.run([TAGGER, *args], env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


# ---- unit: the port record ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_home_picks_free_loopback_ports_once_and_reuses_them(tmp_path):
    a1 = Settings(home=tmp_path / "a")
    a2 = Settings(home=tmp_path / "a")  # a later process of the same home
    b = Settings(home=tmp_path / "b")
    assert a1.triton_grpc_url.startswith("127.0.0.1:") and not a1.triton_is_external
    assert (a1.triton_grpc_url, a1.triton_http_url, a1.triton_metrics_port) == (
        a2.triton_grpc_url,
        a2.triton_http_url,
        a2.triton_metrics_port,
    )
    assert a1.triton_grpc_url != b.triton_grpc_url
    ports = {a1.triton_grpc_url, a1.triton_http_url, str(a1.triton_metrics_port)}
    assert len(ports) == 3
    recorded = json.loads((tmp_path / "a" / "services" / "ports.json").read_text())
    assert f"127.0.0.1:{recorded['triton_grpc_url']}" == a1.triton_grpc_url
    assert a1.auto_ports == {"triton_grpc_url", "triton_http_url", "triton_metrics_port"}


@pytest.mark.unit
def test_only_ports_the_home_chose_move_and_the_move_is_recorded(tmp_path):
    s = Settings(home=tmp_path, triton_grpc_url="127.0.0.1:65000")
    assert s.auto_ports == {"triton_http_url", "triton_metrics_port"}
    moved = s.with_new_ports()
    assert moved.triton_grpc_url == "127.0.0.1:65000"  # the user's choice never moves
    assert moved.triton_http_url != s.triton_http_url
    assert Settings(home=tmp_path).triton_http_url == moved.triton_http_url  # later processes follow
    assert Settings(home=tmp_path, triton_grpc_url="triton:8001").triton_is_external
    assert not Settings(home=tmp_path, triton_grpc_url="triton:8001", triton_external=False).triton_is_external


@pytest.mark.unit
def test_record_of_a_recycled_pid_is_not_alive(tmp_path):
    from pipeline.core import records

    me = psutil.Process()
    rec = records.ServiceRecord("x", me.pid, ["python"], "127.0.0.1", {}, create_time=me.create_time())
    assert records.alive(rec)
    assert not records.alive(records.ServiceRecord("x", me.pid, ["python"], "127.0.0.1", {}, create_time=1.0))


@pytest.mark.unit
def test_a_taken_address_is_seen_and_an_explicit_one_is_refused_in_one_line(tmp_path, listener):
    from pipeline.errors import ServiceError
    from serving.server import claim_address, foreign_address

    explicit = Settings(home=tmp_path, triton_grpc_url=f"127.0.0.1:{listener}")
    assert foreign_address(explicit) == ("triton_grpc_url", "127.0.0.1", listener)
    with pytest.raises(ServiceError) as exc:
        claim_address(explicit)
    msg = str(exc.value)
    assert "\n" not in msg and f"127.0.0.1:{listener}" in msg and "TAGGER_TRITON_GRPC_URL" in msg
    assert "TAGGER_TRITON_EXTERNAL" in msg

    # the same port, but one this home chose: the home moves to free ports instead
    auto = Settings(home=tmp_path / "auto")
    (tmp_path / "auto" / "services" / "ports.json").write_text(
        json.dumps({"triton_grpc_url": listener, "triton_http_url": 1, "triton_metrics_port": 2})
    )
    auto = Settings(home=tmp_path / "auto")
    assert auto.triton_grpc_url == f"127.0.0.1:{listener}"
    moved = claim_address(auto)
    assert moved.triton_grpc_url != auto.triton_grpc_url and foreign_address(moved) is None
    assert Settings(home=tmp_path / "auto").triton_grpc_url == moved.triton_grpc_url
    # someone else's server by design is used as it is
    assert claim_address(explicit.model_copy(update={"triton_external": True})) is not None


# ---- integration: real servers -------------------------------------------------------------------------------
@pytest.mark.unit
def test_two_homes_on_one_shared_postgres_get_their_own_airflow_metadata_database(tmp_path):
    from pipeline.orchestration.deployment import metadata_database_name

    shared = "postgresql+psycopg://postgres@127.0.0.1:5432/shop"
    a = Settings(home=tmp_path / "a", database_url=shared)
    b = Settings(home=tmp_path / "b", database_url=shared)
    assert metadata_database_name(a) != metadata_database_name(b)
    assert metadata_database_name(a) == metadata_database_name(Settings(home=tmp_path / "a", database_url=shared))
    assert metadata_database_name(Settings(home=tmp_path / "c")) == "airflow"  # its own embedded server


@pytest.mark.integration
@pytest.mark.slow
def test_two_homes_side_by_side_each_serve_their_own_model(tmp_path, session_db_url, session_mlflow_uri, golden_bundle):
    from pipeline.orchestration.steps import ensure_triton
    from pipeline.registry import register_bundle
    from serving.client import TaggerClient
    from serving.deploy import deploy
    from serving.server import is_ready, own_server, stop_recorded

    homes = {}
    for name in ("a", "b"):
        s = Settings(
            home=tmp_path / name,
            database_url=session_db_url,
            mlflow_tracking_uri=session_mlflow_uri,
            mlflow_artifact_location=(tmp_path / name / "mlartifacts").as_uri(),
            registered_model_name=f"home-{name}-{uuid.uuid4().hex[:6]}",
            triton_int8=False,
        )
        version = register_bundle(s, golden_bundle(6.0)).version
        homes[name] = (s, version)
    try:
        for s, version in homes.values():
            assert ensure_triton(s) == s  # started: its own free ports
            deploy(s, version, actor="test", reason="two homes")
        (a, va), (b, vb) = homes["a"], homes["b"]
        assert a.triton_grpc_url != b.triton_grpc_url
        pid_a = own_server(a).pid
        for s, version in ((a, va), (b, vb)):
            with TaggerClient(s.triton_grpc_url, s.triton_model_name) as c:
                assert c.infer([GOLDEN[0]["text"]]).model_uris == [f"models:/{s.registered_model_name}/{version}"]
            # bound to loopback only, as the settings say
            listening = {
                c.laddr
                for c in psutil.Process(own_server(s).pid).net_connections("inet")
                if c.status == psutil.CONN_LISTEN
            }
            assert len(listening) == 3 and all(_loopback(addr.ip) for addr in listening), listening
        assert ensure_triton(a) == a and own_server(a).pid == pid_a  # a later run reuses its own server

        assert stop_recorded(a)
        assert not psutil.pid_exists(pid_a) or psutil.Process(pid_a).status() == psutil.STATUS_ZOMBIE
        assert not is_ready(a.triton_grpc_url, timeout=1.0)
        with TaggerClient(b.triton_grpc_url, b.triton_model_name) as c:  # the other home serves on
            assert c.infer([GOLDEN[0]["text"]]).model_uris == [f"models:/{b.registered_model_name}/{vb}"]
    finally:
        for s, _ in homes.values():
            stop_recorded(s)


@pytest.mark.integration
@pytest.mark.slow
def test_deploy_into_a_foreign_listener_fails_in_one_line_and_champion_stays(
    tmp_path, session_db_url, session_mlflow_uri, golden_bundle, listener
):
    from pipeline import registry
    from pipeline.registry import register_bundle

    s = Settings(
        home=tmp_path,
        database_url=session_db_url,
        mlflow_tracking_uri=session_mlflow_uri,
        mlflow_artifact_location=(tmp_path / "mlartifacts").as_uri(),
        registered_model_name=f"foreign-{uuid.uuid4().hex[:6]}",
    )
    v1, v2 = (register_bundle(s, golden_bundle(x)).version for x in (6.0, 7.0))
    registry.promote(s, v1, actor="test", reason="the serving one")
    env = {
        "TAGGER_HOME": str(tmp_path),
        "TAGGER_DATABASE_URL": session_db_url,
        "TAGGER_MLFLOW_TRACKING_URI": session_mlflow_uri,
        "TAGGER_MLFLOW_ARTIFACT_LOCATION": (tmp_path / "mlartifacts").as_uri(),
        "TAGGER_REGISTERED_MODEL_NAME": s.registered_model_name,
        "TAGGER_TRITON_GRPC_URL": f"127.0.0.1:{listener}",
    }
    out = _cli(["deploy", str(v2)], env)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert f"127.0.0.1:{listener}" in lines[0] and "TAGGER_TRITON_GRPC_URL" in lines[0]
    assert "nothing was changed" in lines[0]
    assert registry.get_alias(s, registry.CHAMPION) == v1
    assert not (s.model_repository / s.triton_model_name / str(v2)).exists()


@pytest.mark.integration
@pytest.mark.slow
def test_demo_refuses_a_foreign_server_before_any_work(tmp_path, listener):
    t0 = time.monotonic()
    out = _cli(["demo"], {"TAGGER_HOME": str(tmp_path), "TAGGER_TRITON_GRPC_URL": f"127.0.0.1:{listener}"})
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr and f"127.0.0.1:{listener}" in out.stderr
    assert "Tag library" not in out.stdout  # stopped before step 1
    assert not (tmp_path / "pgdata").exists()  # not even the database was started
    assert took < 60, f"the demo took {took:.0f} s to refuse"


@pytest.mark.integration
def test_status_of_a_home_that_started_nothing_claims_nothing(tmp_path, triton):
    """The session's Triton answers on an address this fresh home is told to use: shown as foreign, not ours,
    and `services stop` there leaves it running."""
    from serving.server import is_ready

    env = {"TAGGER_HOME": str(tmp_path), "TAGGER_TRITON_GRPC_URL": triton.settings.triton_grpc_url}
    out = _cli(["services", "status", "--json"], env)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["home"] == str(tmp_path.resolve())
    assert [r["name"] for r in rep["services"] if r["own"]] == []
    triton_row = next(r for r in rep["services"] if r["name"] == "triton")
    assert triton_row["state"] == "foreign" and triton_row["pid"] is None
    assert rep["triton"]["grpc_url"] == triton.settings.triton_grpc_url and not rep["triton"]["ready"]

    out = _cli(["services", "stop"], env)
    assert out.returncode == 0 and "Triton" not in out.stdout, out.stdout
    assert is_ready(triton.settings.triton_grpc_url)

    # the home that did start it says so
    ts = triton.settings
    env = {
        "TAGGER_HOME": str(ts.home_dir),
        "TAGGER_TRITON_GRPC_URL": ts.triton_grpc_url,
        "TAGGER_TRITON_HTTP_URL": ts.triton_http_url,
        "TAGGER_TRITON_METRICS_PORT": str(ts.triton_metrics_port),
    }
    own = _cli(["services", "status", "--json"], env)
    row = next(r for r in json.loads(own.stdout)["services"] if r["name"] == "triton")
    assert row["own"] and row["state"] == "running" and row["pid"] == triton.proc.pid

"""tritonserver lifecycle: start on a repository, stop with nothing left behind."""

from __future__ import annotations

import os
import uuid

import pytest
from helpers.fixtures_serving import GOLDEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_server_starts_loads_and_stops_without_leftovers(tmp_path, golden_bundle):
    from pipeline.settings import Settings
    from serving.client import TaggerClient
    from serving.repository import build_version
    from serving.server import SHM_DIR, TritonServer, free_port, server_state

    s = Settings(home=tmp_path / "home", triton_grpc_url=f"127.0.0.1:{free_port()}",
                 triton_http_url=f"127.0.0.1:{free_port()}", triton_metrics_port=free_port())  # fmt: skip
    build_version(golden_bundle(6.0), s.model_repository, s.triton_model_name, 4, "models:/x/4", golden=GOLDEN)
    assert server_state(s) == "stopped"
    server = TritonServer(s)  # loads the configured model because its folder exists
    server.start()
    pid, prefix = server.proc.pid, server.shm_prefix
    try:
        assert server_state(s) == "running" and server.pid_file.exists()
        assert TaggerClient(s.triton_grpc_url, s.triton_model_name).infer([GOLDEN[0]["text"]]).model_uris == [
            "models:/x/4"
        ]
        assert list(SHM_DIR.glob(f"{prefix}*")), "the Python backend should be using shared memory"
        from pipeline.errors import ServiceError

        with pytest.raises(ServiceError, match="this home's Triton already runs"):
            TritonServer(s).start()
    finally:
        server.stop()
    assert not _group_alive(pid), "tritonserver or a backend stub survived stop()"
    assert not list(SHM_DIR.glob(f"{prefix}*"))
    assert not server.pid_file.exists() and server_state(s) == "stopped"


def test_bad_repository_fails_start_with_the_log(tmp_path):
    from pipeline.errors import ServiceError
    from pipeline.settings import Settings
    from serving.server import TritonServer, free_port

    s = Settings(home=tmp_path / "home", triton_grpc_url=f"127.0.0.1:{free_port()}",
                 triton_http_url=f"127.0.0.1:{free_port()}", triton_metrics_port=free_port())  # fmt: skip
    broken = s.model_repository / f"m{uuid.uuid4().hex[:4]}"
    broken.mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nthis is not protobuf text\n')
    with pytest.raises(ServiceError, match="tritonserver"):
        TritonServer(s, load=[broken.name]).start(timeout=60)


def test_ensure_triton_reuses_its_own_server_and_refuses_one_another_home_started(triton, tmp_path):
    from pipeline.errors import ServiceError
    from pipeline.orchestration.steps import ensure_triton

    ours = triton.settings
    assert ensure_triton(ours) == ours  # started from this home (its record): reused as it is
    other = ours.model_copy(update={"home": tmp_path / "another-home"})
    with pytest.raises(ServiceError) as exc:
        ensure_triton(other)  # the same address, from a home that did not start the server there
    msg = str(exc.value)
    assert ours.triton_grpc_url in msg and "TAGGER_TRITON_GRPC_URL" in msg and str(tmp_path / "another-home") in msg


def test_server_never_inherits_stdin_and_a_model_that_fails_to_load_leaves_it_ready(triton, serving_settings):
    """An Airflow 3 task's stdin is its supervisor's socket; a Triton started from it must not get that (the Python
    backend starts stubs through bash, which then sources ~/.bashrc and may pick another interpreter). A model
    that fails to load (a broken candidate) must not make the server look down to the next deploy."""
    import tritonclient.grpc as grpcclient

    from serving.server import is_ready

    assert os.readlink(f"/proc/{triton.proc.pid}/fd/0") == "/dev/null"
    broken = serving_settings.model_repository / "broken_model"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.py").write_text("raise RuntimeError('this model cannot load')\n")
    (broken / "config.pbtxt").write_text('name: "broken_model"\nbackend: "python"\nmax_batch_size: 0\n'
                                         'input [{name: "X", data_type: TYPE_FP32, dims: [1]}]\n'
                                         'output [{name: "Y", data_type: TYPE_FP32, dims: [1]}]\n')  # fmt: skip
    client = grpcclient.InferenceServerClient(serving_settings.triton_grpc_url)
    try:
        with pytest.raises(Exception, match="cannot load"):
            client.load_model("broken_model")
        assert is_ready(serving_settings.triton_grpc_url)
    finally:
        client.close()

"""The DAGs on a real Airflow 3 deployment (``tagger airflow up``): scheduler, dag-processor, triggerer,
api-server and a Celery worker on the machine's Redis, metadata in Postgres. One deployment for the module, a
240-row Myntra slice, tiny training. Nothing here is mocked: events go through the REST API, tasks run in
Celery worker processes, results are read back from the registry, Triton and the database."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from helpers.data import myntra_slice
from helpers.env import home_env, tagger_env
from helpers.fixtures_train import TINY_OPTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CATALOG_URI = "tagger://catalog/snapshot"


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, fresh_database):
    """A running deployment for a home of its own; stopped (and its Triton too) at the end."""
    if not _redis_up():
        pytest.fail("the Celery broker (Redis at 127.0.0.1:6379) does not answer: this machine and CI run one")
    from pipeline.catalog.importers import import_catalog
    from pipeline.orchestration.deployment import AirflowAPI, Deployment
    from serving.server import stop_recorded

    root = tmp_path_factory.mktemp("airflow-deployment")
    policy = root / "policy.yaml"
    # a reviewer approves every candidate: the retrain test sees the run park in wait_for_review
    policy.write_text(yaml.safe_dump({"name": "test-manual", "review": "manual", "floors": {"micro_f1": 0.05}}))
    env = home_env(
        fresh_database,
        root,
        "af",
        airflow_database_url=fresh_database("af_meta"),
        registered_model_name=f"af-{uuid.uuid4().hex[:6]}",
        gate_policy=policy,
        triton_int8="false",
        retry_delay_seconds=2,
        review_poke_seconds=5,
        airflow_task_heartbeat_timeout=30,  # a killed worker's task is failed (and retried) after 30 s
    )
    with tagger_env(env) as (settings, _):
        source = myntra_slice(root / "myntra_240.csv", 240)
        import_catalog(settings, source, "myntra")
        dep = Deployment(settings)
        try:
            dep.up(wait_s=300)
            with AirflowAPI(dep.api_url) as api:
                yield {"dep": dep, "api": api, "settings": settings, "source": source, "policy": policy}
        finally:
            dep.down(timeout_s=10)
            stop_recorded(settings)


def test_components_run_as_this_homes_recorded_processes(deployment):
    from pipeline.core import records

    dep = deployment["dep"]
    names = {r.name for r in records.all_records(deployment["settings"]) if records.alive(r)}
    assert {f"airflow-{c}" for c in ("scheduler", "dag-processor", "triggerer", "api-server", "worker-1")} <= names
    env = dep.env()
    assert env["AIRFLOW__CORE__EXECUTOR"].endswith("CeleryExecutor")
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == dep.key_prefix
    pools = deployment["api"].request("GET", "/pools")["pools"]
    assert {"name": "training", "slots": 1} in [{"name": p["name"], "slots": p["slots"]} for p in pools]


def _kill_worker(dep) -> int:
    """What a dead worker machine looks like: SIGKILL to the Celery worker and every process under it (the
    supervisor and the task process it forked, which runs in a process group of its own)."""
    import psutil

    pid = dep.pid("worker-1")
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)
    return pid


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_asset_event_retrain_survives_a_killed_worker_waits_for_review_then_serves(deployment):
    """Cases 1, 2 and 3 in one run (one training, to keep `make test` in budget):
    1. a catalog Asset event (what a shop's feed job emits) starts tagger_retrain through the scheduler;
    3. the Celery worker is SIGKILLed during `train` after a checkpoint: the scheduler fails the try on the
       missing heartbeat, retries it on a restarted worker, which resumes from the checkpoint (its log says so);
    2. the policy asks a reviewer, so wait_for_review reschedules (up_for_reschedule, no worker slot held) until
       `tagger models review V --approve`; then the run deploys V, Triton serves it, and V is the only version."""
    from pipeline import registry
    from pipeline.core import tracking
    from serving.client import TaggerClient

    api, settings, dep = deployment["api"], deployment["settings"], deployment["dep"]
    before = {r["dag_run_id"] for r in api.runs("tagger_retrain")}
    train = {**TINY_OPTIONS, "checkpoint_every": 8}  # 40 steps: killed after the first checkpoint
    api.emit_asset_event(CATALOG_URI, {"source": str(deployment["source"]), "spec": "myntra", "train": train})
    run_id = api.wait_for_run("tagger_retrain", after=before, timeout_s=120)
    assert run_id.startswith("asset_triggered__")

    # 3: kill the worker once training has checkpointed, then bring a worker back
    checkpoints = settings.home_dir / "checkpoints"
    _wait(lambda: list(checkpoints.glob("*/checkpoint.pt")), 400, "the first training checkpoint", poll=0.2)
    assert api.task_state("tagger_retrain", run_id, "train") == "running"
    killed = _kill_worker(dep)
    dep.up(wait_s=120)  # starts what is not running: a new worker-1
    assert dep.pid("worker-1") not in (None, killed)

    # 2: parked for the reviewer (after train's retry, evaluate, register, gate)
    _wait(
        lambda: (
            api.task_state("tagger_retrain", run_id, "wait_for_review") == "up_for_reschedule"
            or api.run("tagger_retrain", run_id)["state"] != "running"
        ),
        600,
        "wait_for_review",
        poll=2,
    )
    # Parked between pokes: sampled for a while, the sensor is up_for_reschedule (no worker slot) at times and
    # briefly running while it pokes (each poke is a short task process); nothing downstream starts meanwhile.
    samples = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        samples.append(api.summary("tagger_retrain", run_id))
        time.sleep(1)
    parked = [s["tasks"] for s in samples if s["tasks"]["wait_for_review"] == "up_for_reschedule"]
    assert parked, [s["tasks"]["wait_for_review"] for s in samples]
    assert all("running" not in tasks.values() for tasks in parked)  # parked: no task of the run holds a slot
    assert all(s["tasks"].get("deploy") in (None, "none") for s in samples)
    summary = samples[-1]
    assert summary["tasks"]["gate"] == "success"  # verdict needs-review: not a failure
    assert summary["tries"]["train"] == 2, summary
    resumed = api.task_log("tagger_retrain", run_id, "train", 2)
    assert "resumed from" in resumed and "at step" in resumed, resumed[-3000:]
    candidate = registry.get_alias(settings, registry.CHALLENGER)
    assert candidate is not None and registry.get_alias(settings, registry.CHAMPION) is None

    tagger = str(Path(sys.executable).with_name("tagger"))
    out = subprocess.run(
        [tagger, "models", "review", str(candidate), "--approve", "--reason", "checked"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    run = api.wait_finished("tagger_retrain", run_id, timeout_s=300)
    summary = api.summary("tagger_retrain", run_id)
    assert run["state"] == "success", summary
    assert set(summary["tasks"].values()) == {"success"}
    assert registry.get_alias(settings, registry.CHAMPION) == candidate
    versions = tracking.client(settings).search_model_versions(f"name = '{settings.registered_model_name}'")
    assert [int(v.version) for v in versions] == [candidate]  # the killed try registered nothing twice
    with TaggerClient(settings.triton_grpc_url, settings.triton_model_name) as client:
        served = client.infer(["Puma Men Grey T-shirt"]).model_uris
    assert served == [f"models:/{settings.registered_model_name}/{candidate}"]


def test_the_airflow_ui_shows_the_retrain_dag_in_headless_chromium(deployment, tmp_path):
    """The deployment's own UI, as a user opens it: the tagger_retrain page renders its tasks and its Asset
    schedule (JavaScript app, served by the api-server). The PNG is what the README shows."""
    from helpers.browser import headless_chromium
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = f"{deployment['dep'].api_url}/dags/tagger_retrain"
    # scheduled on two Assets (catalog snapshot, review decisions): the header counts them
    expected = ("tagger_retrain", "of 2 assets updated", "check_serving", "wait_for_review", "deploy", "smoke_test",
                "Latest Run")  # fmt: skip

    def body(b) -> str:
        return b.find_element(By.TAG_NAME, "body").text

    with headless_chromium() as browser:
        browser.get(url)
        try:  # the app renders in parts (the grid, then the Asset schedule from its own request): wait for all
            WebDriverWait(browser, 60).until(lambda b: all(text in body(b) for text in expected))
        except TimeoutException:
            missing = [text for text in expected if text not in body(browser)]
            browser.save_screenshot(str(tmp_path / "tagger_retrain_failed.png"))
            pytest.fail(f"{missing} not on {url} after 60 s (screenshot: {tmp_path / 'tagger_retrain_failed.png'})")
        shot = tmp_path / "tagger_retrain.png"
        browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_batch_tag_scheduled_twice_tags_every_product_exactly_once(deployment):
    """Case 4: two runs of tagger_batch_tag in a row through the scheduler and the Celery worker."""
    api, settings = deployment["api"], deployment["settings"]
    results = []
    for _ in range(2):
        run_id = api.trigger("tagger_batch_tag", {"batch_size": 64})
        run = api.wait_finished("tagger_batch_tag", run_id, timeout_s=300)
        assert run["state"] == "success", api.summary("tagger_batch_tag", run_id)
        results.append(run_id)
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            products = conn.scalar(sa.text("select count(*) from products"))
            tagged = conn.scalar(sa.text("select count(distinct product_pk) from product_tags where source='model'"))
            dupes = conn.scalar(
                sa.text(
                    "select count(*) from (select product_pk, tag_id from product_tags where source='model' "
                    "group by 1, 2 having count(*) > 1) d"
                )
            )
    finally:
        engine.dispose()
    assert products == 240 and tagged == 240 and dupes == 0
    assert len(set(results)) == 2


def test_services_status_shows_the_deployment_as_this_homes(deployment):
    import json

    out = subprocess.run(
        [str(Path(sys.executable).with_name("tagger")), "services", "status", "--json"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)["services"]}
    assert rows["airflow-scheduler"]["own"] and rows["airflow-api-server"]["state"] == "running"
    assert rows["triton"]["own"]  # started by the deploy task in a Celery worker, recorded in the home

"""DAG tests, levels 1 and 2: every DAG file imports cleanly without touching a database or the network,
and has the expected tasks and edges. Level 3 (real dag.test() runs) is in test_dag_runs.py."""

from __future__ import annotations

import socket
import warnings

import pytest

from pipeline.orchestration import airflow_local
from pipeline.settings import Settings

pytestmark = pytest.mark.unit

DAG_IDS = ("tagger_retrain", "tagger_batch_tag", "tagger_review_watch")


@pytest.fixture(scope="module")
def airflow_ready(tmp_path_factory):
    airflow_local.prepare(Settings(home=tmp_path_factory.mktemp("af")))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"DAG file opened a connection to {address} at parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_dags_folder_holds_exactly_our_dags():
    assert sorted(p.stem for p in airflow_local.DAGS_FOLDER.glob("*.py")) == sorted(DAG_IDS)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dag_imports_without_warnings_or_io(airflow_ready, no_network, dag_id):
    import sys

    heavy_before = {m for m in ("torch", "mlflow", "great_expectations", "tritonclient") if m in sys.modules}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dag = airflow_local.load_dag(dag_id)
    assert dag.dag_id == dag_id
    heavy_after = {m for m in ("torch", "mlflow", "great_expectations", "tritonclient") if m in sys.modules}
    assert heavy_after == heavy_before, f"parsing {dag_id} imported {heavy_after - heavy_before}"


def _edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_retrain_structure(airflow_ready):
    dag = airflow_local.load_dag("tagger_retrain")
    chain = [
        "check_serving",
        "validate",
        "train",
        "evaluate",
        "register",
        "gate",
        "wait_for_review",
        "deploy",
        "smoke_test",
    ]
    assert [t.task_id for t in dag.tasks if t.task_id != "find_suspects"] == chain
    # beside training: suspect labels of the same rows into the review queue
    assert _edges(dag) == set(zip(chain, chain[1:], strict=False)) | {("validate", "find_suspects")}
    tasks = {t.task_id: t for t in dag.tasks}
    assert (
        tasks["check_serving"].retries == 0 and tasks["validate"].retries == 0 and tasks["gate"].retries == 0
    )  # no retry on data/model verdicts
    assert tasks["train"].retries >= 1 and tasks["deploy"].retries >= 1  # infrastructure retries with back-off
    assert tasks["deploy"].retry_exponential_backoff
    assert tasks["train"].queue == "gpu"  # routed to a GPU worker in production
    # weekly, whenever a new catalog snapshot lands, and whenever reviewers decided enough (two Assets)
    assert dag.timetable.timetable.expression == "0 3 * * 1"
    condition = repr(dag.timetable.asset_condition)
    assert "AssetAny" in condition and "tagger://catalog/snapshot" in condition
    assert "tagger://review/decisions" in condition
    assert all(t.on_failure_callback for t in dag.tasks)


def test_batch_tag_structure(airflow_ready):
    dag = airflow_local.load_dag("tagger_batch_tag")
    assert [t.task_id for t in dag.tasks] == ["tag_new_products"]
    assert dag.max_active_runs == 1  # two overlapping runs would race on the watermark
    assert dag.timetable.expression == "0 * * * *"  # hourly


def test_review_watch_structure(airflow_ready):
    dag = airflow_local.load_dag("tagger_review_watch")
    assert [t.task_id for t in dag.tasks] == ["count_decisions"]
    assert [a.uri for a in dag.tasks[0].outlets] == ["tagger://review/decisions"]  # what tagger_retrain waits for
    assert dag.timetable.expression == "*/15 * * * *" and dag.max_active_runs == 1


@pytest.mark.parametrize(
    ("dag_id", "minutes_after_tick"),
    [(d, m) for d in DAG_IDS for m in ((0.5, 3, 10) if d == "tagger_review_watch" else (0.5, 3, 30))],
)  # 30 min after a tick is itself a tick of the 15-minute watch: 10 there
def test_unpausing_schedules_the_next_tick_not_a_run_now(airflow_ready, dag_id, minutes_after_tick, monkeypatch):
    """A deployment unpauses the DAGs: that must not start a run for the latest past tick (a whole-catalog
    retrain) at once, however soon after a tick it happens. Asked the way the scheduler asks, of the timetable as
    the scheduler reads it (serialized and back), for a DAG with no runs yet, at a clock set just after a tick."""
    import pendulum
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables import trigger
    from airflow.timetables.base import TimeRestriction

    dag = airflow_local.load_dag(dag_id)
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    tick = pendulum.datetime(2026, 12, 7, 3, 0, tz="UTC")  # a Monday 03:00: a tick of both DAGs
    now = tick.add(seconds=int(minutes_after_tick * 60))
    monkeypatch.setattr(trigger, "utcnow", lambda: now)  # the clock the timetable reads
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup),
    )
    assert info is not None and info.run_after > now, f"{dag_id} would run at once ({info.run_after})"

"""tagger_retrain: check serving -> validate -> train -> evaluate -> register -> gate -> (review) -> deploy -> smoke.

Beside training, ``find_suspects`` puts the suspect human labels of the rows it trains on in the review queue.

``check_serving`` first: a deploy target held by a process this home did not start fails the run in seconds.

Runs weekly, whenever a new catalog snapshot lands (the ``catalog`` Asset) and whenever reviewers have decided
enough on one catalog (the ``review`` Asset, from ``tagger_review_watch``). The event's ``extra`` may carry
``source``/``spec``/``train``, used where the run's params leave them unset. Wiring only: every task calls
one step of ``pipeline.orchestration.steps`` and passes references (snapshot id, run id, registry version).
Validation failures and rejected models fail fast without retries; infrastructure steps retry with back-off.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pipeline.orchestration.assets import CATALOG, REVIEW
from pipeline.orchestration.review_sensor import ReviewSensor
from pipeline.settings import DagSettings
from pipeline.training.options import json_schema as train_options_schema  # standard library only

PARSE = DagSettings()  # environment only, no I/O: retry delay, review poke interval
INFRA_RETRIES = {
    "retries": 3,
    "retry_delay": timedelta(seconds=PARSE.retry_delay_seconds),
    "retry_exponential_backoff": True,
}
NO_RETRY = {"retries": 0}
# Unpausing waits for the next tick instead of running the latest past one at once (a whole-catalog retrain).
# Needs no start_date, and a zero window: Airflow treats run_immediately=False like None ("run the past tick
# when it is within 10% of the period"), so only timedelta(0) means "never the past tick".
NEXT_TICK_ONLY = timedelta(0)


def _settings():
    from pipeline.settings import get_settings

    return get_settings()


def _on_failure(context) -> None:
    """Say which step failed and why, in one line the on-call engineer can act on."""
    import logging

    ti = context["ti"]
    logging.getLogger("tagger_retrain").error(
        "tagger_retrain step %r failed (try %s): %s", ti.task_id, ti.try_number, context.get("exception")
    )


@dag(
    dag_id="tagger_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC", run_immediately=NEXT_TICK_ONLY),
        assets=(CATALOG | REVIEW),
    ),
    # no start_date: with one (and catchup=False) Airflow runs the latest past tick as soon as the DAG is unpaused
    catchup=False,
    max_active_runs=1,
    tags=["catalog-tagger"],
    default_args={"on_failure_callback": _on_failure},
    params={
        "source": Param(
            None,
            type=["null", "string"],
            description="Catalog path (relative to TAGGER_DATA_DIR), snapshot id or db:products/<catalog>; "
            "default: TAGGER_CATALOG_SOURCE, else the spec's data_file",
        ),
        "spec": Param(None, type=["null", "string"], description="Dataset spec; default: TAGGER_CATALOG_SPEC"),
        "train": Param({}, description='TrainOptions overrides, e.g. {"max_rows": 4000}', **train_options_schema()),
        "force": Param(False, type="boolean", description="Retrain even if this snapshot was trained on"),
    },
    doc_md=__doc__,
)
def tagger_retrain():
    @task(**NO_RETRY)
    def check_serving() -> dict:
        from pipeline.orchestration.steps import step_check_serving

        return step_check_serving(_settings())

    @task(**NO_RETRY)
    def validate(params=None, triggering_asset_events=None) -> dict:
        from pipeline.orchestration.steps import run_request, step_validate

        events = [e.extra for evs in (triggering_asset_events or {}).values() for e in evs]
        request = run_request(params, events)
        return {**step_validate(_settings(), request["source"], request["spec"]), "request": request}

    @task(**INFRA_RETRIES, queue="gpu", pool="training")
    def train(snapshot: dict, run_id=None) -> dict:
        from pipeline.orchestration.steps import step_train, train_trigger

        options = snapshot["request"]["train"]
        trigger = train_trigger(snapshot["snapshot_id"], options, run_id if snapshot["request"]["force"] else None)
        return step_train(_settings(), snapshot["snapshot_id"], snapshot["spec"], options, trigger)

    @task(**INFRA_RETRIES)
    def find_suspects(snapshot: dict) -> dict:
        from pipeline.orchestration.steps import step_suspects

        return step_suspects(_settings(), snapshot["snapshot_id"], snapshot["spec"], snapshot["request"]["train"])

    @task(**INFRA_RETRIES)
    def evaluate(trained: dict) -> dict:
        from pipeline.orchestration.steps import step_evaluate

        return step_evaluate(_settings(), trained["run_id"], trained["bundle_path"])

    @task(**INFRA_RETRIES)
    def register(trained: dict) -> dict:
        from pipeline.orchestration.steps import step_register

        return step_register(_settings(), trained["run_id"], trained["bundle_path"])

    @task(**NO_RETRY)
    def gate(registered: dict) -> dict:
        from pipeline.orchestration.steps import step_gate

        return step_gate(_settings(), registered["version"])

    @task(**INFRA_RETRIES)
    def deploy(version: int) -> dict:
        from pipeline.orchestration.steps import step_deploy

        return step_deploy(_settings(), version)

    @task(**INFRA_RETRIES)
    def smoke_test(deployed: dict) -> dict:
        from pipeline.orchestration.steps import step_smoke

        return step_smoke(_settings(), deployed["version"])

    checked = check_serving()  # a doomed deploy fails in seconds, before training
    snapshot = validate()
    checked >> snapshot
    verdict = gate(register(evaluate(train(snapshot))))
    find_suspects(snapshot)  # beside training: suspect human labels of the same rows into the review queue
    review = ReviewSensor(
        task_id="wait_for_review",
        verdict=verdict,
        poke_interval=PARSE.review_poke_seconds,
        timeout=7 * 24 * 3600,
        mode="reschedule",
        **NO_RETRY,
    )
    smoke_test(deploy(review.output))


retrain_dag = tagger_retrain()

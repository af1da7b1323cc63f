"""tagger_review_watch: every 15 minutes, retrain once reviewers have decided enough on one catalog.

Counts reviewer decisions per catalog since the last trigger; at ``TAGGER_REVIEW_RETRAIN_AFTER`` (default 50) it
emits the ``review`` Asset event, which schedules ``tagger_retrain`` on ``db:products/<catalog>`` (reviewers' tags
replace the human tags of their facet there). Below it the task is skipped and nothing is emitted. Wiring only:
``pipeline.orchestration.steps.step_review_watch`` does the counting.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from pipeline.orchestration.assets import REVIEW

NEXT_TICK_ONLY = timedelta(0)  # run_immediately: never the past tick (see tagger_retrain)


@dag(
    dag_id="tagger_review_watch",
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC", run_immediately=NEXT_TICK_ONLY),
    catchup=False,
    max_active_runs=1,
    tags=["catalog-tagger"],
    doc_md=__doc__,
)
def tagger_review_watch():
    @task(outlets=[REVIEW], retries=2, retry_delay=timedelta(seconds=30))
    def count_decisions(outlet_events=None) -> dict:
        from pipeline.orchestration.steps import step_review_watch
        from pipeline.settings import get_settings

        request = step_review_watch(get_settings())
        if request is None:
            raise AirflowSkipException("not enough new reviewer decisions on any catalog yet")
        outlet_events[REVIEW].extra = request
        return request

    count_decisions()


review_watch_dag = tagger_review_watch()

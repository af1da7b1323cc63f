"""tagger_batch_tag: tag products new or changed since the watermark through Triton; store them in Postgres.

Hourly. One transaction per batch (tags + watermark), so a run killed midway and rerun tags every product
exactly once. Low-confidence predictions wait for a reviewer (``review_state = 'pending'``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, task

NEXT_TICK_ONLY = timedelta(0)  # run_immediately: never the past tick (see tagger_retrain)


@dag(
    dag_id="tagger_batch_tag",
    # the next full hour after unpausing, not a run for the past hour at once (see NEXT_TICK_ONLY in tagger_retrain)
    schedule=CronTriggerTimetable("0 * * * *", timezone="UTC", run_immediately=NEXT_TICK_ONLY),
    catchup=False,
    max_active_runs=1,
    tags=["catalog-tagger"],
    params={
        "catalog": Param(None, type=["null", "string"], description="Only this catalog (default: all)"),
        "batch_size": Param(256, type="integer", minimum=1),
        "review_below": Param(0.5, type="number", description="Scores below this go to review"),
        "max_products": Param(None, type=["null", "integer"], description="Cap per run (default: all)"),
    },
    doc_md=__doc__,
)
def tagger_batch_tag():
    @task(retries=3, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def tag_new_products(params=None) -> dict:
        from pipeline.orchestration.steps import step_tag_batch
        from pipeline.settings import get_settings

        return step_tag_batch(get_settings(), **params)

    tag_new_products()


batch_tag_dag = tagger_batch_tag()

"""Airflow sensor that waits for a reviewer's decision on a challenger (imported by DAG files only).

A plain ``BaseSensorOperator`` subclass: the standard provider's ``@task.sensor``/``PythonSensor`` import a
deprecated Airflow helper and warn at parse time.
"""

from __future__ import annotations

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from pipeline.errors import GateRejected
from pipeline.settings import get_settings


class ReviewSensor(BaseSensorOperator):
    """Done at once when the gate approved and review mode is ``auto``; otherwise when the version's
    ``approval`` tag says ``approved``. ``rejected`` fails the task with the reviewer's verdict; the sensor's
    ``timeout`` turns a review that never comes into a clear failure."""

    template_fields = ("verdict",)

    def __init__(self, *, verdict, **kwargs):
        super().__init__(**kwargs)
        self.verdict = verdict  # XComArg of the gate task: {"version", "verdict", ...}

    def poke(self, context) -> PokeReturnValue:
        from pipeline.registry.review import decision as review_decision  # deferred: parse time stays light

        settings = get_settings()
        version = int(self.verdict["version"])
        if self.verdict["verdict"] == "approve" and settings.review_mode != "manual":
            return PokeReturnValue(is_done=True, xcom_value=version)
        decision = review_decision(settings, version)
        if decision == "rejected":
            raise GateRejected(f"version {version} was rejected by a reviewer (MLflow tag approval=rejected)")
        self.log.info("version %d waits for a reviewer (approval=%s)", version, decision)
        return PokeReturnValue(is_done=decision == "approved", xcom_value=version)

"""What the real Airflow deployment adds to a retraining run, against in-process ``dag.test()``, in one run.

Same home, same catalog slice, same training options (``force``: both train anew), same gate policy (auto review,
floors only: the second version must not wait for a reviewer because it does not beat the first):
  (a) ``tagger_retrain`` through ``dag.test()`` in this process (what ``make demo`` does);
  (b) the same DAG on the deployment of ``tagger airflow up`` (scheduler + Celery worker on Redis), started by a
      catalog Asset event as a shop's feed job would.
Reported: wall time of each run, the sum of its task durations, their difference (orchestration overhead), the
Asset event -> ``train`` start latency on the deployment, and (b) - (a). The issue's goal: (b) - (a) <= 30 s.

    .venv/bin/python bench/bench_airflow.py [--rows 240 --steps 40]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from common import drop_database, save, scratch_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _seconds(summary: dict) -> float:
    return sum(s or 0.0 for s in summary["seconds"].values())


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()

    from helpers.data import myntra_slice
    from helpers.fixtures_train import TINY_OPTIONS

    from pipeline.catalog.taglib import ensure_schema
    from pipeline.orchestration import airflow_local
    from pipeline.orchestration.deployment import AirflowAPI, Deployment, metadata_url
    from pipeline.settings import get_settings
    from serving.server import stop_recorded

    base = scratch_settings("bench_airflow")
    policy = base.home_dir / "bench_policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text("name: bench-airflow\nreview: auto\nfloors:\n  micro_f1: 0.05\n")
    os.environ.update(
        {
            "TAGGER_HOME": str(base.home_dir),
            "TAGGER_DATABASE_URL": base.database_url,
            "TAGGER_MLFLOW_TRACKING_URI": base.mlflow_tracking_uri,
            "TAGGER_GATE_POLICY": str(policy),
            "TAGGER_TRITON_INT8": "false",
        }
    )
    get_settings.cache_clear()
    settings = get_settings()
    ensure_schema(settings)
    source = myntra_slice(settings.home_dir / "slice.csv", args.rows)
    conf = {"source": str(source), "spec": "myntra", "force": True, "train": {**TINY_OPTIONS, "max_steps": args.steps}}

    # (a) in-process
    t0 = time.perf_counter()
    local = airflow_local.run_dag(settings, "tagger_retrain", conf)
    local_wall = time.perf_counter() - t0
    assert local["state"] == "success", local

    # (b) the deployment (its start-up is not part of a retraining run)
    dep = Deployment(settings)
    # SIGTERM (kill, timeout) stops what this bench started too (dag.test installs its own handler: set ours now)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        dep.up()
        with AirflowAPI(dep.api_url) as api:
            before = {r["dag_run_id"] for r in api.runs("tagger_retrain")}
            t0 = time.perf_counter()
            event = api.emit_asset_event("tagger://catalog/snapshot", conf)
            run_id = api.wait_for_run("tagger_retrain", after=before, timeout_s=120)
            run = api.wait_finished("tagger_retrain", run_id, timeout_s=1800, poll_s=0.5)
            deployed_wall = time.perf_counter() - t0
            assert run["state"] == "success", api.summary("tagger_retrain", run_id)
            summary = api.summary("tagger_retrain", run_id)
            train = api.request("GET", f"/dags/tagger_retrain/dagRuns/{run_id}/taskInstances/train")
            event_to_train = _ts(train["start_date"]) - _ts(event["timestamp"])
    finally:
        dep.down()
        stop_recorded(settings)
        for url in (settings.database_url, settings.mlflow_tracking_uri, metadata_url(settings)):
            drop_database(url)

    result = {
        "rows": args.rows,
        "steps": args.steps,
        "dag_test": {"wall_s": local_wall, "tasks_s": _seconds(local), "overhead_s": local_wall - _seconds(local)},
        "deployment": {
            "wall_s": deployed_wall,
            "tasks_s": _seconds(summary),
            "overhead_s": deployed_wall - _seconds(summary),
            "event_to_train_s": event_to_train,
            "tasks": summary["seconds"],
        },
        "added_by_deployment_s": deployed_wall - local_wall,
        "goal_added_s": 30.0,
    }
    result["goal_met"] = result["added_by_deployment_s"] <= result["goal_added_s"]
    save("bench_airflow", result)
    added = deployed_wall - local_wall
    print(
        f"dag.test: {local_wall:.1f} s wall, tasks {_seconds(local):.1f} s | deployment: {deployed_wall:.1f} s wall, "
        f"tasks {_seconds(summary):.1f} s, event->train {event_to_train:.1f} s | added {added:+.1f} s "
        f"(goal <= 30 s: {'met' if result['goal_met'] else 'NOT met'})"
    )


if __name__ == "__main__":
    main()

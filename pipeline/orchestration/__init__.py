"""Orchestration: the retraining steps as idempotent functions, and what runs them.

``steps`` (one function per DAG task, each calling one stage's entry and returning small references),
``airflow_local`` (the DAGs in-process with ``dag.test()``), ``review_sensor`` (the reviewer wait).
"""

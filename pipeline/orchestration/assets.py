"""The Airflow Assets the DAGs exchange (imported by DAG files only).

- ``CATALOG``: a catalog snapshot landed; producers (shop feed jobs) emit it with ``{"source", "spec", "train"}``.
- ``REVIEW``: reviewers decided enough on one catalog (``tagger_review_watch`` emits it with ``{"source":
  "db:products/<catalog>", "spec", "decisions"}``, see :mod:`pipeline.review.trigger`).

Both schedule ``tagger_retrain``; its validate task reads the newest event's ``extra``.
"""

from __future__ import annotations

from airflow.sdk import Asset

CATALOG = Asset("tagger://catalog/snapshot")
REVIEW = Asset("tagger://review/decisions")

"""When reviewers have decided enough, retrain: count decisions per catalog since the last trigger.

``tagger_review_watch`` (every 15 minutes) calls :func:`take_decisions`; when a catalog has at least
``review_retrain_after`` new decisions (``review_events`` rows on its products, or on candidate tags) it emits the
``review`` Asset event with ``{"source": "db:products/<catalog>", "spec": ...}``, which schedules ``tagger_retrain``
on the rows the reviewers changed. The mark (the last counted event id per catalog, in ``job_state``) advances in
the same transaction that decides to trigger, so a decision is counted towards one trigger only.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

log = logging.getLogger(__name__)
MARK = "review_retrain_mark"
NO_CATALOG = ""  # candidate decisions belong to the library, not to one catalog

_COUNT = """
    select coalesce(p.catalog, :none) as catalog, count(*) as n, max(e.id) as last_id
    from review_events e join review_items i on i.id = e.item_id left join products p on p.id = i.product_pk
    where e.id > coalesce(cast(cast(:mark as jsonb) ->> coalesce(p.catalog, :none) as bigint), 0)
    group by 1 order by 2 desc, 1
"""


def pending_decisions(conn: sa.Connection) -> dict[str, int]:
    """Catalog -> decisions not yet counted towards a retraining trigger."""
    mark = conn.scalar(sa.text("select value from job_state where name = :n"), {"n": MARK}) or {}
    rows = conn.execute(sa.text(_COUNT), {"mark": json.dumps(mark), "none": NO_CATALOG}).all()
    return {r.catalog: r.n for r in rows}


def _spec_of(conn: sa.Connection, catalog: str) -> str | None:
    """The spec of the catalog's newest db:products snapshot, else the packaged spec of that name, else None (the
    settings' default spec)."""
    from pipeline.catalog.spec import load_spec
    from pipeline.errors import TaggerError

    spec = conn.scalar(
        sa.text("select spec from snapshots where source_uri = :a order by created_at desc limit 1"),
        {"a": f"db:products/{catalog}"},
    )
    if spec:
        return spec
    try:
        return load_spec(catalog).name
    except TaggerError:
        return None


def take_decisions(engine: sa.Engine, threshold: int) -> dict | None:
    """The retraining request for the catalog with the most new decisions, once it has ``threshold``; the mark
    advances past what was counted. None (mark unchanged) while no catalog has enough."""
    with engine.begin() as conn:
        conn.execute(sa.text("insert into job_state (name, value, updated_at) values (:n, '{}'::jsonb, now()) "
                             "on conflict (name) do nothing"), {"n": MARK})  # fmt: skip
        mark = conn.scalar(sa.text("select value from job_state where name = :n for update"), {"n": MARK})
        rows = conn.execute(sa.text(_COUNT), {"mark": json.dumps(mark), "none": NO_CATALOG}).all()
        ready = [r for r in rows if r.catalog != NO_CATALOG and r.n >= threshold]
        if not ready:
            log.info("review decisions since the last retraining: %s (trigger at %d per catalog)",
                     {r.catalog or "(library)": r.n for r in rows} or "none", threshold)  # fmt: skip
            return None
        top = ready[0]
        conn.execute(
            sa.text("update job_state set value = cast(:v as jsonb), updated_at = now() where name = :n"),
            {"n": MARK, "v": json.dumps({**mark, top.catalog: top.last_id})},
        )
        request = {"source": f"db:products/{top.catalog}", "spec": _spec_of(conn, top.catalog),
                   "decisions": top.n, "last_event_id": top.last_id}  # fmt: skip
    log.info("%d review decisions on %s: retraining requested", top.n, top.catalog)
    return request

"""The review page (``tagger review serve``): the queue in a browser, decisions by click or key.

FastAPI with a server-side Jinja2 template; its stylesheet and script are package files served by the app (no CDN:
the page works on a machine without internet). The page is rendered from Postgres on each request; decisions are
``POST /api/items/{id}/decide`` (the same :func:`pipeline.review.queue.decide` as the CLI, one transaction each);
explanations are fetched per item on request (``GET /api/items/{id}/explain``) so that a long queue renders
without running the model.

Routes: ``/`` (the queue; query ``kind``, ``facet``, ``catalog``, ``state``, ``limit``), ``/api/items`` (the
same as JSON), ``/api/items/{id}``, ``/api/items/{id}/decide``, ``/api/items/{id}/explain``, ``/healthz``,
``/static/*``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from pipeline.errors import TaggerError
from pipeline.review import queue
from pipeline.review.explanations import Explainer
from pipeline.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
KIND_LABELS = {"model_tag": "model tag", "candidate": "candidate tag", "suspect_label": "suspect label"}


class Decision(BaseModel):
    action: str = Field(description="accept | reject | correct | merge | promote")
    tag: str | None = Field(None, description="FACET:VALUE for correct and merge")
    by: str | None = Field(None, description="who decides (default: the server's reviewer)")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def create_app(settings: Settings, engine: sa.Engine, *, reviewer: str, explainer: Explainer | None = None) -> FastAPI:
    """The review app on ``engine`` (migrated); ``reviewer`` decides when a request names no one."""
    app = FastAPI(title="catalog-tagger review", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    explainer = explainer or Explainer(settings)

    @app.exception_handler(TaggerError)
    async def _one_line(request: Request, exc: TaggerError):  # a refused decision: one line, never a traceback
        return JSONResponse({"error": str(exc)}, status_code=400)

    def _items(kind, facet, catalog, state, limit) -> tuple[list[dict], dict, dict]:
        """(items with their product's tags and allowed actions, facet -> tags to correct to, filter choices)"""
        with engine.begin() as conn:
            queue.sync(conn)
            items = queue.list_items(conn, kind=kind, facet=facet, catalog=catalog, state=state, limit=limit)
            tags = queue.product_tags(conn, [i["product_pk"] for i in items if i["product_pk"]])
            choices = queue.facet_tags(conn, sorted({i["facet"] for i in items}))
            options = queue.filters(conn)
        for item in items:
            item["product_tags"] = tags.get(item["product_pk"], [])
            item["actions"] = queue.ACTIONS[item["kind"]]
        return items, choices, options

    @app.get("/", response_class=HTMLResponse)
    def page(
        request: Request,
        kind: str | None = None,
        facet: str | None = None,
        catalog: str | None = None,
        state: str = "open",
        limit: int = 50,
    ):
        kind, facet, catalog = kind or None, facet or None, catalog or None  # an empty <select> sends ""
        items, choices, options = _items(kind, facet, catalog, state, limit)
        return templates.TemplateResponse(
            request,
            "queue.html",
            {
                "items": items,
                "choices": choices,
                "options": options,
                "kinds": KIND_LABELS,
                "selected": {"kind": kind, "facet": facet, "catalog": catalog, "state": state},
                "reviewer": reviewer,
                "limit": limit,
            },
        )

    @app.get("/api/items")
    def api_items(kind: str | None = None, facet: str | None = None, catalog: str | None = None,
                  state: str = "open", limit: int = 50):  # fmt: skip
        return _jsonable(_items(kind, facet, catalog, state, limit)[0])

    @app.get("/api/items/{item_id}")
    def api_item(item_id: int):
        with engine.connect() as conn:
            return _jsonable(queue.get_item(conn, item_id))

    @app.post("/api/items/{item_id}/decide")
    def api_decide(item_id: int, decision: Decision):
        with engine.begin() as conn:
            item = queue.decide(conn, item_id, decision.action, decision.by or reviewer, decision.tag)
        return _jsonable(item)

    @app.get("/api/items/{item_id}/explain")
    def api_explain(item_id: int):
        with engine.connect() as conn:
            item = queue.get_item(conn, item_id)
            if item["product_pk"] is None:
                return {"error": "a candidate tag has no product text to explain"}
            row = conn.execute(
                sa.text("select title, brand, description, attributes from products where id = :id"),
                {"id": item["product_pk"]},
            ).mappings().first()  # fmt: skip
        return _jsonable(explainer.product(dict(row), version=item["model_version"], slugs=[item["tag"]]))

    @app.get("/healthz")
    def healthz():
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return {"ok": True}

    return app

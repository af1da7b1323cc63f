"""Database schema (SQLAlchemy Core) and engine helpers for the tag library and pipeline state.

The schema is created and changed only by the Alembic migrations in ``pipeline/core/migrations``; these
table objects describe the current head revision for queries.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()
NOW = sa.text("now()")

facets = sa.Table(
    "facets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.Text, nullable=False, unique=True),
    sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("hierarchical", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("names", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),  # locale -> name
    sa.Column("source", sa.Text, nullable=False, server_default="manual"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("slug", sa.Text, nullable=False, unique=True),  # "facet:value", stable
    sa.Column("facet_id", sa.Integer, sa.ForeignKey("facets.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="SET NULL"), nullable=True),
    # active: curated; candidate: seen in a catalog but not in the library yet; retired: kept for history
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("source", sa.Text, nullable=False, server_default="manual"),
    sa.Column("external_id", sa.Text, nullable=True),  # e.g. Shopify gid
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.CheckConstraint("status in ('active','candidate','retired')", name="ck_tags_status"),
    sa.Index("ix_tags_facet", "facet_id"),
    sa.Index("ix_tags_parent", "parent_id"),
)

tag_names = sa.Table(
    "tag_names",
    metadata,
    sa.Column("tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("locale", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
)

# slugs renamed by a migration (0002: "+" and "#" spelled out), so a model trained before still finds its tags
tag_slug_renames = sa.Table(
    "tag_slug_renames",
    metadata,
    sa.Column("old_slug", sa.Text, primary_key=True),
    sa.Column("new_slug", sa.Text, nullable=False),
    sa.Column("renamed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

tag_synonyms = sa.Table(
    "tag_synonyms",
    metadata,
    sa.Column("tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("locale", sa.Text, primary_key=True),
    sa.Column("synonym", sa.Text, primary_key=True),
)

products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("catalog", sa.Text, nullable=False),  # dataset spec / shop catalog name
    sa.Column("product_id", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("brand", sa.Text, nullable=True),
    sa.Column("locale", sa.Text, nullable=False, server_default="en"),
    sa.Column("category_path", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("attributes", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.UniqueConstraint("catalog", "product_id", name="uq_products_catalog_pid"),
    sa.Index("ix_products_updated", "updated_at"),
)

product_tags = sa.Table(
    "product_tags",
    metadata,
    sa.Column("product_pk", sa.BigInteger, sa.ForeignKey("products.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),  # human | model | reviewer
    sa.Column("model_name", sa.Text, nullable=True),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    # accepted | pending (low confidence, waits for a reviewer) | rejected
    sa.Column("review_state", sa.Text, nullable=False, server_default="accepted"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.CheckConstraint("source in ('human','model','reviewer')", name="ck_product_tags_source"),
    sa.CheckConstraint("review_state in ('accepted','pending','rejected')", name="ck_product_tags_review"),
    sa.Index("ix_product_tags_tag", "tag_id"),
)

# the review queue (pipeline.review): what waits for a reviewer, and every decision as an event row
review_items = sa.Table(
    "review_items",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),  # model_tag | candidate | suspect_label
    sa.Column("product_pk", sa.BigInteger, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=True),
    sa.Column("tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="CASCADE"), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("model_name", sa.Text, nullable=True),
    sa.Column("model_version", sa.Integer, nullable=True),
    sa.Column("state", sa.Text, nullable=False, server_default="open"),  # open | decided
    sa.Column("decision", sa.Text, nullable=True),  # accept | reject | correct | merge | promote
    sa.Column("decided_tag_id", sa.Integer, sa.ForeignKey("tags.id", ondelete="SET NULL"), nullable=True),
    sa.Column("decided_by", sa.Text, nullable=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.CheckConstraint("kind in ('model_tag','candidate','suspect_label')", name="ck_review_items_kind"),
    sa.CheckConstraint("state in ('open','decided')", name="ck_review_items_state"),
    sa.CheckConstraint(
        "decision is null or decision in ('accept','reject','correct','merge','promote')",
        name="ck_review_items_decision",
    ),
    sa.Index("ix_review_items_state_kind", "state", "kind"),
)

review_events = sa.Table(
    "review_events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("item_id", sa.BigInteger, sa.ForeignKey("review_items.id", ondelete="CASCADE"), nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),  # champion | challenger | served
    sa.Column("action", sa.Text, nullable=False),  # promote | rollback | deploy | undeploy | set | clear
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("gate_verdict", sa.Text, nullable=True),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Index("ix_alias_events_model", "model_name", "created_at"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # "<spec>-<digest[:16]>"
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("digest", sa.Text, nullable=False),
    sa.Column("rows_read", sa.Integer, nullable=False),
    sa.Column("rows_accepted", sa.Integer, nullable=False),
    sa.Column("rows_quarantined", sa.Integer, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),  # pass | warn | fail
    sa.Column("report_path", sa.Text, nullable=True),
    sa.Column("accepted_path", sa.Text, nullable=True),  # Parquet of accepted rows (contract)
    sa.Column("stats", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.CheckConstraint("verdict in ('pass','warn','fail')", name="ck_snapshots_verdict"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("snapshot_id", sa.Text, sa.ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("row_number", sa.Integer, primary_key=True),
    sa.Column("expectation", sa.Text, primary_key=True),
    sa.Column("product_id", sa.Text, nullable=True),
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
)

job_state = sa.Table(
    "job_state",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),  # e.g. "batch_tag:watermark"
    sa.Column("value", JSONB, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

tag_outbox = sa.Table(  # filled by triggers on products (migration 0004), drained by the real-time tag worker
    "tag_outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("product_pk", sa.BigInteger, sa.ForeignKey("products.id", ondelete="CASCADE"), nullable=False),
    sa.Column("product_updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("op", sa.Text, nullable=False),  # insert | update
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),  # 0 storefront writes, 1 bulk loads
    sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("clock_timestamp()")),
)

"""Review queue: items for a reviewer (a pending model tag, a candidate tag, a suspect human label) and the event
rows of every decision; product_tags may now come from a reviewer.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("product_pk", sa.BigInteger(), nullable=True),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("model_name", sa.Text(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("state", sa.Text(), server_default="open", nullable=False),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("decided_tag_id", sa.Integer(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind in ('model_tag','candidate','suspect_label')", name="ck_review_items_kind"),
        sa.CheckConstraint("state in ('open','decided')", name="ck_review_items_state"),
        sa.CheckConstraint(
            "decision is null or decision in ('accept','reject','correct','merge','promote')",
            name="ck_review_items_decision",
        ),
        sa.ForeignKeyConstraint(["product_pk"], ["products.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["decided_tag_id"], ["tags.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    # one open item per (kind, product, tag): enqueueing again is a no-op
    op.create_index(
        "uq_review_items_open",
        "review_items",
        ["kind", sa.text("coalesce(product_pk, 0)"), "tag_id"],
        unique=True,
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_index("ix_review_items_state_kind", "review_items", ["state", "kind"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.drop_constraint("ck_product_tags_source", "product_tags", type_="check")
    op.create_check_constraint("ck_product_tags_source", "product_tags", "source in ('human','model','reviewer')")


def downgrade() -> None:
    op.execute("delete from product_tags where source = 'reviewer'")
    op.drop_constraint("ck_product_tags_source", "product_tags", type_="check")
    op.create_check_constraint("ck_product_tags_source", "product_tags", "source in ('human','model')")
    op.drop_table("review_events")
    op.drop_index("ix_review_items_state_kind", table_name="review_items")
    op.drop_index("uq_review_items_open", table_name="review_items")
    op.drop_table("review_items")

"""Real-time tagging: an outbox of product changes, filled by triggers on ``products``, that wakes the tag worker.

- ``tag_outbox``: one row per product whose text was inserted or changed (title, description, brand, attributes),
  with the product's ``updated_at`` as written. The tag worker (``tagger tag-worker``) deletes the rows it tags in
  the same transaction as the tags; batch tagging deletes the rows its batch covers.
- Statement-level triggers with transition tables: a bulk import of 40,000 rows costs one ``INSERT ... SELECT``
  into the outbox and one notification, not 40,000 trigger calls.
- Two lanes: rows of a statement that wrote at most ``BULK_ROWS`` products (a storefront's insert or edit) get
  ``priority`` 0, those of a bigger one (a catalog import) 1. The worker takes lane 0 first, so a product created
  during a 40,000-row import backlog is still tagged within a second; the backlog drains behind it.
- ``pg_notify('tagger_outbox', '')`` wakes a listening worker when the inserting transaction commits (Postgres
  folds identical notifications of one transaction into one).
- A row trigger moves ``updated_at`` to ``clock_timestamp()`` whenever the text changes, whoever writes it (the
  storefront need not set it): batch tagging's watermark sees the change, and an outbox row never claims a newer
  version than the product row it was written with.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHANNEL = "tagger_outbox"
BULK_ROWS = 100  # a statement writing more products than this is a bulk load: its rows go to the second lane
_TEXT = ("title", "description", "brand", "attributes")  # what the model text is built from


def _text(alias: str) -> str:
    """The text columns of row ``alias`` as a row value: ``(n.title, n.description, ...)``."""
    return "(" + ", ".join(f"{alias}.{c}" for c in _TEXT) + ")"


def upgrade() -> None:
    op.create_table(
        "tag_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("product_pk", sa.BigInteger(), nullable=False),
        sa.Column("product_updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("op", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column(
            "enqueued_at", sa.DateTime(timezone=True), server_default=sa.text("clock_timestamp()"), nullable=False
        ),
        sa.CheckConstraint("op in ('insert','update')", name="ck_tag_outbox_op"),
        sa.ForeignKeyConstraint(["product_pk"], ["products.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tag_outbox_product", "tag_outbox", ["product_pk"])
    op.create_index("ix_tag_outbox_lane", "tag_outbox", ["priority", "id"])
    op.execute(
        f"""
        create function tagger_products_touch() returns trigger language plpgsql as $$
        begin
          if {_text("new")} is distinct from {_text("old")} then
            new.updated_at := clock_timestamp();
          end if;
          return new;
        end $$;

        create function tagger_outbox_inserted() returns trigger language plpgsql as $$
        begin
          insert into tag_outbox (product_pk, product_updated_at, op, priority)
            select id, updated_at, 'insert', case when count(*) over () > {BULK_ROWS} then 1 else 0 end
            from new_rows order by id;
          if found then perform pg_notify('{CHANNEL}', ''); end if;
          return null;
        end $$;

        create function tagger_outbox_updated() returns trigger language plpgsql as $$
        begin
          insert into tag_outbox (product_pk, product_updated_at, op, priority)
            select n.id, n.updated_at, 'update', case when count(*) over () > {BULK_ROWS} then 1 else 0 end
            from new_rows n join old_rows o using (id)
            where {_text("n")} is distinct from {_text("o")}
            order by n.id;
          if found then perform pg_notify('{CHANNEL}', ''); end if;
          return null;
        end $$;

        create trigger products_touch before update on products
          for each row execute function tagger_products_touch();
        create trigger products_outbox_insert after insert on products
          referencing new table as new_rows for each statement execute function tagger_outbox_inserted();
        create trigger products_outbox_update after update on products
          referencing old table as old_rows new table as new_rows
          for each statement execute function tagger_outbox_updated();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        drop trigger products_outbox_update on products;
        drop trigger products_outbox_insert on products;
        drop trigger products_touch on products;
        drop function tagger_outbox_updated();
        drop function tagger_outbox_inserted();
        drop function tagger_products_touch();
        """
    )
    op.drop_index("ix_tag_outbox_lane", table_name="tag_outbox")
    op.drop_index("ix_tag_outbox_product", table_name="tag_outbox")
    op.drop_table("tag_outbox")

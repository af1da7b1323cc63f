-- The storefront reads tags and the products they are attached to; nothing else, never writes.
-- Applied by infra/postgres/migrate_and_grant.py as tagger_app (owner of the tables) after every migration,
-- so a table added by a later migration stays hidden until it is listed here. Idempotent.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM storefront;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM storefront;
GRANT SELECT ON TABLE facets, tags, tag_names, tag_synonyms, products, product_tags TO storefront;

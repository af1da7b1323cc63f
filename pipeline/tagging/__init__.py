"""Stage 6, tagging: products in Postgres in, model tags (with scores and review state) in ``product_tags`` out.

``batch`` tags what is new or changed since a watermark through Triton, exactly once per product version.
"""

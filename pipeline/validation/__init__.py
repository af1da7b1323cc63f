"""Stage 2, validation: a catalog snapshot in, a verdict (pass / warn / fail), quarantine and Data Docs out.

``expectations`` (the Great Expectations suites), ``drift`` (against the last accepted snapshot), ``validate``
(the entry: read -> check -> quarantine with a reason -> verdict -> snapshot in Postgres).
"""

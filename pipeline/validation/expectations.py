"""The Great Expectations (1.x) suites of the validation gate, built from the contract and the tag library.

Two batches are validated, each by its own suite and checkpoint in an ephemeral GX context whose Data Docs
site is written to disk:

* ``rows``: one row per parsed catalog row: the contract columns plus derived columns computed in pandas
  (``title_length``, ``title_utf8_ok``, ``title_control_free``, ``duplicate_of_row``, ``title_splits``...),
  which keeps GX fast on a whole catalog (vectorised checks, no per-row Python inside GX);
* ``tags``: one row per tag seen in the catalog, with its facet, number of examples and library status.

Every expectation carries a :class:`Rule` in its ``meta``: its ``kind`` says what a failure means
(``row``: the failing rows go to quarantine; ``dataset``: the snapshot fails; ``warn``: the snapshot is
accepted with a flag; ``info``: reported only, e.g. new-tag candidates).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier

from pipeline.catalog.readers import CONTRACT_COLUMNS, facet_of
from pipeline.catalog.splits import normalise_title, split_of_normalised
from pipeline.validation.offline_docs import make_offline

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ROW_SUITE, TAG_SUITE, DRIFT_SUITE = "catalog_rows", "catalog_tags", "catalog_drift"
_ON_FAILURE = {
    "row": "failing rows are quarantined",
    "dataset": "the snapshot fails",
    "warn": "the snapshot is accepted with a warning",
    "info": "reported only",
}


@dataclass(frozen=True)
class Rule:
    name: str  # stable name used in quarantine rows and reports
    kind: str  # row | dataset | warn | info
    column: str  # column whose value a failure reports
    expectation: object = field(repr=False, compare=False)


@dataclass(frozen=True)
class RuleOutcome:
    name: str
    kind: str
    expectation_type: str
    success: bool
    unexpected_count: int
    unexpected_keys: list  # row_numbers (rows suite) or tag slugs (tags suite)
    error: str | None = None


@dataclass(frozen=True)
class SuiteRun:
    outcomes: list[RuleOutcome]
    report_path: Path | None


# ---- derived frames ------------------------------------------------------------------------------------
def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates (from JSON escapes or surrogateescape)
        return False


def rows_frame(frame: pd.DataFrame, null_values: frozenset[str], split_seed: int) -> pd.DataFrame:
    """Contract rows plus the derived columns the row suite checks."""
    out = frame.copy()
    title = out["title"].fillna("").astype(str)
    stripped = title.str.strip()
    nulls = {v.lower() for v in null_values} | {"", "nan", "none", "null", "na", "n/a"}
    missing = stripped.str.lower().isin(nulls)
    out["title_missing"] = missing
    out["title_length"] = title.str.len().astype("float64").where(~missing)  # null for missing titles
    out["title_utf8_ok"] = title.map(_utf8_ok)
    out["title_control_free"] = ~title.str.contains(_CONTROL)
    # ids spelled as a null ("NA", "None", NaN...) are missing ids; later copies of an id are duplicates
    pid = out["product_id"].astype(object).where(out["product_id"].notna(), None)
    pid = pid.where(~pid.fillna("").astype(str).str.strip().str.lower().isin(nulls), None)
    out["product_id_value"] = pid
    present = pid.notna()
    first_row = out.loc[present].groupby(pid[present], sort=False)["row_number"].transform("min")
    dup = present & pid.duplicated(keep="first")
    out["duplicate_of_row"] = first_row.reindex(out.index).where(dup).astype("float64")
    # per distinct title: Python's own normalisation, exactly what training calls through split_of
    distinct = pd.unique(title.to_numpy())
    norm = title.map(dict(zip(distinct, map(normalise_title, distinct), strict=True)))
    distinct_norm = pd.unique(norm.to_numpy())
    out["split"] = norm.map({t: split_of_normalised(t, split_seed) for t in distinct_norm})
    out["title_splits"] = out.assign(_n=norm).groupby("_n")["split"].transform("nunique").astype("int64")
    return out


def tags_frame(frame: pd.DataFrame, library: dict[str, str]) -> pd.DataFrame:
    """One row per tag seen in ``frame``: examples, library status, trainable (= not retired)."""
    counts = frame["tags"].explode().dropna().value_counts()
    tf = pd.DataFrame({"tag": counts.index.astype(str), "examples": counts.to_numpy().astype("int64")})
    tf["facet"] = tf["tag"].map(facet_of)
    tf["status"] = tf["tag"].map(lambda t: library.get(t, "unknown"))
    tf["trainable_examples"] = tf["examples"].astype("float64").where(tf["status"] != "retired")
    return tf.sort_values("tag").reset_index(drop=True)


# ---- suites --------------------------------------------------------------------------------------------
def row_rules(min_title: int, max_title: int) -> list[Rule]:

    E = gx.expectations
    rules = [Rule(f"column_{c}_present", "dataset", c, E.ExpectColumnToExist(column=c)) for c in CONTRACT_COLUMNS]
    rules += [
        Rule("product_id_present", "row", "product_id", E.ExpectColumnValuesToNotBeNull(column="product_id_value")),
        Rule("product_id_unique", "row", "product_id", E.ExpectColumnValuesToBeNull(column="duplicate_of_row")),
        Rule("title_present", "row", "title", E.ExpectColumnValuesToBeInSet(column="title_missing", value_set=[False])),
        Rule(
            "title_length",
            "row",
            "title",
            E.ExpectColumnValuesToBeBetween(column="title_length", min_value=min_title, max_value=max_title),
        ),
        Rule("title_utf8", "row", "title", E.ExpectColumnValuesToBeInSet(column="title_utf8_ok", value_set=[True])),
        Rule(
            "title_no_control_chars",
            "row",
            "title",
            E.ExpectColumnValuesToBeInSet(column="title_control_free", value_set=[True]),
        ),
        Rule(
            "title_single_split",
            "dataset",
            "title",
            E.ExpectColumnValuesToBeInSet(column="title_splits", value_set=[1]),
        ),
    ]
    return rules


def tag_rules(library_slugs: list[str], min_examples: int) -> list[Rule]:

    E = gx.expectations
    return [
        Rule(
            "tag_in_library",
            "info",
            "tag",
            E.ExpectColumnValuesToBeInSet(column="tag", value_set=sorted(library_slugs), severity="info"),
        ),
        Rule(
            "tag_min_examples",
            "warn",
            "tag",
            E.ExpectColumnValuesToBeBetween(column="trainable_examples", min_value=min_examples, severity="warning"),
        ),
    ]


def drift_frame(fig: dict) -> pd.DataFrame:
    """Drift figures as a GX batch: one row per facet (label PSI/JS) and one ``catalog`` row."""
    recs = [{"subject": f"facet:{f}", "label_psi": v["psi"], "label_js": v["js"]} for f, v in fig["facets"].items()]
    recs.append(
        {
            "subject": "catalog",
            "new_product_share": fig["new_product_share"],
            "title_length_psi": fig["title_length_psi"],
        }
    )
    cols = ["subject", "label_psi", "label_js", "new_product_share", "title_length_psi"]
    return pd.DataFrame(recs, columns=cols).astype({c: "float64" for c in cols[1:]})


def drift_rules(label_psi_warn: float, new_products_warn: float, title_length_psi_warn: float) -> list[Rule]:
    """Drift thresholds as expectations, so the Data Docs page shows the figures that crossed them."""

    E = gx.expectations
    between = E.ExpectColumnValuesToBeBetween
    return [
        Rule(
            "drift_label_psi",
            "warn",
            "label_psi",
            between(column="label_psi", max_value=label_psi_warn, severity="warning"),
        ),
        Rule(
            "drift_new_products",
            "warn",
            "new_product_share",
            between(column="new_product_share", max_value=new_products_warn, severity="warning"),
        ),
        Rule(
            "drift_title_length",
            "warn",
            "title_length_psi",
            between(column="title_length_psi", max_value=title_length_psi_warn, severity="warning"),
        ),
    ]


# ---- running -------------------------------------------------------------------------------------------
def _context(site_dir: Path):
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no phoning home from a pipeline step
    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site_dir)},
    }
    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={"catalog_validation": site},
    )
    return gx.get_context(project_config=cfg, mode="ephemeral")


def _outcomes(result, by_id: dict[str, Rule], key: str) -> list[RuleOutcome]:
    outs = []
    for er in result.results:
        rule = by_id[er.expectation_config.id]
        res = er.result or {}
        error = None
        if er.exception_info and er.exception_info.get("raised_exception"):
            error = str(er.exception_info.get("exception_message"))
        keys = [d[key] for d in res.get("unexpected_index_list") or []]
        outs.append(
            RuleOutcome(
                name=rule.name,
                kind=rule.kind,
                expectation_type=er.expectation_config.type,
                success=bool(er.success),
                unexpected_count=int(res.get("unexpected_count") or 0),
                unexpected_keys=keys,
                error=error,
            )
        )
    return outs


def scalar_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts are not hashable: GX checks scalar columns; the contract names stay for existence."""
    return rows.assign(**{c: rows[c].map(repr) for c in ("category_path", "attributes", "tags") if c in rows})


@dataclass(frozen=True)
class Batch:
    """One GX batch: ``frame(outcomes_so_far)`` gives its data (None: skip it); ``key`` names failing rows."""

    name: str
    key: str
    rules: list[Rule]
    frame: Callable[[list[RuleOutcome]], pd.DataFrame | None]


def run_suites(
    batches: list[Batch], site_dir: Path, run_name: str, on_stage: Callable[[str], None] | None = None
) -> SuiteRun:
    """Validate each batch in order through its own suite and checkpoint (COMPLETE results, failing rows by
    ``key``), then build the Data Docs site in ``site_dir``; return the per-rule outcomes. ``on_stage`` hears
    each batch's suite name as it starts, then ``"data docs"``."""
    stage = on_stage or (lambda _: None)

    site_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(site_dir)
    source = ctx.data_sources.add_pandas("catalog")
    outcomes: list[RuleOutcome] = []
    for b in batches:
        stage(b.name)
        frame = b.frame(outcomes)
        if frame is None:
            continue
        batch = source.add_dataframe_asset(b.name).add_batch_definition_whole_dataframe("snapshot")
        suite = ctx.suites.add(gx.ExpectationSuite(name=b.name))
        by_id = {}
        for rule in b.rules:
            rule.expectation.meta = {"rule": rule.name, "on_failure": _ON_FAILURE[rule.kind]}
            by_id[suite.add_expectation(rule.expectation).id] = rule
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=b.name, data=batch, suite=suite))
        checkpoint = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{b.name}_checkpoint",
                validation_definitions=[vd],
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [b.key]},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
        for vr in result.run_results.values():
            outcomes += _outcomes(vr, by_id, b.key)
    stage("data docs")
    # one Data Docs build for all results (an UpdateDataDocsAction per checkpoint renders the site each time)
    ctx.build_data_docs(site_names=["catalog_validation"])
    make_offline(site_dir)  # styles and scripts from the package, not from CDNs
    index = site_dir / "index.html"
    return SuiteRun(outcomes=outcomes, report_path=index if index.is_file() else None)

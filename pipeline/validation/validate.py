"""The catalog validation gate: snapshot, GX suites, quarantine, drift, verdict, report.

``validate_catalog`` is the first step of the retraining DAG and the body of ``tagger validate``.

Verdicts:

* **fail** (not accepted; the DAG stops before training): no rows, no row accepted, more than
  ``max_quarantine_share`` of the rows quarantined, a dataset-level expectation failed (contract column
  missing, a title in two splits), no tag with ``min_examples_per_tag`` examples, or drift above a *fail*
  threshold (off by default).
* **warn** (accepted, flagged): some rows quarantined, tags below ``min_examples_per_tag`` examples, or drift
  above a *warn* threshold.
* **pass**: nothing of the above.

Row-level failures never fail a snapshot by themselves: those rows are quarantined (``quarantine`` table and
``quarantine.csv`` in the snapshot folder) with the rule and the offending value, and the rest continue.
Invariant: rows read = rows accepted + rows quarantined. Tags not in the library are reported as new-tag
candidates, never quarantined.

A file that is unusable as a whole (missing, empty, bad zip/gzip, missing columns, wrong Parquet types)
raises :class:`~pipeline.errors.CatalogError` from the reader; no snapshot is recorded because there is no
content to identify it by. A header-only file returns verdict *fail* ("no rows") and is recorded.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from tqdm.auto import tqdm

from pipeline import db
from pipeline.catalog import snapshot
from pipeline.catalog.readers import CatalogRead
from pipeline.catalog.spec import DatasetSpec, load_spec
from pipeline.core import migrate
from pipeline.core.services import get_engine
from pipeline.errors import ValidationFailed
from pipeline.settings import Settings
from pipeline.validation import drift, expectations

log = logging.getLogger(__name__)

PARSE_RULE = "parseable_row"
MERGES_SHOWN = 5  # spec check: tags written several ways, listed one per warning


@dataclass(frozen=True)
class ValidationOptions:
    """Thresholds of the gate (all overridable from the CLI)."""

    min_examples_per_tag: int = 5  # a trainable tag with fewer examples -> warn
    min_title_chars: int = 2
    max_title_chars: int = 300
    max_quarantine_share: float = 0.2  # more rows quarantined than this share -> fail
    label_psi_warn: float = 0.2  # per-facet label distribution PSI above this -> warn
    label_psi_fail: float | None = None  # ... above this -> fail (None: drift never fails)
    new_products_warn: float = 0.5  # share of product ids not in the last accepted snapshot -> warn
    title_length_psi_warn: float = 0.2
    split_seed: int = 0  # seed of splits.split_of; training must use the same


@dataclass(frozen=True)
class ValidationResult:
    snapshot_id: str
    spec: str
    digest: str
    verdict: str  # pass | warn | fail
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_path: str | None
    report_path: str | None  # Data Docs index.html of this run
    accepted_path: str | None  # Parquet of the accepted contract rows
    drift: dict
    failed_expectations: list[dict]
    reasons: list[str] = field(default_factory=list)  # why the verdict is not pass
    quarantine_reasons: dict[str, int] = field(default_factory=dict)  # rule -> rows
    new_tag_candidates: list[str] = field(default_factory=list)
    rare_tags: dict[str, int] = field(default_factory=dict)  # tag -> examples (below the minimum)
    result_path: str | None = None
    seconds: float = 0.0

    def raise_for_verdict(self) -> ValidationResult:
        """Return self if the snapshot was accepted (pass/warn); raise ValidationFailed on *fail*."""
        if self.verdict == "fail":
            raise ValidationFailed(
                f"snapshot {self.snapshot_id} failed validation: {'; '.join(self.reasons)} "
                f"(report: {self.report_path or self.result_path})"
            )
        return self


# ---- quarantine ----------------------------------------------------------------------------------------
def _short(value) -> str:
    text = "" if value is None else str(value)
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    text = expectations._CONTROL.sub(lambda m: repr(m.group())[1:-1], text)  # NUL etc. stay visible
    return text if len(text) <= 200 else f"{text[:200]}… ({len(text)} characters)"


def _reason(rule: str, row: pd.Series, opts: ValidationOptions) -> str:
    title = str(row["title"] or "")
    if rule == "product_id_present":
        return "product_id is missing (empty or a null spelling); give every product an id"
    if rule == "product_id_unique":
        return f"product_id {row['product_id']!r} is already used by row {int(row['duplicate_of_row'])}"
    if rule == "title_present":
        return f"title is empty or a null spelling ({_short(title)!r})"
    if rule == "title_length":
        return f"title has {len(title)} characters; allowed {opts.min_title_chars}..{opts.max_title_chars}"
    if rule == "title_utf8":
        return "title is not valid UTF-8 (it holds a lone surrogate)"
    if rule == "title_no_control_chars":
        pos = next(i for i, ch in enumerate(title) if expectations._CONTROL.match(ch))
        return f"title holds control character {title[pos]!r} at position {pos}"
    return f"failed {rule}"


def _quarantine_rows(read: CatalogRead, rows: pd.DataFrame, outcomes, opts: ValidationOptions) -> list[dict]:
    out = [
        {
            "row_number": r.row_number,
            "expectation": PARSE_RULE,
            "product_id": None,
            "value": r.value,
            "reason": r.reason,
        }
        for r in read.rejects
    ]
    indexed = rows.set_index("row_number", drop=False)
    for o in outcomes:
        if o.kind != "row" or o.success:
            continue
        column = "title" if o.name.startswith("title") else "product_id"
        for rn in o.unexpected_keys:
            row = indexed.loc[rn]
            out.append(
                {
                    "row_number": int(rn),
                    "expectation": o.name,
                    "product_id": None if pd.isna(row["product_id"]) else str(row["product_id"]),
                    "value": _short(row[column]),
                    "reason": _reason(o.name, row, opts),
                }
            )
    return out


def _write_quarantine(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["row_number", "expectation", "product_id", "value", "reason"])
        w.writeheader()
        w.writerows(sorted(rows, key=lambda q: (q["row_number"], q["expectation"])))
    return path


# ---- helpers -------------------------------------------------------------------------------------------
def _library(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(db.tags.c.slug, db.tags.c.status)).all())


def _ensure_schema(engine: sa.Engine) -> None:
    if not sa.inspect(engine).has_table("snapshots"):
        log.info("tag-library schema missing: running migrations")
        migrate.upgrade(engine)


def _previous_ids(prev: dict | None) -> set[str] | None:
    if not prev or not prev.get("accepted_path") or not Path(prev["accepted_path"]).is_file():
        return None
    return set(pd.read_parquet(prev["accepted_path"], columns=["product_id"])["product_id"].astype(str))


def _hint(quarantine: list[dict], spec: DatasetSpec) -> str:
    """The most common quarantine reason, with the likely fix."""
    if not quarantine:
        return ""
    top = Counter(q["expectation"] for q in quarantine).most_common(1)[0][0]
    sample = next(q["reason"] for q in quarantine if q["expectation"] == top)
    hint = f"; most common: {top} ({sample})"
    if top == PARSE_RULE and "byte" in sample:
        hint += f"; is the file really {spec.encoding}? set 'encoding' in the spec ({spec.source_path or spec.name})"
    return hint


def _verdict(
    rows_read: int,
    accepted: int,
    quarantined: int,
    outcomes,
    rare: dict,
    drift_fig: dict,
    opts: ValidationOptions,
    hint: str = "",
) -> tuple[str, list[str], list[str]]:
    fails, warns = [], []
    if rows_read == 0:
        fails.append("no rows: the catalog holds a header but no products")
    elif accepted == 0:
        fails.append(f"no rows accepted: all {rows_read} rows were quarantined{hint}")
    elif quarantined / rows_read > opts.max_quarantine_share:
        fails.append(
            f"{quarantined} of {rows_read} rows quarantined ({quarantined / rows_read:.1%}), more than "
            f"max_quarantine_share {opts.max_quarantine_share:.0%}{hint}"
        )
    for o in outcomes:
        if o.error:
            fails.append(f"expectation {o.name} could not run: {o.error}")
        elif not o.success and o.kind == "dataset":
            fails.append(f"dataset expectation {o.name} failed ({o.unexpected_count} unexpected)")
    if quarantined and not fails:
        warns.append(f"{quarantined} rows quarantined")
    if rare:
        warns.append(f"{len(rare)} tags have fewer than {opts.min_examples_per_tag} examples (not trainable)")
    fails += drift_fig.get("fails", [])
    warns += drift_fig.get("alerts", [])
    verdict = "fail" if fails else ("warn" if warns else "pass")
    return verdict, fails, warns


# ---- progress ------------------------------------------------------------------------------------------
_STAGES = {  # in the order they run -> what the bar says
    "read": "reading rows",
    expectations.ROW_SUITE: "row checks",
    expectations.TAG_SUITE: "tag checks",
    expectations.DRIFT_SUITE: "drift checks",
    "data docs": "Data Docs",
    "quarantine": "quarantine",
    "record": "recording",
}


class _Progress:
    """One bar over the validation's stages, with the rows read so far while reading. ``enabled=None`` lets
    tqdm decide (shown on a terminal, not in Airflow's task logs)."""

    def __init__(self, enabled: bool | None) -> None:
        disable = None if enabled is None else not enabled
        self.bar = tqdm(total=len(_STAGES), unit="stage", desc="validate", disable=disable)
        self.current: str | None = None

    def stage(self, name: str) -> None:
        """``name`` starts (the one before it is done)."""
        if self.current is not None:
            self.bar.update(1)
        self.current = name
        self.bar.set_description_str(f"validate: {_STAGES.get(name, name)}")

    def rows(self, n: int) -> None:
        self.bar.set_postfix_str(f"{n:,} rows")

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.set_description_str("validate")
        self.bar.close()


# ---- entry point ---------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One validation's working state, filled step by step by :func:`validate_catalog`."""

    source: str
    spec: DatasetSpec
    opts: ValidationOptions
    read: CatalogRead
    digest: str
    sid: str
    snap_dir: Path
    site_dir: Path
    library: dict[str, str] = field(default_factory=dict)
    rows: pd.DataFrame | None = None
    outcomes: list = field(default_factory=list)
    report_path: Path | None = None
    accepted: pd.DataFrame | None = None
    stats: dict = field(default_factory=lambda: {"rows": 0})
    drift: dict = field(default_factory=lambda: {"baseline": None})


def validate_catalog(
    source: str | Path,
    spec: str | DatasetSpec,
    settings: Settings,
    *,
    options: ValidationOptions | None = None,
    progress: bool | None = None,
) -> ValidationResult:
    """Validate a catalog source (file path or ``db:products[/<catalog>]``) and record the snapshot.

    Returns the result for every verdict, *fail* included (the caller decides to stop). ``progress``: a bar
    over the stages (None: on a terminal only).

    Raises:
        CatalogError: the source is unusable as a whole (see the module docstring).
        SpecError: unknown or malformed spec.
    """
    started = time.perf_counter()
    opts = options or ValidationOptions()
    spec = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    engine = get_engine(settings)
    _ensure_schema(engine)
    bar = _Progress(progress)
    try:
        result = _validate(source, spec, opts, engine, settings, bar, started)
    finally:
        bar.close()
    log.info(
        "snapshot %s: verdict %s (%d accepted, %d quarantined)",
        result.snapshot_id,
        result.verdict,
        result.rows_accepted,
        result.rows_quarantined,
    )
    return result


def _validate(source, spec: DatasetSpec, opts: ValidationOptions, engine, settings: Settings, bar: _Progress, started):
    """The stages of :func:`validate_catalog`, in order."""
    bar.stage("read")
    run = _read_snapshot(source, spec, opts, engine, settings, bar.rows)  # 1. read, digest, id
    _run_expectations(run, engine, bar.stage)  # 2-3. GX suites: rows, tags of the accepted rows, drift of those
    bar.stage("quarantine")
    quarantine, n_quarantined = _quarantine_and_accept(run)  # 4. quarantine with a reason, keep the rest
    candidates, rare, trainable_ok = _tag_findings(run)  # 5. new-tag candidates, rare trainable tags
    verdict, reasons, failed = _decide(run, quarantine, n_quarantined, rare, trainable_ok)  # 6. verdict
    result = ValidationResult(  # 7. record and report
        snapshot_id=run.sid,
        spec=spec.name,
        digest=run.digest,
        verdict=verdict,
        rows_read=run.read.rows_read,
        rows_accepted=len(run.accepted),
        rows_quarantined=n_quarantined,
        quarantine_path=str(run.snap_dir / "quarantine.csv"),
        report_path=str(run.report_path) if run.report_path else None,
        accepted_path=str(run.snap_dir / "accepted.parquet"),
        drift=run.drift,
        failed_expectations=failed,
        reasons=reasons,
        quarantine_reasons=dict(Counter(q["expectation"] for q in quarantine)),
        new_tag_candidates=candidates,
        rare_tags=rare,
        result_path=str((run.site_dir if run.report_path else run.snap_dir) / "validation_result.json"),
        seconds=round(time.perf_counter() - started, 3),
    )
    bar.stage("record")
    _record(run, result, quarantine, engine)
    return result


def _read_snapshot(
    source, spec: DatasetSpec, opts: ValidationOptions, engine: sa.Engine, settings: Settings, on_rows=None
) -> _Run:
    """Read the source, identify its content (digest -> snapshot id), prepare the snapshot and report folders."""
    read = snapshot.read_source(source, spec, engine, on_rows=on_rows)
    digest = snapshot.content_digest(read.frame, read.rejects)
    sid = snapshot.snapshot_id_for(spec.name, digest)
    snap_dir = snapshot.snapshot_dir(settings, sid)
    site_dir = settings.reports_dir / "validation" / sid
    shutil.rmtree(site_dir, ignore_errors=True)
    snap_dir.mkdir(parents=True, exist_ok=True)
    log.info("snapshot %s: %d rows read (%d unparseable) from %s", sid, read.rows_read, len(read.rejects), source)
    return _Run(str(source), spec, opts, read, digest, sid, snap_dir, site_dir)


def _run_expectations(run: _Run, engine: sa.Engine, on_stage=None) -> None:
    """The three GX suites in order: the parsed rows; the tags of the rows that passed; their drift against the
    last accepted snapshot of this spec. Leaves outcomes, accepted rows, stats and drift on ``run``."""
    opts, E = run.opts, expectations
    run.library = library = _library(engine)
    run.rows = rows = expectations.rows_frame(run.read.frame, run.spec.null_values, opts.split_seed)
    run.accepted = rows.iloc[:0]
    prev = snapshot.last_accepted(engine, run.spec.name, exclude=run.sid)

    def accept(row_outcomes) -> pd.DataFrame | None:
        bad = {k for o in row_outcomes if o.kind == "row" and not o.success for k in o.unexpected_keys}
        run.accepted = acc = rows.loc[~rows["row_number"].isin(bad)]
        return expectations.tags_frame(acc, library) if len(acc) else None

    def measure_drift(_) -> pd.DataFrame | None:
        acc = run.accepted
        if acc.empty:
            return None
        run.stats = drift.snapshot_stats(acc) | {"reviewer_labels": run.read.reviewer_labels}
        if not prev:
            return None
        run.drift = drift.compare(
            prev["stats"],
            run.stats,
            _previous_ids(prev),
            set(acc["product_id"].astype(str)),
            label_psi_warn=opts.label_psi_warn,
            new_products_warn=opts.new_products_warn,
            title_length_psi_warn=opts.title_length_psi_warn,
            label_psi_fail=opts.label_psi_fail,
        ) | {"baseline": prev["id"]}
        return expectations.drift_frame(run.drift)

    batches = [
        E.Batch(
            E.ROW_SUITE,
            "row_number",
            E.row_rules(opts.min_title_chars, opts.max_title_chars),
            lambda _: E.scalar_rows(rows),
        ),
        E.Batch(E.TAG_SUITE, "tag", E.tag_rules(list(library), opts.min_examples_per_tag), accept),
        E.Batch(
            E.DRIFT_SUITE,
            "subject",
            E.drift_rules(opts.label_psi_warn, opts.new_products_warn, opts.title_length_psi_warn),
            measure_drift,
        ),
    ]
    empty = E.SuiteRun(outcomes=[], report_path=None)
    suite_run = E.run_suites(batches, run.site_dir, run.sid, on_stage) if len(rows) else empty
    run.outcomes, run.report_path = suite_run.outcomes, suite_run.report_path


def _quarantine_and_accept(run: _Run) -> tuple[list[dict], int]:
    """Quarantine rows with the rule and value that failed, write them and the accepted rows; checks the gate's
    invariant rows read = accepted + quarantined (a violation is a bug: it raises, never loses a row)."""
    quarantine = _quarantine_rows(run.read, run.rows, run.outcomes, run.opts)
    n_quarantined = len({q["row_number"] for q in quarantine})
    run.accepted = run.accepted[[*run.read.frame.columns, "split"]].reset_index(drop=True)
    if len(run.accepted) + n_quarantined != run.read.rows_read:
        raise RuntimeError(
            f"rows read {run.read.rows_read} != accepted {len(run.accepted)} + quarantined {n_quarantined}"
        )
    _write_quarantine(quarantine, run.snap_dir / "quarantine.csv")
    snapshot.write_accepted(run.accepted, run.snap_dir / "accepted.parquet")
    return quarantine, n_quarantined


def _tag_findings(run: _Run) -> tuple[list[str], dict[str, int], int]:
    """(new-tag candidates, rare tags with their example counts, number of trainable tags with enough examples)."""
    by_name = {o.name: o for o in run.outcomes}
    candidates = sorted(by_name["tag_in_library"].unexpected_keys) if "tag_in_library" in by_name else []
    tf = expectations.tags_frame(run.accepted, run.library)
    rare_keys = set(by_name["tag_min_examples"].unexpected_keys) if "tag_min_examples" in by_name else set()
    rare = {t: int(n) for t, n in zip(tf["tag"], tf["examples"], strict=True) if t in rare_keys}
    trainable_ok = int((tf["trainable_examples"] >= run.opts.min_examples_per_tag).sum())
    return candidates, rare, trainable_ok


def _decide(run: _Run, quarantine: list[dict], n_quarantined: int, rare: dict, trainable_ok: int):
    """(verdict, reasons: fails then warnings, failed expectations) from everything measured."""
    read, opts = run.read, run.opts
    verdict, fails, warns = _verdict(
        read.rows_read,
        len(run.accepted),
        n_quarantined,
        run.outcomes,
        rare,
        run.drift,
        opts,
        _hint(quarantine, run.spec),
    )
    if read.rows_read and len(run.accepted) and trainable_ok == 0:
        fails.append(f"no tag has {opts.min_examples_per_tag} examples: nothing to train on")
        verdict = "fail"
    failed = [
        {"name": o.name, "kind": o.kind, "expectation": o.expectation_type, "unexpected": o.unexpected_count}
        for o in run.outcomes
        if not o.success
    ]
    if read.rejects:
        failed.insert(0, {"name": PARSE_RULE, "kind": "row", "expectation": "reader", "unexpected": len(read.rejects)})
    return verdict, fails + warns, failed


def _record(run: _Run, result: ValidationResult, quarantine: list[dict], engine: sa.Engine) -> None:
    """The snapshot and its quarantine in Postgres (one upsert), ``validation_result.json`` beside the report."""
    stats = run.stats | {
        "drift": run.drift,
        "reasons": result.reasons,
        "quarantine_reasons": result.quarantine_reasons,
        "new_tag_candidates": result.new_tag_candidates[:1000],
        "rare_tags": result.rare_tags,
        "options": asdict(run.opts),
    }
    record = {
        "id": run.sid,
        "spec": run.spec.name,
        "source_uri": run.source,
        "digest": run.digest,
        "rows_read": result.rows_read,
        "rows_accepted": result.rows_accepted,
        "rows_quarantined": result.rows_quarantined,
        "verdict": result.verdict,
        "report_path": result.report_path,
        "accepted_path": result.accepted_path,
        "stats": stats,
    }
    snapshot.record_snapshot(engine, record, quarantine)
    result_path = Path(result.result_path)
    result_path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(result), indent=2, ensure_ascii=False, default=str)
    result_path.write_text(text, encoding="utf-8")
    (run.snap_dir / "validation_result.json").write_text(text, encoding="utf-8")


# ---- spec check: the reader and the row suite on a file, nothing written --------------------------------------
@dataclass(frozen=True)
class Preview:
    """What importing ``path`` through a spec would give (``tagger spec check``)."""

    spec: str
    path: str
    rows_read: int
    accepted: int
    quarantined: int
    items: list[dict]  # the first accepted rows as catalog items, with the model text
    facets: dict[str, dict]  # facet -> tags, rows tagged, tags with enough examples, most common tags
    by_rule: dict[str, int]  # quarantine rule -> rows
    quarantine: list[dict]  # the first quarantined rows with their reasons
    warnings: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _facet_in_text(spec: DatasetSpec, template: list[dict]) -> list[str]:
    return [
        f"facet {f!r} reads {spec.facets[f].column!r}, which is also in the model text: the tagger reads the answer "
        "off its input (near-perfect F1 that inflates micro-F1); take it out of text: or out of the facets"
        for f in spec.facets_in_text(template)
    ]


def preview_catalog(
    source: str | Path, spec: str | DatasetSpec, opts: ValidationOptions | None = None, *, limit: int | None = None,
    show: int = 5, settings: Settings | None = None,
) -> Preview:  # fmt: skip
    """Read ``source`` through ``spec`` and run the row suite (GX, in a temporary folder) as validation would:
    rows read, accepted and quarantined with reasons, the first items with their model text, tags per facet and
    warnings. Writes nothing: no snapshot, no database. ``source`` is a file, or ``db:products[/<catalog>]`` (the
    products table, read from ``settings``' database as validation would).

    Raises:
        CatalogError: the file is unusable as a whole, or the table holds no such catalog.
        SpecError: the spec does not load.
    """
    import tempfile

    from pipeline.catalog.text import build_text, template_for

    opts = opts or ValidationOptions()
    spec_obj = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    from_db = str(source).startswith(snapshot.DB_PREFIX)  # a file needs no database (none is started for it)
    read = snapshot.read_source(source, spec_obj, get_engine(settings or Settings()) if from_db else None, limit=limit)
    rows = expectations.rows_frame(read.frame, spec_obj.null_values, opts.split_seed)
    E = expectations
    batch = E.Batch(E.ROW_SUITE, "row_number", E.row_rules(opts.min_title_chars, opts.max_title_chars),
                    lambda _: E.scalar_rows(rows))  # fmt: skip
    outcomes = []
    if len(rows):
        with tempfile.TemporaryDirectory(prefix="spec-check-") as tmp:
            outcomes = E.run_suites([batch], Path(tmp), "spec-check").outcomes
    quarantine = _quarantine_rows(read, rows, outcomes, opts)
    bad = {q["row_number"] for q in quarantine}
    accepted = read.frame[~read.frame["row_number"].isin(bad)]
    if len(accepted) + len(bad) != read.rows_read:  # the gate's invariant, as in validation
        raise RuntimeError(f"rows read {read.rows_read} != accepted {len(accepted)} + quarantined {len(bad)}")
    template = template_for(spec_obj)
    items = []
    for rec in accepted.head(show).to_dict(orient="records"):
        keep = ("row_number", "product_id", "title", "brand", "category_path", "attributes", "tags")
        items.append({k: rec[k] for k in keep} | {"model_text": build_text(rec, template)})
    facets = {}
    counts = Counter(t for tags in accepted["tags"] for t in tags)
    for f in spec_obj.facets:
        mine = {t: n for t, n in counts.items() if t.split(":", 1)[0] == f}
        rows_tagged = sum(1 for tags in accepted["tags"] if any(t.split(":", 1)[0] == f for t in tags))
        facets[f] = {"tags": len(mine), "rows": rows_tagged,
                     "trainable": sum(1 for n in mine.values() if n >= opts.min_examples_per_tag),
                     "top": Counter(mine).most_common(5)}  # fmt: skip
    warnings = _facet_in_text(spec_obj, template)
    warnings += [f"facet {f!r} tags no row: check its column or pattern" for f, v in facets.items() if not v["rows"]]
    for slug, values in sorted(read.merged.items())[:MERGES_SHOWN]:
        shown = ", ".join(repr(v) for v in sorted(values)[:4])
        warnings.append(f"{shown} differ only in case or punctuation: one tag {slug} (use value_map to name it)")
    if len(read.merged) > MERGES_SHOWN:
        warnings.append(f"... and {len(read.merged) - MERGES_SHOWN} more tags written several ways")
    return Preview(
        spec=spec_obj.source_path or spec_obj.name, path=str(source), rows_read=read.rows_read,
        accepted=len(accepted), quarantined=len(bad), items=items, facets=facets,
        by_rule=dict(Counter(q["expectation"] for q in quarantine)), quarantine=quarantine[:20], warnings=warnings,
    )  # fmt: skip

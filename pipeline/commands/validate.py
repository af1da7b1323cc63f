"""``tagger validate PATH --spec NAME``: the catalog validation gate (exit 1 on verdict fail, 2 on errors)."""

from __future__ import annotations

import typer

from pipeline.settings import get_settings

_COLORS = {"pass": "green", "warn": "yellow", "fail": "red"}
# flag -> ValidationOptions field (a unit test checks that the flag defaults equal the dataclass defaults)
FLAGS = {
    "min_examples": "min_examples_per_tag",
    "min_title": "min_title_chars",
    "max_title": "max_title_chars",
    "max_quarantine_share": "max_quarantine_share",
    "label_psi_warn": "label_psi_warn",
    "label_psi_fail": "label_psi_fail",
    "new_products_warn": "new_products_warn",
    "title_length_psi_warn": "title_length_psi_warn",
}


def validate(
    source: str = typer.Argument(
        ...,
        help="Catalog file (CSV/JSONL/Parquet, .zip/.gz), or db:products or db:products/CATALOG.",
    ),
    spec: str = typer.Option(..., "--spec", "-s", help="Dataset spec name (myntra, product1m) or YAML path."),
    min_examples: int = typer.Option(5, help="Minimum examples of a trainable tag (fewer: warn)."),
    min_title: int = typer.Option(2, help="Shortest allowed title, characters."),
    max_title: int = typer.Option(300, help="Longest allowed title, characters."),
    max_quarantine_share: float = typer.Option(0.2, help="Quarantined share of rows above which the verdict is fail."),
    label_psi_warn: float = typer.Option(0.2, help="Per-facet label PSI above which drift warns."),
    label_psi_fail: float = typer.Option(None, help="Per-facet label PSI above which drift fails (default: never)."),
    new_products_warn: float = typer.Option(0.5, help="Share of new product ids above which drift warns."),
    title_length_psi_warn: float = typer.Option(0.2, help="Title-length PSI above which drift warns."),
) -> None:
    """Validate a catalog snapshot: accept, quarantine, report, detect drift."""
    given = dict(locals())  # the flags, before anything else is bound
    import logging

    from rich.console import Console
    from rich.table import Table

    from pipeline.validation.validate import ValidationOptions, validate_catalog

    opts = ValidationOptions(**{field: given[flag] for flag, field in FLAGS.items()})
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # GX logs its internals at INFO
    r = validate_catalog(source, spec, get_settings(), options=opts)
    console = Console(soft_wrap=True)
    color = _COLORS[r.verdict]
    console.print(f"[bold {color}]verdict: {r.verdict.upper()}[/]  snapshot {r.snapshot_id}  ({r.seconds:.1f} s)")
    console.print(f"rows read {r.rows_read:,}  accepted {r.rows_accepted:,}  quarantined {r.rows_quarantined:,}")
    for reason in r.reasons:
        console.print(f"  [{color}]•[/] {reason}")
    if r.quarantine_reasons:
        examples = _first_reasons(r.quarantine_path)
        table = Table("quarantine rule", "rows", "first reason", title="quarantined rows", title_justify="left")
        for name, n in sorted(r.quarantine_reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(name, str(n), examples.get(name, ""))
        console.print(table)
    failed = [f for f in r.failed_expectations if f["kind"] != "row"]
    if failed:
        table = Table("expectation", "kind", "unexpected", title="other failed expectations", title_justify="left")
        for f in failed:
            table.add_row(f"{f['name']} ({f['expectation']})", f["kind"], str(f["unexpected"]))
        console.print(table)
    if r.new_tag_candidates:
        shown = ", ".join(r.new_tag_candidates[:5])
        more = f" (+{len(r.new_tag_candidates) - 5} more)" if len(r.new_tag_candidates) > 5 else ""
        console.print(f"new-tag candidates (not in the library): {len(r.new_tag_candidates)}: {shown}{more}")
    _print_drift(console, r.drift)
    console.print(f"quarantine file: {r.quarantine_path}")
    console.print(f"accepted rows:   {r.accepted_path}")
    console.print(f"HTML report:     {r.report_path or '(none: no rows to validate)'}")
    if r.verdict == "fail":
        raise typer.Exit(code=1)


def _first_reasons(path: str | None) -> dict[str, str]:
    import csv

    out: dict[str, str] = {}
    with open(path or "", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["expectation"], f"row {row['row_number']}: {row['reason']}")
    return out


def _print_drift(console, fig: dict) -> None:
    if not fig.get("baseline"):
        console.print("drift: no earlier accepted snapshot of this spec to compare with")
        return
    parts = [f"{f} PSI {v['psi']:.3f} / JS {v['js']:.3f}" for f, v in fig.get("facets", {}).items()]
    console.print(f"drift vs {fig['baseline']}: " + "; ".join(parts))
    nps, tps = fig.get("new_product_share"), fig.get("title_length_psi")
    console.print(
        f"  new products {'n/a' if nps is None else f'{nps:.1%}'}; "
        f"title length PSI {'n/a' if tps is None else f'{tps:.3f}'}"
    )


def register(app: typer.Typer) -> None:
    """Add ``tagger validate`` to the root app."""
    app.command("validate")(validate)

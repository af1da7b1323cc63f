"""``tagger encoders list|show``: the encoders a tagger can be trained on, and how one reads a text."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from pipeline.commands import console
from pipeline.settings import get_settings

encoders_app = typer.Typer(
    help="The encoders a tagger trains on (each shipped in a package): list them, see how one tokenizes a text.",
    no_args_is_help=True,
)


@encoders_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Every encoder: model, package, languages, size, text prefix, training defaults, ready or not."""
    from pipeline.training import encoders

    home = get_settings().home_dir
    rows = [
        {
            "name": e.name,
            "model": e.model,
            "package": e.package,
            "languages": e.languages,
            "layers": e.layers,
            "params_m": e.params_m,
            "prefix": e.prefix,
            "defaults": e.defaults,
            "ready": encoders.is_ready(e, home),
            "default_for": "locale en"
            if e.name == encoders.DEFAULT_ENCODER
            else ("locale zh / mixed" if e.name == encoders.MULTILINGUAL_ENCODER else ""),
        }
        for e in encoders.ENCODERS.values()
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(box=None)
    for col in ("name", "model", "package", "languages", "layers", "params", "prefix", "default for", "ready"):
        table.add_column(col)
    for r in rows:
        ready = "yes" if r["ready"] else "no (converted on first use)"
        table.add_row(r["name"], r["model"], r["package"], r["languages"], str(r["layers"]), f"{r['params_m']:.0f}M",
                      repr(r["prefix"]) if r["prefix"] else "-", r["default_for"], ready)  # fmt: skip
    console.print(table)


@encoders_app.command("show")
def show(
    name: str = typer.Argument(..., help="Encoder name (see `tagger encoders list`) or a local transformers folder."),
    text: str = typer.Argument(..., help="A product text."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The tokens NAME reads TEXT as (prefix and specials included), and the share the tokenizer does not know."""
    from pipeline.training import encoders

    report = encoders.tokenize_report(name, text, get_settings().home_dir)
    if as_json:
        console.print_json(json.dumps(report, ensure_ascii=False))
        return
    from rich.markup import escape

    shown = " ".join(f"[red]{escape(t)}[/]" if t == report["unk_token"] else escape(t) for t in report["tokens"])
    console.print(shown, markup=True, highlight=False)
    console.print(
        f"{report['unknown']} of {report['content_tokens']} tokens unknown ({report['unknown_share']:.0%}) "
        f"to {name} ({report['unk_token']!r})"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(encoders_app, name="encoders")

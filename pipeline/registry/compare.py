"""Compare two registered versions: metrics side by side per facet with deltas, and an HTML page with their
plots next to each other (images embedded, so the page is one self-contained file)."""

from __future__ import annotations

import base64
import html
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import registry
from pipeline.settings import Settings

log = logging.getLogger(__name__)

HEADLINE = ("micro_f1", "macro_f1", "precision_at_1", "ece")


@dataclass(frozen=True)
class CompareResult:
    name: str
    a: int
    b: int
    rows: list[dict]  # {"metric", "a", "b", "delta"}; delta = b - a (None when one side lacks it)
    same_test_split: bool
    html_path: str
    json_path: str


def metric_rows(ma: dict, mb: dict) -> list[dict]:
    """Headline, baseline and per-facet metrics of two metrics.json bodies, with b - a deltas."""

    def row(metric: str, a, b) -> dict:
        delta = round(b - a, 6) if isinstance(a, int | float) and isinstance(b, int | float) else None
        return {"metric": metric, "a": a, "b": b, "delta": delta}

    rows = [row("encoder", ma.get("encoder_name"), mb.get("encoder_name"))]  # a retrain on another encoder
    rows += [row(k, ma["model"].get(k), mb["model"].get(k)) for k in HEADLINE]
    rows.append(
        row("baseline.micro_f1", (ma.get("baseline") or {}).get("micro_f1"), (mb.get("baseline") or {}).get("micro_f1"))
    )
    fa, fb = ma["model"].get("facets", {}), mb["model"].get("facets", {})
    for facet in sorted(set(fa) | set(fb)):
        for key in ("micro_f1", "macro_f1", "accuracy"):
            rows.append(row(f"{facet}.{key}", fa.get(facet, {}).get(key), fb.get(facet, {}).get(key)))
    return rows


def _fmt(v, sign: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:+.4f}" if sign else f"{v:.4f}"
    return str(v)


def _row_html(r: dict) -> str:
    d = r["delta"] or 0
    cls = "up" if d > 0 else "down" if d < 0 else ""
    return (
        f"<tr><td>{html.escape(r['metric'])}</td><td>{_fmt(r['a'])}</td><td>{_fmt(r['b'])}</td>"
        f'<td class="{cls}">{_fmt(r["delta"], sign=True)}</td></tr>'
    )


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.name)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def render_html(name: str, a: int, b: int, rows: list[dict], plots: dict[int, list[Path]], note: str) -> str:
    head = f"<tr><th>metric</th><th>v{a}</th><th>v{b}</th><th>delta (v{b} − v{a})</th></tr>"
    body = "".join(_row_html(r) for r in rows)
    names = sorted({p.name for ps in plots.values() for p in ps})
    by_name = {v: {p.name: p for p in ps} for v, ps in plots.items()}
    missing = "<p>(no such plot)</p>"
    cells = [
        "".join(f"<div><h3>v{v}</h3>{_img(by_name[v][n]) if n in by_name[v] else missing}</div>" for v in (a, b))
        for n in names
    ]
    plot_rows = "".join(f'<div class="pair">{c}</div>' for c in cells) or "<p>Neither version has plots.</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)} v{a} vs v{b}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}.up{{color:#070}}.down{{color:#b00}}
.pair{{display:flex;gap:2em}}.pair>div{{flex:1}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(name)}: version {a} vs version {b}</h1><p>{html.escape(note)}</p>
<table>{head}{body}</table><h2>Plots</h2>{plot_rows}</body></html>"""


def compare(settings: Settings, a: int, b: int, out_dir: Path | None = None) -> CompareResult:
    """Metrics of versions ``a`` and ``b`` side by side; writes ``<name>-v<a>-v<b>.html`` and ``.json``."""
    name = settings.registered_model_name
    ma, mb = registry.version_metrics(settings, a), registry.version_metrics(settings, b)
    rows = metric_rows(ma, mb)
    same = ma.get("test_digest") == mb.get("test_digest")
    note = (
        "Both versions were scored on the same frozen test split."
        if same
        else ("Warning: the versions were scored on different test splits; the deltas are not comparable.")
    )
    plots = {int(a): registry.version_plots(settings, a), int(b): registry.version_plots(settings, b)}
    out_dir = out_dir or settings.reports_dir / "compare"
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"{name}-v{int(a)}-v{int(b)}.html"
    html_path.write_text(render_html(name, int(a), int(b), rows, plots, note), encoding="utf-8")
    result = CompareResult(name, int(a), int(b), rows, same, str(html_path), str(html_path.with_suffix(".json")))
    Path(result.json_path).write_text(json.dumps(asdict(result), indent=1))
    log.info("comparison of %s v%s vs v%s written to %s", name, a, b, html_path)
    return result

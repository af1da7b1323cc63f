"""Shared helpers for the benchmark scripts: a scratch database and result printing."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(os.environ.get("TAGGER_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def scratch_settings(prefix: str = "bench"):
    """Settings on a new empty database: the machine's Postgres if it answers, else the embedded one."""
    import sqlalchemy as sa

    from pipeline.core.services import _as_sqlalchemy, _start_embedded, ensure_database_exists
    from pipeline.settings import Settings

    home = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    base = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    try:
        with sa.create_engine(base, connect_args={"connect_timeout": 2}).connect():
            pass
    except Exception:
        base = _as_sqlalchemy(_start_embedded(str(home / "pgdata")))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    ensure_database_exists(url)
    mlflow = sa.engine.make_url(base).set(database=name + "_mlflow").render_as_string(hide_password=False)
    ensure_database_exists(mlflow)
    return Settings(home=home, database_url=url, mlflow_tracking_uri=mlflow)


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
    admin.dispose()


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def deepest(tags: list[str], facet: str) -> str | None:
    """A row's most specific tag of ``facet`` (the leaf of a hierarchy), or None."""
    return max((t for t in tags if t.startswith(facet + ":")), key=len, default=None)


def title_disagreement(frame, facet: str):
    """The known-noise rule of ``bench_label_noise`` and ``bench_suspects``: (each row's value in ``facet``, its
    most specific tag or None; the rows that share their normalised title with another row and have a value; the
    index of those whose value differs from the most common value for their title)."""
    value = frame["tags"].map(lambda tags: deepest(tags, facet))
    norm = frame["title"].str.lower().str.split().str.join(" ")
    shared = value.notna() & (norm.groupby(norm).transform("size") > 1)
    v, n = value[shared], norm[shared]
    majority = v.groupby(n).agg(lambda x: x.value_counts().index[0])
    return value, shared, v.index[v != n.map(majority)]


def read_rows(spec, data_dir: Path) -> tuple[list[str], list[list[str]]]:
    """The catalog's header and rows, surplus title commas rejoined (the spec's overflow rule)."""
    from pipeline.catalog.spec import default_source

    src = Path(default_source(spec.name, data_dir))
    with zipfile.ZipFile(src) as z:
        text = z.read(spec.member).decode(spec.encoding)
    lines = list(csv.reader(io.StringIO(text)))
    header, rows = lines[0], []
    at = header.index(spec.overflow_column)
    for r in lines[1:]:
        if len(r) > len(header):
            r = r[:at] + [",".join(r[at : at + len(r) - len(header) + 1])] + r[at + len(r) - len(header) + 1 :]
        if len(r) == len(header):
            rows.append(r)
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def timed_suspects(frame, spec):
    """(model texts of ``frame`` through ``spec``, its exclusive facets, suspects, seconds finding them took)."""
    import time

    from pipeline.catalog.text import build_text, template_for
    from pipeline.review.suspects import find_suspects

    template = template_for(spec)
    texts = [build_text(r, template) for r in frame.to_dict(orient="records")]
    exclusive = [f for f, rule in spec.facets.items() if rule.exclusive]
    t0 = time.perf_counter()
    suspects = find_suspects(texts, list(frame["tags"]), exclusive, n_jobs=-1)
    return texts, exclusive, suspects, time.perf_counter() - t0

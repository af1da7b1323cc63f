"""Real-time tagging: from a product's INSERT committed to its tags committed, at steady rates of new products.

Everything real and on this machine: Postgres (the machine's, else embedded), the outbox triggers, a tritonserver
serving a MiniLM bundle (an untrained head over Myntra's label space unless ``--bundle``: speed does not depend on
the head's weights), and ``tagger tag-worker`` as its own process. A load thread inserts real Myntra titles, one
product per transaction, open loop at each rate (a late insert is sent at once, never skipped); a listener on
``tagger_tagged`` (notified when the worker's batch commits) stamps each product when its tags are committed.

    .venv/bin/python bench/bench_realtime.py [--rates 1 50 100 200 500] [--seconds 10] [--bundle PATH]

Per rate: products sent, offered and achieved rate, p50/p95/p99/max latency, worker batches and mean batch size,
and whether the worker kept up (its backlog drained within 2 s of the last insert); and, first, what Triton alone
answers for back-to-back requests of ``--max-batch`` products (the ceiling of any worker on the machine). Results go to
``bench/results/bench_realtime.json``. The baseline is the hourly ``tagger_batch_tag`` DAG, whose latency is its
schedule (up to 60 min), so no in-run baseline is timed here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import drop_database, save, scratch_settings

log = logging.getLogger("bench")


def library_from_bundle(engine, bundle_path: Path) -> None:
    """The bundle's tags as the tag library (so every predicted tag is stored, as with a real catalog)."""
    from pipeline.catalog.taglib import FacetDef, TagDef, upsert_facets, upsert_tags
    from pipeline.training.bundle import load_bundle

    slugs = set(load_bundle(bundle_path).label_map.slugs)
    for s in list(slugs):  # every path prefix of a hierarchical slug is a tag too (the parent chain)
        facet, _, path = s.partition(":")
        parts = path.split("/")
        slugs |= {f"{facet}:{'/'.join(parts[:k])}" for k in range(1, len(parts))}
    facets = sorted({s.split(":", 1)[0] for s in slugs})
    with engine.begin() as conn:
        upsert_facets(conn, [FacetDef(f, True, f == "category") for f in facets])
        tags = []
        for s in sorted(slugs, key=lambda x: x.count("/")):  # parents first
            facet, _, path = s.partition(":")
            parent = f"{facet}:{path.rsplit('/', 1)[0]}" if "/" in path else None
            tags.append(TagDef(s, facet, {"en": path}, parent=parent))
        upsert_tags(conn, tags)


def run_rate(conninfo: str, titles: list[str], rate: float, seconds: float) -> dict:
    """Insert ``rate`` products/s for ``seconds`` (open loop); return latencies from the tagged notifications."""
    import psycopg

    n = max(1, int(rate * seconds))
    sent: dict[int, float] = {}
    done: dict[int, float] = {}
    batches = [0]
    stop = threading.Event()
    listening = threading.Event()

    def listener():
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("LISTEN tagger_tagged")
            listening.set()
            while not stop.is_set():
                for note in conn.notifies(timeout=0.2):
                    now = time.time()
                    batches[0] += 1
                    for pk in note.payload.split(","):
                        done.setdefault(int(pk), now)

    lt = threading.Thread(target=listener, daemon=True)
    lt.start()
    listening.wait(10)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        t0 = time.time()
        for i in range(n):
            due = t0 + i / rate
            if (wait := due - time.time()) > 0:
                time.sleep(wait)
            title = titles[i % len(titles)]
            pk = conn.execute(
                "insert into products (catalog, product_id, title, content_hash) "
                "values ('bench', gen_random_uuid()::text, %s, '') returning id",
                (title,),
            ).fetchone()[0]
            sent[pk] = time.time()  # autocommit: the INSERT has committed
        t_last = time.time()
    deadline = t_last + max(30.0, seconds * 3)
    while time.time() < deadline and len(done.keys() & sent.keys()) < len(sent):
        time.sleep(0.05)
    stop.set()
    lt.join(5)
    lat = np.array([(done[pk] - t) * 1000 for pk, t in sent.items() if pk in done])
    drained_after = max(done[pk] for pk in sent if pk in done) - t_last if lat.size else float("nan")
    return {
        "rate": rate,
        "sent": len(sent),
        "tagged": int(lat.size),
        "offered_per_s": round(len(sent) / max(t_last - t0, 1e-9), 1),
        "tagged_per_s": round(lat.size / max(max(done.values(), default=t0) - t0, 1e-9), 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
        "batches": batches[0],
        "mean_batch": round(lat.size / max(batches[0], 1), 1),
        "kept_up": bool(lat.size == len(sent) and drained_after < 2.0),
        "drained_s_after_last_insert": round(drained_after, 2),
    }


def triton_ceiling(settings, titles: list[str], batch: int, seconds: float = 5.0) -> float:
    """Products/s Triton alone answers for back-to-back ``batch``-product requests (the worker's own request shape),
    nothing else running: the most any worker on this machine could tag."""
    from serving.client import TaggerClient

    products = [{"title": t} for t in titles]
    with TaggerClient(settings.triton_grpc_url, settings.triton_model_name) as client:
        client.infer_products(products[:batch])  # warm
        n, t0, i = 0, time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            client.infer_products(products[i : i + batch])
            n, i = n + batch, (i + batch) % (len(products) - batch)
        return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=float, nargs="+", default=[1, 50, 100, 200, 500], help="products per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of load per rate (1/s: at least 30)")
    ap.add_argument("--bundle", type=Path, help="bundle folder (default: untrained MiniLM over Myntra's labels)")
    ap.add_argument("--max-batch", type=int, default=64, help="the worker's --max-batch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("alembic", "pgserver", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from bench_serving import default_bundle

    from pipeline.catalog.samples import sample_titles
    from pipeline.catalog.taglib import ensure_schema
    from pipeline.settings import get_settings
    from pipeline.tagging import realtime
    from serving.repository import build_version, write_config
    from serving.server import TritonServer, free_port

    base = scratch_settings("rt")
    work = Path(tempfile.mkdtemp(prefix="bench_realtime_"))
    env = {
        "TAGGER_HOME": str(work / "home"),
        "TAGGER_DATABASE_URL": base.database_url,
        "TAGGER_MLFLOW_TRACKING_URI": base.mlflow_tracking_uri,
        "TAGGER_TRITON_GRPC_URL": f"127.0.0.1:{free_port()}",
        "TAGGER_TRITON_HTTP_URL": f"127.0.0.1:{free_port()}",
        "TAGGER_TRITON_METRICS_PORT": str(free_port()),
        "TAGGER_TRITON_MODEL_NAME": "rt_bench",
    }
    os.environ.update(env)  # the worker process reads the same settings
    get_settings.cache_clear()
    settings = get_settings()
    engine = ensure_schema(settings)
    bundle = args.bundle or default_bundle(work / "bundle", None, settings.home_dir)
    library_from_bundle(engine, bundle)
    titles = sample_titles(2000)
    build_version(bundle, settings.model_repository, "rt_bench", 1, "models:/rt-bench/1", parity_texts=titles[:16],
                  golden=[])  # fmt: skip
    write_config(settings.model_repository, "rt_bench", [1], registered_name="rt-bench")
    server = TritonServer(settings).start()
    results = []
    try:
        ceiling = triton_ceiling(settings, titles, args.max_batch)
        log.info("Triton alone: %.0f products/s in requests of %d", ceiling, args.max_batch)
        rec = realtime.start_detached(settings, [f"--max-batch={args.max_batch}"])
        log.info("worker pid %d, Triton %s", rec.pid, settings.triton_grpc_url)
        conninfo = realtime.listen_conninfo(engine)
        run_rate(conninfo, titles, 5, 2)  # warm-up: Triton's first requests, the worker's connections
        for rate in args.rates:
            res = run_rate(conninfo, titles, rate, max(args.seconds, 30.0 if rate <= 1 else 0.0))
            results.append(res)
            log.info("%s", json.dumps(res))
    finally:
        realtime.stop_detached(settings)
        server.stop()
        engine.dispose()
        drop_database(settings.database_url)
        drop_database(settings.mlflow_tracking_uri)
    out = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "bundle": str(args.bundle or "untrained MiniLM-L6 head over Myntra labels"),
        "max_batch": args.max_batch,
        "triton_alone_per_s": round(ceiling, 1),
        "results": results,
    }
    path = save("bench_realtime", out)
    print("| products/s offered | sent | p50 ms | p95 ms | p99 ms | max ms | batches (mean size) | kept up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        kept = "yes" if r["kept_up"] else f"no: {r['tagged_per_s']}/s"
        cells = [r["offered_per_s"], r["sent"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"]]
        print("| " + " | ".join(map(str, cells)) + f" | {r['batches']} ({r['mean_batch']}) | {kept} |")
    print(f"Triton alone, requests of {args.max_batch} products back to back: {ceiling:.0f} products/s")
    print(f"results: {path}")


if __name__ == "__main__":
    main()

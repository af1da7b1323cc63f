"""Serving benchmark: Triton gRPC vs in-process baselines vs ``mlflow models serve``, same machine, same run.

Systems (all the same tagger bundle, real catalog titles, closed-loop load at concurrency 1/8/32 with
requests of 1 and 16 items):

  a   our Triton deployment (ONNX Runtime, optimised graph) via gRPC, TaggerClient per client thread
  b1  in-process Hugging Face ``pipeline("feature-extraction")`` at default settings + the same pooling/head
      (and the same TF-IDF fusion when the bundle is a hybrid)
  b2  in-process PyTorch eager (``Bundle.predict``, batches of up to 32, fused like the others)
  c   ``mlflow models serve`` of the registered version over REST (needs the registry; ``--no-mlflow`` skips)

Also prints items/s as a share of the physical limit: FLOPs per item at the measured mean token count vs
matmul throughput (fp32 and bf16) measured in the same run.

    .venv/bin/python bench/bench_serving.py --duration 5 [--bundle PATH] [--out reports/bench_serving.json]

Without ``--bundle`` an untrained bundle over the Myntra label space is built on ``--encoder`` (all-MiniLM-L6-v2
by default; ``e5-small`` with its whole 250k vocabulary): speed does not depend on the head's weights.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench")
CONCURRENCY = (1, 8, 32)
SIZES = (1, 16)


# ---- load generator ---------------------------------------------------------------------------------------
def run_cell(make_call, texts: list[str], conc: int, size: int, duration: float) -> dict:
    """Closed loop: ``conc`` threads, each sending ``size``-item requests back to back for ``duration`` s."""
    lat: list[float] = []
    errors = [0]
    items = [0]
    lock = threading.Lock()
    ready = threading.Barrier(conc + 1)

    def worker(k: int):
        call = make_call()
        j = (k * 997) % len(texts)
        for _ in range(2):  # warm-up
            call(texts[j : j + size] or texts[:size])
        ready.wait()  # every thread warmed up
        ready.wait()  # clock started
        end = t_start[0] + duration
        while time.perf_counter() < end:
            batch = [texts[(j + i) % len(texts)] for i in range(size)]
            j += size
            t0 = time.perf_counter()
            try:
                call(batch)
            except Exception as exc:
                with lock:
                    errors[0] += 1
                log.debug("request failed: %s", exc)
                continue
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                items[0] += size

    t_start = [0.0]
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(conc)]
    for t in threads:
        t.start()
    ready.wait()
    t_start[0] = time.perf_counter()
    ready.wait()
    for t in threads:
        t.join(timeout=duration + 120)
    elapsed = time.perf_counter() - t_start[0]
    lat_ms = sorted(x * 1000 for x in lat)
    pct = lambda q: lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))] if lat_ms else float("nan")  # noqa: E731
    return {"items_s": items[0] / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "requests": len(lat),
            "errors": errors[0]}  # fmt: skip


def run_cell_async(url: str, model: str, texts: list[str], conc: int, size: int, duration: float) -> dict:
    """Same closed loop with ``conc`` asyncio tasks on one gRPC channel (TaggerClient.atag): no client threads."""
    from serving.client import TaggerClient

    async def go():
        client = TaggerClient(url, model, timeout=120, retries=0, max_batch=64)
        lat: list[float] = []
        errors = 0

        async def worker(k: int, end: float):
            nonlocal errors
            j = (k * 997) % len(texts)
            while time.perf_counter() < end:
                batch = [texts[(j + i) % len(texts)] for i in range(size)]
                j += size
                t0 = time.perf_counter()
                try:
                    await client.atag(batch)
                except Exception:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(client.atag(texts[k : k + size]) for k in range(conc)))  # warm-up
        t_start = time.perf_counter()
        await asyncio.gather(*(worker(k, t_start + duration) for k in range(conc)))
        elapsed = time.perf_counter() - t_start
        await client.aclose()
        return lat, errors, elapsed

    lat, errors, elapsed = asyncio.run(go())
    lat_ms = sorted(x * 1000 for x in lat)
    pct = lambda q: lat_ms[min(len(lat_ms) - 1, int(q * len(lat_ms)))] if lat_ms else float("nan")  # noqa: E731
    return {"items_s": len(lat) * size / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "requests": len(lat),
            "errors": errors}  # fmt: skip


# ---- physical limit ---------------------------------------------------------------------------------------
def matmul_flops(dtype, seconds: float = 1.5, n: int = 1024) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def flops_per_item(config, tokens: float, num_labels: int) -> float:
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = layers * (2 * (4 * h * h + 2 * h * inter) + 4 * tokens * h)  # QKVO + FFN + QK^T/AV
    return tokens * per_token + 2 * h * num_labels


# ---- systems ----------------------------------------------------------------------------------------------
def default_bundle(dest: Path, encoder: str | None = None, home: Path | None = None) -> Path:
    from pipeline.training import encoders
    from pipeline.training.bundle import new_model, save_bundle
    from pipeline.training.labels import LabelMap

    facets = {
        "category": [f"category:apparel/{x}" for x in ("topwear/shirts", "topwear/tshirts", "bottomwear/jeans")]
        + [f"category:accessories/{x}" for x in ("watches", "bags", "belts")]
        + ["category:footwear/shoes"],
        "color": [f"color:{c}" for c in ("black", "blue", "white", "gray", "red", "green", "navy", "brown")],
        "gender": ["gender:men", "gender:women", "gender:boys", "gender:girls", "gender:unisex"],
        "season": ["season:summer", "season:winter", "season:fall", "season:spring"],
        "usage": ["usage:casual", "usage:formal", "usage:sports", "usage:ethnic"],
    }
    lm = LabelMap.build(facets, {f: True for f in facets})
    model, tok = new_model(encoders.encoder_path(encoder, home or dest.parent), lm)
    meta = {"bench": "untrained head", "encoder": encoder or encoders.DEFAULT_ENCODER}
    save_bundle(dest, model, tok, lm, np.full(len(lm), 0.3, dtype=np.float32), meta)
    fm = {f: {"exclusive": True, "accuracy": 0.0, "micro_f1": 0.0, "macro_f1": 0.0} for f in facets}
    m = {"micro_f1": 0.0, "macro_f1": 0.0, "precision_at_1": 0.0, "ece": 0.0, "facets": fm, "tags": {}}
    (dest / "metrics.json").write_text(json.dumps({"model": m, "baseline": m, "test_digest": "bench",
                                                   "dataset_digest": "bench", "n_test": 0, "n_train": 0,
                                                   "n_val": 0}))  # fmt: skip
    return dest


def hf_pipeline_call(bundle):
    """b1: transformers pipeline at default settings (one item at a time), then pooling + head + post-processing."""
    from transformers import pipeline

    from pipeline.training.labels import postprocess_scores
    from pipeline.training.tfidf import served_scores

    pipe = pipeline("feature-extraction", model=bundle.model.encoder, tokenizer=bundle.tokenizer, device="cpu")
    w = bundle.model.head.weight.detach().numpy().T
    b = bundle.model.head.bias.detach().numpy()
    lock = threading.Lock()

    def call(texts):
        with lock:  # a pipeline object is not thread-safe; in-process callers share one model
            feats = pipe(texts)
        pooled = np.stack([np.asarray(f[0]).mean(axis=0) for f in feats])
        scores = served_scores(pooled @ w + b, texts, bundle.label_map, bundle.tfidf)
        return postprocess_scores(scores, bundle.label_map, bundle.thresholds)

    return lambda: call


def eager_call(bundle):
    """b2: PyTorch eager in-process, batches of up to 32 (Bundle.predict)."""
    return lambda: lambda texts: bundle.predict(texts)


def triton_call(url: str, model: str):
    from serving.client import TaggerClient

    return lambda: TaggerClient(url, model, timeout=60, retries=0).tag


def mlflow_call(port: int):
    import requests

    def make():
        s = requests.Session()

        def call(texts):
            body = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
            r = s.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
            r.raise_for_status()
            return r.json()

        return call

    return make


def start_mlflow_serve(settings, bundle: Path):
    """Register the bundle in a bench-private store and start ``mlflow models serve`` on it."""
    import requests

    from pipeline.core import migrate
    from pipeline.core.services import get_engine, mlflow_tracking_uri
    from pipeline.registry import register_bundle
    from serving.server import free_port

    migrate.upgrade(get_engine(settings))
    ref = register_bundle(settings, bundle)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_tracking_uri(settings),
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }  # uvicorn lives in the venv
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", ref.uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    logf = Path(settings.home_dir) / "mlflow_serve.log"
    proc = subprocess.Popen(cmd, env=env, stdout=logf.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                return ref, port, proc
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    tail = logf.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"mlflow models serve did not answer /ping within 180 s; log ends:\n{tail}")


# ---- main -------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle folder (default: an untrained bundle on --encoder)")
    ap.add_argument("--encoder", default=None, help="encoder of the untrained bundle (default minilm-l6; untrimmed)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    ap.add_argument("--systems", default="a,b1,b2,c")
    ap.add_argument("--no-mlflow", action="store_true", help="skip (c)")
    ap.add_argument("--instances", type=int, default=None, help="Triton model instances (a); default: as deploy")
    ap.add_argument(
        "--ort-threads", type=int, default=None, help="ONNX Runtime threads per instance (a); default: as deploy"
    )
    ap.add_argument("--onnx-batch", type=int, default=None, help="items per ONNX run inside the model (a)")
    ap.add_argument(
        "--int8",
        action="store_true",
        help="(a) tries int8 as deploy does: served only if the bundle's frozen-test micro-F1 loss is <= 0.5 pt",
    )
    ap.add_argument("--out", type=Path, default=Path("reports/bench_serving.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from pipeline.catalog.samples import sample_titles
    from pipeline.settings import Settings
    from pipeline.training.bundle import load_bundle
    from serving.repository import build_version, write_config
    from serving.server import TritonServer, free_port

    systems = [s for s in args.systems.split(",") if s and not (s == "c" and args.no_mlflow)]
    work = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    settings = Settings(home=work / "home", triton_grpc_url=f"127.0.0.1:{free_port()}",
                        triton_http_url=f"127.0.0.1:{free_port()}", triton_metrics_port=free_port(),
                        registered_model_name="bench-tagger")  # fmt: skip
    bundle_path = args.bundle or default_bundle(work / "bundle", args.encoder, settings.home_dir)
    bundle = load_bundle(bundle_path)
    texts = sample_titles(2000)
    tokens = float(np.mean([len(bundle.tokenizer(t, truncation=True, max_length=bundle.max_length)["input_ids"])
                            for t in texts]))  # fmt: skip
    fpi = flops_per_item(bundle.model.encoder.config, tokens, len(bundle.label_map))
    peak = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    log.info("mean tokens %.1f, %.2f GFLOP/item; matmul fp32 %.1f GFLOP/s, bf16 %.1f GFLOP/s",
             tokens, fpi / 1e9, peak["fp32"] / 1e9, peak["bf16"] / 1e9)  # fmt: skip

    results: dict[str, dict] = {}
    cleanups = []
    try:
        makers = {}
        if "a" in systems:
            # --int8: what deploy does: int8 is served only if the bundle's frozen test split shows <= 0.5 pt F1 loss
            vdir = build_version(bundle_path, settings.model_repository, settings.triton_model_name, 1,
                                 "models:/bench-tagger/1", parity_texts=texts[:32], golden=[],
                                 quantize=args.int8)  # fmt: skip
            served = json.loads((vdir / "version.json").read_text()).get("onnx_file")
            results["a_graph"] = {"onnx_file": served, "onnx_mb": (vdir / served).stat().st_size / 1e6}
            log.info("(a) serves %s", served)
            write_config(settings.model_repository, settings.triton_model_name, [1], registered_name="bench-tagger",
                         instances=args.instances, ort_threads=args.ort_threads,
                         **({"onnx_batch": args.onnx_batch} if args.onnx_batch else {}))  # fmt: skip
            server = TritonServer(settings).start()
            cleanups.append(server.stop)
            makers["a"] = triton_call(settings.triton_grpc_url, settings.triton_model_name)
        if "b1" in systems:
            makers["b1"] = hf_pipeline_call(bundle)
        if "b2" in systems:
            makers["b2"] = eager_call(bundle)
        if "c" in systems:
            try:
                _, port, proc = start_mlflow_serve(settings, bundle_path)
                cleanups.append(lambda: os.killpg(proc.pid, signal.SIGKILL))
                makers["c"] = mlflow_call(port)
            except Exception as exc:
                log.warning("(c) mlflow models serve not measured: %s", exc)
        for name, make in makers.items():
            for size in SIZES:
                for conc in CONCURRENCY:
                    if name == "a":
                        r = run_cell_async(settings.triton_grpc_url, settings.triton_model_name, texts, conc, size,
                                           args.duration)  # fmt: skip
                    else:
                        r = run_cell(make, texts, conc, size, args.duration)
                    r["share_fp32"] = r["items_s"] * fpi / peak["fp32"]
                    r["share_bf16"] = r["items_s"] * fpi / peak["bf16"]
                    results[f"{name}/size{size}/c{conc}"] = r
                    log.info("%-3s size %2d conc %2d: %8.1f items/s  p50 %7.1f ms  p99 %7.1f ms  errors %d  "
                             "(%.1f%% of fp32 matmul peak)", name, size, conc, r["items_s"], r["p50_ms"],
                             r["p99_ms"], r["errors"], 100 * r["share_fp32"])  # fmt: skip
    finally:
        for c in reversed(cleanups):
            try:
                c()
            except Exception as exc:
                log.warning("cleanup: %s", exc)
        if "c" in systems:
            from pipeline.core.services import stop_embedded

            stop_embedded(settings)

    def ratio(x, y):
        kx, ky = f"{x}/size16/c32", f"{y}/size16/c32"
        if kx in results and ky in results and results[ky]["items_s"] > 0:
            return results[kx]["items_s"] / results[ky]["items_s"]
        return None

    summary = {
        "mean_tokens": tokens, "gflop_per_item": fpi / 1e9,
        "matmul_gflops": {k: v / 1e9 for k, v in peak.items()},
        "limit_items_s": {k: v / fpi for k, v in peak.items()},
        "a_vs_b1": ratio("a", "b1"), "a_vs_b2": ratio("a", "b2"), "a_vs_c": ratio("a", "c"),
        "a_p99_ms_size1_c8": results.get("a/size1/c8", {}).get("p99_ms"),
        "a_int8": args.int8, "a_onnx_mb": results.get("a_graph", {}).get("onnx_mb"),
        "encoder": bundle.meta.get("encoder"), "vocab": bundle.model.encoder.config.vocab_size,
        "cells": results, "duration_s": args.duration, "cpu_count": os.cpu_count(), "bundle": str(bundle_path),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "cells"}, indent=1))  # noqa: T201 (script)


if __name__ == "__main__":
    main()

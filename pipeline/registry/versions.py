"""Registry versions: a checked bundle in, an MLflow model version out; a version's bundle, metrics and plots back.

Every trained tagger is a version of one registered model in MLflow. A version is the bundle logged as a ``pyfunc``
(see :mod:`pipeline.registry.pyfunc_model`) with version tags for the dataset/test digests, training run, git commit
and headline metrics; its description is the model card. Registering points ``challenger`` at the new version, so
the bottom of the alias audit trail lives here too (:class:`AliasMove`, the advisory lock, recording a move, the
plain alias move); :mod:`pipeline.registry.aliases` builds the champion moves on it. This module imports neither
``aliases`` nor ``review``.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from safetensors import safe_open

from pipeline import db
from pipeline.core import tracking
from pipeline.core.services import get_engine
from pipeline.errors import BundleError, RegistryError
from pipeline.registry import pyfunc_model
from pipeline.settings import Settings
from pipeline.training.labels import LabelMap

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
MODEL_NAME_IN_RUN = "tagger"
REQUIRED_METRICS = ("micro_f1", "macro_f1", "precision_at_1", "ece")
DESCRIPTION_LIMIT = 4500  # SQL stores cap a version description at 5000 characters


@dataclass(frozen=True)
class ModelVersionRef:
    name: str
    version: int
    uri: str  # models:/<name>/<version>
    run_id: str | None
    created: bool = True  # False: the same bundle was already registered and that version is returned


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    alias: str
    action: str  # promote | rollback | set | clear
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str | None
    gate_verdict: str | None
    at: str
    changed: bool = True


def default_actor() -> str:
    """Who acts when the caller does not say: ``TAGGER_ACTOR`` or the OS user."""
    try:
        return os.environ.get("TAGGER_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# ---- bundle checks --------------------------------------------------------------------------------------
def read_metrics(bundle: Path) -> dict:
    """metrics.json of a bundle, checked for the fields the registry and the gate need.

    Raises:
        RegistryError: metrics.json is missing or lacks a required metric.
    """
    path = bundle / "metrics.json"
    if not path.exists():
        raise RegistryError(
            f"bundle {bundle} has no metrics.json; evaluate it first (the evaluation stage writes it: "
            "`tagger train` runs it, or pipeline.evaluation.evaluate.evaluate_run)"
        )
    body = json.loads(path.read_text())
    model = body.get("model") or {}
    missing = [f"model.{k}" for k in REQUIRED_METRICS if not isinstance(model.get(k), int | float)]
    if not model.get("facets"):
        missing.append("model.facets")
    missing += [k for k in ("test_digest", "dataset_digest") if not body.get(k)]
    if missing:
        raise RegistryError(
            f"bundle {bundle}: metrics.json lacks {', '.join(missing)}; re-run the evaluation so that "
            "metrics.json has the shape the registry expects (see pipeline/registry/versions.py)"
        )
    return body


def check_bundle(bundle: Path) -> dict:
    """Check files and label map vs head weights without loading the encoder; return metrics.json."""
    for name in ("bundle.json", "encoder", "head.safetensors", "label_map.json", "thresholds.json"):
        if not (bundle / name).exists():
            raise BundleError(f"bundle {bundle} is incomplete: {name} is missing")
    n_tags = len(LabelMap.load(bundle / "label_map.json"))
    with safe_open(str(bundle / "head.safetensors"), framework="numpy") as f:
        n_out = f.get_slice("weight").get_shape()[0]
    n_thr = len(json.loads((bundle / "thresholds.json").read_text())["thresholds"])
    if not n_tags == n_out == n_thr:
        raise BundleError(
            f"bundle {bundle}: label map has {n_tags} tags but the head has {n_out} outputs and {n_thr} "
            "thresholds; the bundle was written inconsistently, retrain or re-export it"
        )
    return read_metrics(bundle)


def bundle_digest(bundle: Path) -> str:
    """sha256 over every file of the bundle (path and bytes), so a re-registration is recognised."""
    h = hashlib.sha256()
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        h.update(f.relative_to(bundle).as_posix().encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    """HEAD of the repository this code runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _version_tags(metrics: dict, run_id: str | None, digest: str, bundle_path: str) -> dict[str, str]:
    model = metrics["model"]
    tags = {
        "dataset_digest": metrics["dataset_digest"],
        "test_digest": metrics["test_digest"],
        "training_run": run_id or "",
        "git_commit": git_commit(),
        "bundle_digest": digest,
        "bundle_path": bundle_path,
        **{k: f"{model[k]:.4f}" for k in REQUIRED_METRICS},
        **{f"f1.{f}": f"{v.get('micro_f1', 0.0):.4f}" for f, v in model["facets"].items()},
    }
    if isinstance((metrics.get("baseline") or {}).get("micro_f1"), int | float):
        tags["baseline_micro_f1"] = f"{metrics['baseline']['micro_f1']:.4f}"
    if metrics.get("n_test"):
        tags["n_test"] = str(metrics["n_test"])
    return tags


def _headline(metrics: dict) -> dict[str, float]:
    model = metrics["model"]
    out = {f"test_{k}": float(model[k]) for k in REQUIRED_METRICS}
    out.update({f"test_f1_{f}": float(v.get("micro_f1", 0.0)) for f, v in model["facets"].items()})
    return out


def _description(bundle: Path) -> str:
    card = (bundle / "model_card.md").read_text() if (bundle / "model_card.md").exists() else ""
    note = "\n\n(Full card, metrics.json and plots/: the bundle folder in this version's model artifacts.)"
    if len(card) > DESCRIPTION_LIMIT:
        card = card[:DESCRIPTION_LIMIT] + "\n\n…(truncated)"
    return (card or "No model card in the bundle.") + note


# ---- MLflow helpers -------------------------------------------------------------------------------------
def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _alias_version(client, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def get_version(settings: Settings, version: int, client=None):
    """The MLflow ModelVersion; RegistryError naming the model when it does not exist."""
    client = client or tracking.client(settings)
    name = settings.registered_model_name
    try:
        return client.get_model_version(name, str(int(version)))
    except MlflowException as exc:
        if _is_missing(exc):
            raise RegistryError(
                f"version {version} of model {name!r} does not exist; `tagger models list` shows the versions"
            ) from exc
        raise


@contextmanager
def _run(run_id: str | None, run_name: str) -> Iterator:
    active = mlflow.active_run()
    if active is not None and run_id in (None, active.info.run_id):
        yield active
        return
    try:
        with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=active is not None) as r:
            yield r
    except MlflowException as exc:
        if run_id and _is_missing(exc):
            raise RegistryError(f"training run {run_id!r} is not in the tracking store; pass its run id") from exc
        raise


# ---- the bottom of the alias audit trail (register_bundle moves challenger; aliases builds on these) -----
@contextmanager
def _locked(settings: Settings) -> Iterator[sa.Connection]:
    """A transaction on the tag-library DB holding an advisory lock on the model name (released at commit)."""
    with get_engine(settings).begin() as conn:
        key = f"tagger.registry:{settings.registered_model_name}"
        conn.execute(sa.text("select pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
        yield conn


def _record(conn: sa.Connection, move: AliasMove, details: dict | None = None) -> None:
    row = {k: v for k, v in asdict(move).items() if k not in ("at", "changed")}
    conn.execute(sa.insert(db.alias_events).values(**row, details=details or {}))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _point(client, name: str, alias: str, version: int | None) -> None:
    if version is None:
        if _alias_version(client, name, alias) is not None:
            client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, str(version))


def _move_alias(settings: Settings, alias: str, version: int | None, actor: str, reason: str | None) -> AliasMove:
    """Point a non-champion ``alias`` at ``version`` (None clears it) and audit the move (set_alias without the
    champion case, which needs promote)."""
    client = tracking.client(settings)
    name = settings.registered_model_name
    if version is not None:
        get_version(settings, version, client)
    with _locked(settings) as conn:
        current = _alias_version(client, name, alias)
        action = "clear" if version is None else "set"
        move = AliasMove(name, alias, action, current, version, actor, reason, None, _now(), current != version)
        if move.changed:
            _record(conn, move)
            _point(client, name, alias, version)
    return move


# ---- register -------------------------------------------------------------------------------------------
def register_bundle(
    settings: Settings, bundle_path: str | Path, run_id: str | None = None, *, actor: str | None = None
) -> ModelVersionRef:
    """Log the bundle as a pyfunc, register it as a new version and point ``challenger`` at it.

    Idempotent: a bundle whose digest is already registered returns that version (``created=False``).

    Raises:
        BundleError: files missing, or label map vs head weights mismatch.
        RegistryError: metrics.json missing or incomplete; unknown run id.
    """
    bundle = Path(bundle_path).resolve()
    metrics = check_bundle(bundle)
    digest = bundle_digest(bundle)
    client = tracking.client(settings)
    name = settings.registered_model_name

    existing = client.search_model_versions(f"name='{name}' and tags.bundle_digest='{digest}'")
    if existing:
        mv = min(existing, key=lambda v: int(v.version))
        log.info("bundle %s is already version %s of %s", bundle, mv.version, name)
        return ModelVersionRef(name, int(mv.version), f"models:/{name}/{mv.version}", mv.run_id, created=False)

    with _run(run_id, f"register-{bundle.name}") as run, warnings.catch_warnings():
        # MLflow suggests type hints on predict; the explicit signature below is the contract instead
        warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=Path(pyfunc_model.__file__).with_name("pyfunc_script.py"),  # model from code: no pickle
            artifacts={"bundle": str(bundle)},
            code_paths=[str(Path(pyfunc_model.__file__).parents[1])],  # the `pipeline` package travels along
            signature=pyfunc_model.signature(),
            input_example=pd.DataFrame({pyfunc_model.INPUT_COLUMN: pyfunc_model.INPUT_EXAMPLE}),
            pip_requirements=_pip_requirements(),
        )
        mlflow.log_metrics(_headline(metrics), model_id=info.model_id)
        if run_id is None:  # a registration run of our own: make card, metrics and plots visible on it
            mlflow.log_metrics(_headline(metrics))
            for f in ("model_card.md", "metrics.json"):
                if (bundle / f).exists():
                    mlflow.log_artifact(str(bundle / f), "review")
            if (bundle / "plots").is_dir():
                mlflow.log_artifacts(str(bundle / "plots"), "review/plots")
        run_id = run.info.run_id
    bundle_sub = info.flavors["python_function"]["artifacts"]["bundle"]["path"]
    tags = _version_tags(metrics, run_id, digest, bundle_sub)
    tags["registered_by"] = actor or default_actor()
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    client.update_model_version(name, mv.version, description=_description(bundle))
    version = int(mv.version)
    log.info("registered %s as version %d of %s (run %s)", bundle, version, name, run_id)
    _move_alias(settings, CHALLENGER, version, actor or default_actor(), "registered")
    ref = ModelVersionRef(name, version, f"models:/{name}/{version}", run_id)
    out = settings.reports_dir / "registry" / f"{name}-v{version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**asdict(ref), "bundle": str(bundle), "tags": tags}, indent=1))
    return ref


def _pip_requirements() -> list[str]:
    # Pinned explicitly: MLflow's inference would load the model in a subprocess (slow, and imprecise).
    reqs = []
    for pkg in ("mlflow", "torch", "transformers", "safetensors", "tokenizers", "numpy", "pandas", "PyYAML"):
        try:
            reqs.append(f"{pkg}=={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(pkg)
    return reqs


# ---- reading versions back ------------------------------------------------------------------------------
def _cache_dir(settings: Settings, version: int) -> Path:
    return settings.home_dir / "registry" / settings.registered_model_name / str(int(version))


def _download(settings: Settings, version: int, sub: str, dest: Path) -> Path:
    if dest.exists():
        return dest
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per file otherwise
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".dl-"))
    try:
        repo = ModelsArtifactRepository(f"models:/{settings.registered_model_name}/{int(version)}")
        got = Path(repo.download_artifacts(sub, dst_path=str(tmp)))
        got.rename(dest)  # atomic: a half-downloaded bundle is never seen at dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def bundle_for_version(settings: Settings, version: int) -> Path:
    """Local folder of that version's bundle (downloaded once into HOME/registry/<name>/<version>/bundle)."""
    tracking.configure(settings)
    mv = get_version(settings, version)
    return _download(
        settings, version, mv.tags.get("bundle_path", "artifacts/bundle"), _cache_dir(settings, version) / "bundle"
    )


def version_metrics(settings: Settings, version: int) -> dict:
    """metrics.json of a registered version (only that file is fetched)."""
    tracking.configure(settings)
    mv = get_version(settings, version)
    sub = mv.tags.get("bundle_path", "artifacts/bundle") + "/metrics.json"
    return json.loads(_download(settings, version, sub, _cache_dir(settings, version) / "metrics.json").read_text())


def version_plots(settings: Settings, version: int) -> list[Path]:
    """The bundle's plots/*.png of a registered version (empty when it has none)."""
    tracking.configure(settings)
    mv = get_version(settings, version)
    sub = mv.tags.get("bundle_path", "artifacts/bundle") + "/plots"
    try:
        folder = _download(settings, version, sub, _cache_dir(settings, version) / "plots")
    except (OSError, MlflowException):
        return []
    return sorted(folder.glob("*.png"))


def list_versions(settings: Settings) -> list[dict]:
    """Every version with its aliases (resolved per alias: SQL stores do not return them in searches)."""
    client = tracking.client(settings)
    name = settings.registered_model_name
    aliases: dict[int, list[str]] = {}
    for alias in (CHAMPION, CHALLENGER, PREVIOUS):
        v = _alias_version(client, name, alias)
        if v is not None:
            aliases.setdefault(v, []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{name}'"):
        t = mv.tags or {}
        out.append(
            {
                "version": int(mv.version),
                "aliases": aliases.get(int(mv.version), []),
                "micro_f1": t.get("micro_f1"),
                "gate_verdict": t.get("gate_verdict"),
                "approval": t.get("approval"),
                "run_id": mv.run_id,
                "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
            }
        )
    return sorted(out, key=lambda r: r["version"])

"""Deploy a registered version to Triton, smoke-test it, then move ``champion``; or roll back.

deploy(N):
  1. refuse early if the registry would refuse N (gate/reviewer rejected it);
  2. write ``<repo>/<model>/<N>/`` from the registry bundle (reused when it is already there);
  3. smoke test N *off the serving path*: load it as ``<model>_candidate`` (a link to the same folder), send
     the golden examples to it, unload it. Nothing the clients see has changed yet;
  4. swap: rewrite ``config.pbtxt`` with versions [previous, N] and ``load`` the model. Triton loads N beside
     the running version and only then moves unversioned requests to it (highest loaded version), so a swap
     under load loses no request; versions older than the previous one are unloaded by the same load;
  5. move ``champion`` (registry.promote, recorded in alias_events) and write ``HOME/deployments/*.json``.
Any failure before 5 leaves the served versions and the alias as they were and raises DeployError naming the
step; a failure of 5 restores the previous config too.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import tritonclient.grpc as grpcclient

from pipeline import registry
from pipeline.errors import DeployError, ServiceError, TaggerError
from pipeline.settings import Settings
from serving import repository
from serving.server import claim_address
from serving.smoke import smoke_test

log = logging.getLogger(__name__)

CANDIDATE_SUFFIX = "_candidate"


@dataclass(frozen=True)
class DeployResult:
    action: str  # deploy | rollback
    model_name: str
    version: int
    model_uri: str
    previous: int | None
    served_versions: list[int]
    smoke_examples: int
    seconds: float
    alias_moved: bool
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def _triton(settings: Settings):
    try:  # never deploy into a server this home did not start (unless TAGGER_TRITON_EXTERNAL says so)
        settings = claim_address(settings)
    except ServiceError as exc:
        raise DeployError(f"{exc}; nothing was changed") from exc
    client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    ready, deadline = False, time.monotonic() + 30
    while not ready and time.monotonic() < deadline:
        try:  # strict readiness: briefly false while a model (un)loads, so wait a little
            ready = client.is_server_ready(client_timeout=3)
            if not ready and not client.is_server_live(client_timeout=3):
                break
        except Exception:
            break
        if not ready:
            time.sleep(0.25)
    if not ready:
        client.close()
        raise DeployError(
            f"Triton at {settings.triton_grpc_url} is not ready; start it with `tagger serve` "
            "(or set TAGGER_TRITON_GRPC_URL); nothing was changed"
        )
    return client


def _headers(settings: Settings) -> dict[str, str] | None:
    """The admin header Triton wants for model control when started with --grpc-restricted-protocol."""
    key = settings.triton_admin_key
    return {"triton-grpc-protocol-admin-key": key.get_secret_value()} if key else None


def _load(client, name: str, what: str, headers: dict | None = None) -> None:
    try:
        client.load_model(name, headers=headers, client_timeout=300)
    except Exception as exc:
        raise DeployError(f"{what}: Triton could not load {name!r}: {exc}") from exc


def _gpu(settings: Settings) -> bool:
    return settings.triton_instance_kind.lower() == "gpu"


def _policy(repo: Path, name: str) -> list[int]:
    """The versions listed in the current config.pbtxt (what is served now)."""
    cfg = repo / name / "config.pbtxt"
    if not cfg.exists():
        return []
    for line in cfg.read_text().splitlines():
        if line.startswith("version_policy"):
            inside = line.split("[", 1)[1].split("]", 1)[0]
            return [int(v) for v in inside.replace(",", " ").split()]
    return []


def _ensure_version(settings: Settings, version: int) -> Path:

    repo, name = settings.model_repository, settings.triton_model_name
    uri = f"models:/{settings.registered_model_name}/{version}"
    vdir = repo / name / str(version)
    vjson = vdir / "version.json"
    if vjson.exists() and json.loads(vjson.read_text()).get("model_uri") == uri:
        return vdir
    try:
        bundle = registry.bundle_for_version(settings, version)
        quantize = settings.triton_int8 and not _gpu(settings)  # int8 dynamic quantisation is a CPU speed-up
        return repository.build_version(bundle, repo, name, version, uri, gpu=_gpu(settings), quantize=quantize)
    except TaggerError as exc:
        raise DeployError(f"building the Triton version {version} from {uri} failed: {exc}") from exc


def _smoke_candidate(settings: Settings, client, version: int) -> int:
    """Load ``version`` as ``<model>_candidate``, run its golden examples, unload; return how many ran."""
    repo, name = settings.model_repository, settings.triton_model_name
    cand = name + CANDIDATE_SUFFIX
    cdir = repo / cand
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    # Relative link: the deploy worker and Triton may mount the repository at different paths.
    (cdir / str(version)).symlink_to(Path("..") / name / str(version), target_is_directory=True)
    repository.write_config(repo, cand, [version], registered_name=settings.registered_model_name, gpu=_gpu(settings))
    golden = json.loads((repo / name / str(version) / "golden.json").read_text(encoding="utf-8"))
    try:
        _load(client, cand, f"smoke test of version {version}", _headers(settings))
        res = smoke_test(settings.triton_grpc_url, cand, version, golden)
    except TaggerError as exc:
        raise DeployError(f"smoke test of version {version} failed: {exc}; version still served unchanged") from exc
    finally:
        _unload_and_wait(client, cand, _headers(settings))
        shutil.rmtree(cdir, ignore_errors=True)
    if not res.passed:
        shown = "; ".join(f"{f['text'][:60]!r} missing {f['missing']} (got {f['got']})" for f in res.failures[:3])
        raise DeployError(
            f"smoke test of version {version} failed on {len(res.failures)}/{res.examples} golden examples: "
            f"{shown}. The previous version keeps serving and champion did not move"
        )
    return res.examples


def _unload_and_wait(client, name: str, headers: dict | None = None, timeout: float = 60.0) -> None:
    """Unload ``name`` and wait until Triton reports it gone (unload is asynchronous)."""
    try:
        client.unload_model(name, headers=headers, client_timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = client.get_model_repository_index(headers=headers, client_timeout=10)
            states = {m.name: m.state for m in index.models}
            if states.get(name, "UNAVAILABLE") in ("UNAVAILABLE", ""):
                return
            time.sleep(0.2)
        log.warning("%s still unloading after %.0f s", name, timeout)
    except Exception as exc:  # best effort: the candidate never took traffic
        log.warning("could not unload %s: %s", name, exc)


def replica_urls(grpc_url: str) -> list[str]:
    """Every address behind the gRPC host (a headless Service has one per ready replica), else the URL itself."""

    host, _, port = grpc_url.rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        return [grpc_url]

    # loopback names (localhost -> 127.0.0.1 and ::1) are one local server, not replicas
    addrs = sorted({i[4][0] for i in infos if not ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback})
    if len(addrs) <= 1:
        return [grpc_url]
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addrs]


def _load_everywhere(settings: Settings, client, name: str, what: str) -> None:
    """Load on the configured endpoint and on every other replica behind its host name."""

    _load(client, name, what, _headers(settings))
    others = [u for u in replica_urls(settings.triton_grpc_url) if u != settings.triton_grpc_url]
    for url in others:
        replica = grpcclient.InferenceServerClient(url)
        try:
            _load(replica, name, f"{what} (replica {url})", _headers(settings))
        finally:
            replica.close()


def _swap(settings: Settings, client, versions: list[int], what: str) -> None:
    repo, name = settings.model_repository, settings.triton_model_name
    old = _policy(repo, name)
    kw = dict(registered_name=settings.registered_model_name, gpu=_gpu(settings))
    repository.write_config(repo, name, versions, **kw)
    try:
        _load_everywhere(settings, client, name, what)
    except DeployError:
        if old:
            repository.write_config(repo, name, old, **kw)
            try:
                _load_everywhere(settings, client, name, f"restore versions {old}")
            except Exception as exc:
                log.error("restoring versions %s of %s failed too: %s", old, name, exc)
        raise


def _record(settings: Settings, res: DeployResult) -> DeployResult:
    out = settings.home_dir / "deployments"
    out.mkdir(parents=True, exist_ok=True)
    stamp = res.at.replace(":", "").replace("-", "")
    (out / f"{stamp}-{res.action}-v{res.version}.json").write_text(json.dumps(asdict(res), indent=1))
    return res


def deploy(settings: Settings, version: int | None = None, *, actor: str, reason: str | None = None) -> DeployResult:
    """Serve registry ``version`` (default: the ``challenger``) and make it champion. See module docstring.

    Raises:
        DeployError: no such version / refused by the gate, Triton down, build, load or smoke test failed.
    """

    t0 = time.monotonic()
    name = settings.triton_model_name
    try:
        if version is None:
            version = registry.get_alias(settings, registry.CHALLENGER)
            if version is None:
                raise DeployError(
                    f"model {settings.registered_model_name!r} has no challenger to deploy; pass a VERSION"
                )
        version = int(version)
        why = registry.refusal(registry.get_version(settings, version))
        if why:
            raise DeployError(f"version {version} may not be deployed: {why}")
        champion = registry.get_alias(settings, registry.CHAMPION)
    except DeployError:
        raise
    except TaggerError as exc:
        raise DeployError(f"deploy of version {version}: {exc}") from exc

    client = _triton(settings)
    try:
        _ensure_version(settings, version)
        examples = _smoke_candidate(settings, client, version)
        repo = settings.model_repository
        keep = [v for v in (champion,) if v is not None and v < version and (repo / name / str(v)).is_dir()]
        served = [*keep, version]
        _swap(settings, client, served, f"swap to version {version}")
        old = keep
        try:
            move = registry.promote(settings, version, actor=actor, reason=reason or "deploy")
        except TaggerError as exc:
            if old:
                _swap(settings, client, old, f"restore after failed promotion of {version}")
            raise DeployError(f"moving champion to {version} failed: {exc}; the previous version serves") from exc
    finally:
        client.close()
    res = DeployResult(
        "deploy",
        name,
        version,
        f"models:/{settings.registered_model_name}/{version}",
        champion,
        served,
        examples,
        round(time.monotonic() - t0, 2),
        move.changed,
    )
    log.info("deployed %s (served versions %s) in %.1f s", res.model_uri, served, res.seconds)
    return _record(settings, res)


def rollback(settings: Settings, *, actor: str, reason: str | None = None) -> DeployResult:
    """Serve the previous champion again, then move ``champion`` back (registry.rollback).

    Raises:
        DeployError: no previous champion, Triton down, or the previous version failed to load.
    """

    t0 = time.monotonic()
    name = settings.triton_model_name
    current = registry.get_alias(settings, registry.CHAMPION)
    target = registry.get_alias(settings, registry.PREVIOUS)
    if current is None or target is None:
        raise DeployError(
            f"model {settings.registered_model_name!r} has no previous champion to roll back to "
            f"(champion: {current}); `tagger models history` shows the moves"
        )
    client = _triton(settings)
    try:
        _ensure_version(settings, target)
        _swap(settings, client, [target], f"rollback to version {target}")
        try:
            move = registry.rollback(settings, actor=actor, reason=reason or "rollback")
        except TaggerError as exc:
            _swap(settings, client, [v for v in (target, current) if v is not None], "restore after rollback")
            raise DeployError(f"moving champion back to {target} failed: {exc}") from exc
    finally:
        client.close()
    if move.to_version != target:
        log.warning("registry rolled champion back to %s, Triton serves %s", move.to_version, target)
    res = DeployResult(
        "rollback",
        name,
        target,
        f"models:/{settings.registered_model_name}/{target}",
        current,
        [target],
        0,
        round(time.monotonic() - t0, 2),
        move.changed,
    )
    log.info("rolled back %s -> %s in %.1f s", current, target, res.seconds)
    return _record(settings, res)

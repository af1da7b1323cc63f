"""Infra files are code: docker-compose.yml, Dockerfiles, Postgres init, Helm values and Kubernetes manifests.

Parsed and cross-checked without a Docker engine, Helm or a cluster. Debian's ``docker-compose`` and
``kubectl kustomize`` validate too where installed (those two assertions skip otherwise). The Postgres roles and
grants run for real on a throw-away server (``integration``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
import yaml

from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = ROOT / "docker-compose.yml"
K8S = INFRA / "k8s"
AIRFLOW_VALUES = INFRA / "helm" / "airflow" / "values.yaml"
ADAPTER_VALUES = INFRA / "helm" / "prometheus-adapter" / "values.yaml"

TAGGER_VAR = re.compile(r"\bTAGGER_[A-Z0-9_]*[A-Z0-9]\b")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")
STOREFRONT_TABLES = {"facets", "tags", "tag_names", "tag_synonyms", "products", "product_tags"}


# ---- helpers --------------------------------------------------------------------------------------------
def _interpolate(text: str) -> str:
    """Compose-style ``${VAR:-default}`` with the defaults (the environment is ignored: dev defaults)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", text.replace("$$", "\0")).replace("\0", "$")


def _compose() -> dict:
    return yaml.safe_load(_interpolate(COMPOSE.read_text()))


def _infra_files() -> list[Path]:
    files = [p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return [COMPOSE, *sorted(files)]


def _k8s_docs() -> list[dict]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for rel in kust["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / rel).read_text()) if d]
    return docs


def _k8s(kind: str, name: str) -> dict:
    found = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in infra/k8s, found {len(found)}"
    return found[0]


def _flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= should appear once in {args}"
    return values[0]


def _image_pinned(ref: str) -> bool:
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and any(c.isdigit() for c in tag)


# ---- compose --------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_compose_validates_with_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose); structure is checked below")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAGGER_", "COMPOSE_"))}
    res = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.unit
def test_compose_services_and_health_checks():
    services = _compose()["services"]
    commands = {name: " ".join(map(str, s.get("command") or [])) for name, s in services.items()}
    for component in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert any(c.startswith(component) for c in commands.values()), f"no Airflow `{component}` service"
    for name in ("postgres", "redis", "minio", "mlflow", "triton", "airflow-worker"):
        assert name in services, f"service {name} missing from docker-compose.yml"

    one_shots = {
        dep
        for s in services.values()
        for dep, cond in (s.get("depends_on") or {}).items()
        if cond.get("condition") == "service_completed_successfully"
    }
    for name, svc in services.items():
        if name in one_shots:
            assert "restart" not in svc, f"one-shot {name} must not restart"
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"long-running service {name} has no healthcheck"
        assert svc.get("restart") in {"unless-stopped", "always"}, f"{name} should restart"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} healthy, which has no check"

    worker = services["tag-worker"]  # real-time tagging: Postgres (backend) + Triton's inference port only
    assert worker["command"] == ["tag-worker"] and set(worker["networks"]) == {"backend", "storefront"}
    assert worker["depends_on"]["triton"]["condition"] == "service_healthy"

    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")

    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://mlflow:" in mlflow
    assert "--artifacts-destination=s3://" in mlflow and "--serve-artifacts" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    init_mount = [v for v in services["postgres"]["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro")]
    assert init_mount and (ROOT / init_mount[0].split(":")[0]).resolve() == INFRA / "postgres" / "init"


@pytest.mark.unit
def test_compose_triton_gpu_networks_and_model_control():
    doc = _compose()
    services, networks = doc["services"], doc["networks"]
    triton = services["triton"]
    args = triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert (ROOT / triton["build"]["context"] / "Dockerfile").is_file()
    assert _flag(args, "model-control-mode") == "explicit"
    assert "model-repository" in _flag(args, "grpc-restricted-protocol").split(":")[0].split(",")

    # Only gRPC is published; HTTP (model control) binds to Triton's address on the internal network.
    assert [p.split(":")[-1] for p in triton["ports"]] == ["8001"]
    assert networks["triton-control"]["internal"] is True
    assert _flag(args, "http-address") == triton["networks"]["triton-control"]["ipv4_address"]
    on_control = {n for n, s in services.items() if "triton-control" in (s.get("networks") or [])}
    assert on_control == {"triton", "airflow-worker", "airflow-worker-gpu"}
    on_storefront = {n for n, s in services.items() if "storefront" in (s.get("networks") or [])}
    assert on_storefront == {"triton", "postgres", "tag-worker"}  # the worker calls inference like a storefront

    # The workers' settings point where Triton really is, and carry the admin header's key.
    worker_env = services["airflow-worker"]["environment"]
    assert worker_env["TAGGER_TRITON_HTTP_URL"] == f"{_flag(args, 'http-address')}:{_flag(args, 'http-port')}"
    assert worker_env["TAGGER_TRITON_GRPC_URL"] == f"triton:{_flag(args, 'grpc-port')}"
    assert worker_env["TAGGER_TRITON_MODEL_REPOSITORY"] == _flag(args, "model-repository")
    assert _flag(args, "grpc-restricted-protocol").endswith(f"={worker_env['TAGGER_TRITON_ADMIN_KEY']}")
    repo_vol = [v for v in triton["volumes"] if v.startswith("triton-models:")]
    assert repo_vol == [f"triton-models:{_flag(args, 'model-repository')}:ro"]
    assert f"triton-models:{_flag(args, 'model-repository')}" in services["airflow-worker"]["volumes"]


# ---- settings names, images ------------------------------------------------------------------------------
@pytest.mark.unit
def test_every_tagger_variable_is_a_settings_field():
    fields = set(Settings.model_fields)
    seen: dict[str, list[str]] = {}
    for path in _infra_files():
        for name in TAGGER_VAR.findall(path.read_text(errors="replace")):
            seen.setdefault(name, []).append(str(path.relative_to(ROOT)))
    unknown = {n: sorted(set(p)) for n, p in seen.items() if n.removeprefix("TAGGER_").lower() not in fields}
    assert not unknown, f"TAGGER_* names that are not fields of pipeline.settings.Settings: {unknown}"
    assert len(seen) >= 10, f"found only {sorted(seen)}: is the scan broken?"


@pytest.mark.unit
def test_settings_environments_parse(monkeypatch):
    """The TAGGER_* values given to containers build a valid Settings object."""
    services = _compose()["services"]
    config_map = _k8s("ConfigMap", "tagger-settings")["data"]
    for env in (services["airflow-worker"]["environment"], config_map):
        for key in [k for k in os.environ if k.startswith("TAGGER_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("TAGGER_"):
                monkeypatch.setenv(key, str(value))
        s = Settings()
        assert s.model_repository == Path("/srv/triton/models")
        assert s.artifact_location.startswith("mlflow-artifacts:/")
        assert s.mlflow_tracking_uri.startswith("http://mlflow")
        # production's Triton is a server tagger neither starts nor owns: used as it is, no home-chosen ports
        assert s.triton_is_external and not s.auto_ports


@pytest.mark.unit
def test_images_are_pinned():
    refs: list[tuple[str, str]] = []
    for name, svc in _compose()["services"].items():
        refs.append((f"compose {name}", svc["image"]))
    for path in INFRA.rglob("Dockerfile*"):
        if path.suffix == ".dockerignore":
            continue
        for line in path.read_text().splitlines():
            if line.strip().upper().startswith("FROM "):
                refs.append((str(path.relative_to(ROOT)), line.split()[1]))
    for doc in _k8s_docs():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            refs.append((f"k8s {doc['kind']}/{doc['metadata']['name']}", c["image"]))
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    refs.append(("airflow values", f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"))
    assert len(refs) >= 15
    loose = [(where, ref) for where, ref in refs if not _image_pinned(ref)]
    assert not loose, f"images without a pinned tag: {loose}"
    for path in _infra_files():
        assert not re.search(r":latest\b", path.read_text(errors="replace")), f"`latest` in {path}"


@pytest.mark.unit
def test_constraints_pin_every_dependency():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for line in (INFRA / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and "+" not in version, f"constraints line {line!r} is not an exact public pin"
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower())
        assert name in pins, (
            f"{name} (pyproject) is not pinned in infra/docker/constraints.txt; regenerate it (see its header)"
        )
    assert pins["numpy"].startswith("1."), "the Triton Python backend stub needs numpy<2"


# ---- postgres --------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_postgres_files_are_consistent():
    from pipeline import db

    init = INFRA / "postgres" / "init" / "10-databases-and-roles.sh"
    assert os.access(init, os.X_OK), "the init script must be executable"
    assert subprocess.run(["bash", "-n", str(init)], capture_output=True).returncode == 0
    grants = (INFRA / "postgres" / "grants" / "storefront.sql").read_text()
    granted = re.search(r"GRANT SELECT ON TABLE (.+?) TO storefront;", grants)
    tables = {t.strip() for t in granted.group(1).split(",")}
    assert tables == STOREFRONT_TABLES
    assert tables <= set(db.metadata.tables), "granted tables must exist in pipeline.db"
    assert re.findall(r"\bGRANT\s+(\w+)", grants) == ["SELECT"], "the storefront may only SELECT"


@pytest.mark.integration
@pytest.mark.slow  # initdb: ~5 s alone, more on a loaded machine
def test_postgres_roles_and_storefront_grants(tmp_path):
    """Init script + migrations + grants on a fresh server: storefront reads the tag tables and nothing else."""
    import pgserver
    import sqlalchemy as sa

    sys.path.insert(0, str(INFRA / "postgres"))
    try:
        from migrate_and_grant import migrate_and_grant
    finally:
        sys.path.pop(0)

    pgdata = tempfile.mkdtemp(prefix="tagger-infra-pg-")  # world-traversable parent for the server's user
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        env = dict(os.environ, PGHOST=pgdata, PATH=f"{bindir}:{os.environ['PATH']}", POSTGRES_USER="postgres")
        env.update(APP_DB_PASSWORD="a", STOREFRONT_DB_PASSWORD="s", MLFLOW_DB_PASSWORD="m", AIRFLOW_DB_PASSWORD="f")
        init = INFRA / "postgres" / "init" / "10-databases-and-roles.sh"
        for _ in range(2):  # idempotent
            res = subprocess.run(["bash", str(init)], env=env, capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
        migrate_and_grant(f"postgresql+psycopg://tagger_app@/tagger?host={pgdata}")

        def url(role: str, database: str = "tagger") -> str:
            return f"postgresql+psycopg://{role}@/{database}?host={pgdata}"

        storefront = sa.create_engine(url("storefront"))
        with storefront.connect() as conn:
            for table in STOREFRONT_TABLES:
                conn.execute(sa.text(f"SELECT count(*) FROM {table}"))
            for sql in ("SELECT * FROM alias_events", "SELECT * FROM job_state", "SELECT * FROM quarantine"):
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                    conn.execute(sa.text(sql))
                conn.rollback()
            conn.execute(sa.text("SET default_transaction_read_only = off"))
            conn.commit()
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("INSERT INTO facets (slug) VALUES ('x')"))
        storefront.dispose()
        for role, database in (("storefront", "mlflow"), ("mlflow", "tagger"), ("airflow", "mlflow")):
            engine = sa.create_engine(url(role, database))
            with pytest.raises(sa.exc.OperationalError, match="permission denied"), engine.connect():
                pass
            engine.dispose()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


# ---- kubernetes / helm -----------------------------------------------------------------------------------
@pytest.mark.unit
def test_k8s_manifests_structure():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {str(p.relative_to(K8S)) for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk, f"kustomization.yaml and the files differ: {listed ^ on_disk}"
    for doc in _k8s_docs():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if doc["kind"] == "Deployment":
            for c in pod["containers"]:
                assert c.get("readinessProbe") and c.get("livenessProbe"), f"{doc['metadata']['name']} probes"
                assert c["resources"]["limits"].get("memory"), f"{doc['metadata']['name']} memory limit"


@pytest.mark.unit
def test_k8s_kustomize_builds():
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.skip("kubectl not installed; manifests are parsed structurally instead")
    res = subprocess.run([exe, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(res.stdout) if d}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Job"} <= kinds


@pytest.mark.unit
def test_triton_replicas_probes_and_autoscaling():
    dep = _k8s("Deployment", "triton")
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] in {"/v2/health/live", "/v2/health/ready"}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert _flag(c["args"], "model-control-mode") == "explicit"
    repo = _flag(c["args"], "model-repository")
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == repo)
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] and vol["persistentVolumeClaim"]["claimName"] == "triton-model-repository"
    pvc = _k8s("PersistentVolumeClaim", "triton-model-repository")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    grpc = _k8s("Service", "triton")
    headless = _k8s("Service", "triton-replicas")
    for svc in (grpc, headless):
        assert svc["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in grpc["spec"]["ports"]] == [8001]
    assert headless["spec"]["clusterIP"] == "None" and 8000 in [p["port"] for p in headless["spec"]["ports"]]

    hpa = _k8s("HorizontalPodAutoscaler", "triton")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"}
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    served = {r["name"]["as"]: r for r in rules}
    rule = served[metric["pods"]["metric"]["name"]]
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]

    settings = _k8s("ConfigMap", "tagger-settings")["data"]
    assert settings["TAGGER_TRITON_MODEL_REPOSITORY"] == repo
    assert settings["TAGGER_TRITON_GRPC_URL"].startswith("triton")


@pytest.mark.unit
def test_airflow_values_kubernetes_executor_and_task_pods():
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == "3.3.2"
    assert values["dagProcessor"]["enabled"] and values["triggerer"]["enabled"]
    assert not values["postgresql"]["enabled"] and not values["redis"]["enabled"]
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"configMapRef": {"name": "tagger-settings"}} in env_from
    _k8s("ConfigMap", "tagger-settings")
    mounts = {m["name"]: m["mountPath"] for m in values["workers"]["extraVolumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in values["workers"]["extraVolumes"]}
    for name, claim in claims.items():
        _k8s("PersistentVolumeClaim", claim)
        assert name in mounts
    config_map = _k8s("ConfigMap", "tagger-settings")["data"]
    assert mounts["triton-model-repository"] == config_map["TAGGER_TRITON_MODEL_REPOSITORY"]
    assert mounts["tagger-home"] == config_map["TAGGER_HOME"]
    policy = _k8s("NetworkPolicy", "triton")
    allowed = [
        peer["podSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
        for peer in rule.get("from", [])
        if "podSelector" in peer
    ]
    assert values["workers"]["labels"] in allowed, "task pods must be allowed to Triton's control port"


def _fake_kubernetes(monkeypatch) -> None:
    """Just the two model classes the hook builds (the kubernetes client is not a project dependency)."""
    models = types.ModuleType("kubernetes.client.models")
    models.V1Toleration = lambda **kw: types.SimpleNamespace(**kw)
    models.V1ResourceRequirements = lambda **kw: types.SimpleNamespace(**kw)
    client = types.ModuleType("kubernetes.client")
    client.models = models
    root = types.ModuleType("kubernetes")
    root.client = client
    for name, module in (("kubernetes", root), ("kubernetes.client", client), ("kubernetes.client.models", models)):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.unit
def test_pod_mutation_hook_puts_training_on_gpu(monkeypatch):
    _fake_kubernetes(monkeypatch)
    code = yaml.safe_load(AIRFLOW_VALUES.read_text())["airflowLocalSettings"]
    scope: dict = {}
    exec(compile(code, "airflow_local_settings.py", "exec"), scope)

    def pod(task_id: str):
        base = types.SimpleNamespace(name="base", image="cpu-image", resources=None)
        spec = types.SimpleNamespace(node_selector=None, tolerations=None, containers=[base])
        return types.SimpleNamespace(metadata=types.SimpleNamespace(labels={"task_id": task_id}), spec=spec)

    train = pod("training.train")
    scope["pod_mutation_hook"](train)
    (c,) = train.spec.containers
    assert c.resources.limits["nvidia.com/gpu"] == "1" and c.image.endswith("-cuda")
    assert _image_pinned(c.image)
    assert train.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.key for t in train.spec.tolerations] == ["nvidia.com/gpu"]

    other = pod("tag_batch")
    scope["pod_mutation_hook"](other)
    assert other.spec.containers[0].image == "cpu-image" and other.spec.tolerations is None


def _dag_tasks() -> list[dict]:
    """Task functions in dags/*.py with the queue/pool their @task(...) decorator sets (read, not imported)."""
    import ast

    tasks = []
    for path in sorted((ROOT / "dags").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "task":
                    kw = {k.arg: k.value.value for k in deco.keywords if isinstance(k.value, ast.Constant)}
                    tasks.append({"task_id": kw.get("task_id", node.name), **kw})
    return tasks


@pytest.mark.unit
def test_dag_queues_pools_and_gpu_tasks_are_provided():
    tasks = _dag_tasks()
    if not tasks:
        pytest.skip("no DAG files yet")
    services = _compose()["services"]
    queues = set()
    for svc in services.values():
        cmd = [str(c) for c in svc.get("command") or []]
        if cmd[:2] == ["celery", "worker"] and "--queues" in cmd:
            queues |= set(cmd[cmd.index("--queues") + 1].split(","))
    init = services["airflow-init"]["command"][0]
    values = yaml.safe_load(AIRFLOW_VALUES.read_text())
    scope: dict = {}
    exec(compile(values["airflowLocalSettings"], "airflow_local_settings.py", "exec"), scope)
    for t in tasks:
        assert t.get("queue", "default") in queues, f"no compose worker consumes queue of {t}"
        if "pool" in t:
            assert f"airflow pools set {t['pool']} " in init, f"compose airflow-init does not create pool {t}"
            assert f"airflow pools set {t['pool']} " in values["migrateDatabaseJob"]["args"][-1]
        if t.get("queue") == "gpu":
            assert t["task_id"] in scope["GPU_TASK_IDS"], f"GPU task {t['task_id']} would not get a GPU pod"


@pytest.mark.integration
def test_triton_model_control_needs_the_admin_header(tmp_path):
    """The compose file's gRPC restriction, on the real tritonserver: load/unload only with the admin header."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from serving.server import TritonServer, free_port

    args = _compose()["services"]["triton"]["command"]
    restricted = next(a for a in args if a.startswith("--grpc-restricted-protocol="))
    key, value = restricted.rsplit(":", 1)[1].split("=", 1)
    # The settings field deploy reads holds exactly the value Triton expects.
    assert _compose()["services"]["airflow-worker"]["environment"]["TAGGER_TRITON_ADMIN_KEY"] == value

    class ComposeFlags(TritonServer):
        def command(self) -> list[str]:
            return [*super().command(), "--load-model=*", "--exit-on-error=false", restricted]

    (tmp_path / "repo").mkdir()
    settings = Settings(
        home=tmp_path,
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        triton_http_url=f"127.0.0.1:{free_port()}",
        triton_metrics_port=free_port(),
        triton_model_repository=tmp_path / "repo",
    )
    with ComposeFlags(settings, load=[]):
        client = grpcclient.InferenceServerClient(settings.triton_grpc_url)
        try:
            assert client.is_server_ready()  # health stays open
            for headers in (None, {f"triton-grpc-protocol-{key}": "wrong"}):
                with pytest.raises(InferenceServerException, match="restricted"):
                    client.load_model("absent", headers=headers)
            with pytest.raises(InferenceServerException) as exc:
                client.load_model("absent", headers={f"triton-grpc-protocol-{key}": value})
            assert "restricted" not in str(exc.value) and "absent" in str(exc.value)
        finally:
            client.close()

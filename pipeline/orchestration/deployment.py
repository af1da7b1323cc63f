"""A real Airflow 3 deployment on this machine: ``tagger airflow up|down|status``.

The same shape as docker-compose.yml and infra/helm, as local processes: ``airflow scheduler``,
``dag-processor``, ``triggerer``, ``api-server`` and one or more ``airflow celery worker`` processes
(CeleryExecutor) listening on the queues the DAGs use (``default``, and ``gpu`` for training). Everything is
configured through Airflow's own ``AIRFLOW__…`` variables derived from the project's settings:

* metadata database: ``TAGGER_AIRFLOW_DATABASE_URL``, else a database ``airflow`` on the project's Postgres
  (the embedded server by default); the Celery result backend lives there too;
* broker: ``TAGGER_CELERY_BROKER_URL``, else the machine's Redis at 127.0.0.1:6379 when it answers;
* the api-server (UI, REST API, execution API) on ``TAGGER_AIRFLOW_API_PORT`` or a free port.

Each process is recorded like every service a home starts (``TAGGER_HOME/services/airflow-<component>.json``:
pid, start time, command, ports, log; :mod:`pipeline.core.records`), so ``tagger services status|stop`` show and
stop them too; ``down`` stops only those. Logs, the chosen ports and the shared secrets live under
``TAGGER_HOME/airflow/``. The broker's keys carry a prefix per home, so two homes on one Redis never take each
other's tasks. :class:`AirflowAPI` is the small REST client the demo, the tests and the
bench use (asset events, DAG runs, task states, task logs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from pipeline.core import records
from pipeline.core.services import _as_sqlalchemy, _with_database, database_url, ensure_database_exists
from pipeline.errors import ConfigError, ServiceError
from pipeline.orchestration.airflow_local import DAGS_FOLDER
from pipeline.settings import QUIET_ENV, Settings
from serving.server import free_port

log = logging.getLogger(__name__)

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
QUEUES = ("default", "gpu")  # tagger_retrain's train task runs on "gpu"; every other task on "default"
POOLS = {"training": (1, "one training run at a time per deployment")}
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
RECORD_PREFIX = "airflow-"  # HOME/services/airflow-<component>.json
FINISHED = {"success", "failed"}


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def broker_url(settings: Settings) -> str:
    """The Celery broker: the setting, else the local Redis when it answers; else a one-line error."""
    if settings.celery_broker_url:
        return settings.celery_broker_url
    if _answers("127.0.0.1", 6379):
        return DEFAULT_BROKER
    raise ConfigError(
        "no Celery broker: nothing answers at 127.0.0.1:6379 (Redis); start Redis or set "
        "TAGGER_CELERY_BROKER_URL (redis://host:6379/0 or amqp://guest:guest@host:5672//)"
    )


def metadata_database_name(settings: Settings) -> str:
    """The default metadata database: ``airflow`` on the home's own embedded server; on a server other homes may
    use too (``TAGGER_DATABASE_URL``), ``airflow_<hash of the home>``: two deployments on one metadata database
    would run each other's DAG runs."""
    if not settings.database_url:
        return "airflow"
    return f"airflow_{hashlib.sha256(str(settings.home_dir.resolve()).encode()).hexdigest()[:10]}"


def metadata_url(settings: Settings) -> str:
    """Airflow's metadata database, created when missing."""
    if settings.airflow_database_url:
        url = _as_sqlalchemy(settings.airflow_database_url)
    else:
        url = _with_database(database_url(settings), metadata_database_name(settings))
    ensure_database_exists(url)
    return url


@dataclass
class Deployment:
    """Where one deployment lives (``TAGGER_HOME/airflow``) and how its processes are configured."""

    settings: Settings

    @property
    def home(self) -> Path:
        return self.settings.home_dir / "airflow"

    @property
    def state_file(self) -> Path:
        return self.home / "deployment.json"

    @property
    def log_dir(self) -> Path:
        return self.home / "process-logs"

    def state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    @property
    def api_url(self) -> str:
        port = self.state().get("api_port")
        if not port:
            raise ServiceError(f"no Airflow deployment in {self.home}: run `tagger airflow up` first")
        return f"http://127.0.0.1:{port}"

    @property
    def key_prefix(self) -> str:
        return f"tagger-{hashlib.sha256(str(self.settings.home_dir).encode()).hexdigest()[:10]}:"

    def workers(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.settings.airflow_workers + 1)]

    def names(self) -> list[str]:
        recorded = [r.name.removeprefix(RECORD_PREFIX) for r in records.all_records(self.settings)]
        recorded = sorted(n for n in recorded if n.startswith("worker-"))
        return [*COMPONENTS, *sorted(set(self.workers()) | set(recorded))]

    # ---- configuration -----------------------------------------------------------------------------------
    def _new_state(self) -> dict:
        from cryptography.fernet import Fernet  # Airflow's own dependency

        old = self.state()
        port = self.settings.airflow_api_port or old.get("api_port") or free_port()
        return {
            "api_port": port,
            "jwt_secret": old.get("jwt_secret") or secrets.token_urlsafe(32),
            "api_secret_key": old.get("api_secret_key") or secrets.token_urlsafe(32),
            "fernet_key": old.get("fernet_key") or Fernet.generate_key().decode(),
            "triggerer_log_port": old.get("triggerer_log_port") or free_port(),
            "worker_log_ports": old.get("worker_log_ports") or {},
        }

    def env(self, state: dict | None = None) -> dict[str, str]:
        """The process environment of every component: this one's, plus Airflow's configuration."""
        state = state or self.state()
        meta = metadata_url(self.settings)
        broker = broker_url(self.settings)
        port = state["api_port"]
        env = {
            **os.environ,
            "TAGGER_HOME": str(self.settings.home_dir),  # tasks run from another cwd: pin the home
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__EXECUTOR": "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": state["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
            "SimpleAuthManager",
            # A local deployment for one engineer: everyone is admin. Production (infra/helm) configures users.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            # psycopg 3 for the async engine too (Airflow would pick asyncpg for postgresql URLs)
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta.replace(
                "postgresql+psycopg://", "postgresql+psycopg_async://"
            ),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": state["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": state["jwt_secret"],
            "AIRFLOW__CELERY__BROKER_URL": broker,
            # Redis keys (queues included) carry a prefix of this home: two homes on one Redis never share a queue
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": self.key_prefix,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.settings.airflow_worker_concurrency),
            # the worker imports the task steps once; each task's forked process inherits them (celery_preload)
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "pipeline.orchestration.celery_preload.CELERY_CONFIG",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.settings.airflow_task_heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_LOG_SERVER_PORT": str(state["triggerer_log_port"]),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        # task logs without notes a user cannot act on, as the CLI's: a shell's own setting wins
        for key, value in QUIET_ENV.items():
            env.setdefault(key, value)
        return env

    def _airflow(self) -> list[str]:
        airflow = Path(sys.executable).with_name("airflow")
        return [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]

    def _command(self, name: str, state: dict) -> tuple[list[str], dict[str, str]]:
        if name.startswith("worker-"):
            port = state["worker_log_ports"].setdefault(name, free_port())
            cmd = [
                "celery",
                "worker",
                "--queues",
                ",".join(QUEUES),
                "--concurrency",
                str(self.settings.airflow_worker_concurrency),
                "--celery-hostname",
                f"{name}@{socket.gethostname()}",
                "--without-mingle",
            ]
            return cmd, {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)}
        return [name], {}

    # ---- lifecycle ------------------------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        """The live process of component ``name`` that this home started, or None."""
        rec = records.read(self.settings, RECORD_PREFIX + name)
        return rec.pid if rec and records.alive(rec) else None

    def up(self, *, wait_s: float = 240) -> dict:
        """Start what is not running (an idempotent ``up``); wait for the api-server and the DAGs."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        state = self._new_state()
        env = self.env(state)
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)
        if not self.pid("api-server") and not records.port_free("127.0.0.1", state["api_port"]):
            raise ServiceError(
                f"127.0.0.1:{state['api_port']} (Airflow api-server) is held by a process this home did not start: "
                "free it, or set TAGGER_AIRFLOW_API_PORT to a free port"
            )
        if not any(self.pid(n) for n in self.names()):
            self._prepare(env)
        started = []
        for name in [*COMPONENTS, *self.workers()]:
            if self.pid(name):
                continue
            cmd, extra = self._command(name, state)
            logfile = self.log_dir / f"{name}.log"
            with open(logfile, "ab") as out:  # the child keeps its own descriptor
                proc = subprocess.Popen(
                    [*self._airflow(), *cmd],
                    env={**env, **extra},
                    cwd=self.home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: `down` stops it and every child it made
                )
            if name == "api-server":
                ports = {"api": state["api_port"]}
            elif name == "triggerer":
                ports = {"logs": state["triggerer_log_port"]}
            elif name.startswith("worker-"):
                ports = {"logs": state["worker_log_ports"][name]}
            else:
                ports = {}
            records.write(
                self.settings,
                records.ServiceRecord(
                    name=RECORD_PREFIX + name,
                    pid=proc.pid,
                    command=[*self._airflow(), *cmd],
                    host="127.0.0.1",
                    ports=ports,
                    log=str(logfile),
                ),
            )
            started.append(name)
        self.state_file.write_text(json.dumps(state, indent=2))
        api = AirflowAPI(self.api_url)
        api.wait_ready(wait_s, self)
        for dag_id in ("tagger_retrain", "tagger_batch_tag", "tagger_review_watch"):
            api.wait_dag(dag_id, wait_s, self)
        return {"started": started, "url": self.api_url}

    def _prepare(self, env: dict[str, str]) -> None:
        """``airflow db migrate`` and the pools the DAGs use (both idempotent)."""
        steps = [["db", "migrate"]]
        steps += [["pools", "set", name, str(slots), desc] for name, (slots, desc) in POOLS.items()]
        for args in steps:
            out = subprocess.run(
                [*self._airflow(), *args], env=env, cwd=self.home, capture_output=True, text=True, timeout=600
            )
            if out.returncode != 0:
                tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ServiceError(f"`airflow {' '.join(args[:2])}` failed in {self.home}: {tail[0]}")

    def down(self, *, timeout_s: float = 30) -> list[str]:
        """Stop the recorded processes (SIGTERM, then SIGKILL of each process group); return their names."""
        stopped = []
        for name in self.names():
            rec = records.read(self.settings, RECORD_PREFIX + name)
            if rec is None:
                continue
            if rec.pid and records.alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(rec.pid, signal.SIGTERM)  # the group: a worker's task processes too
                stopped.append(rec)
            else:
                records.remove(self.settings, rec.name)
        for rec in stopped:
            records.stop(rec, timeout=timeout_s)  # waits, then SIGKILLs what is left of the group
            records.remove(self.settings, rec.name)
        return [rec.name.removeprefix(RECORD_PREFIX) for rec in stopped]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one component's process group (the fault-injection path of the tests)."""
        pid = self.pid(name)
        if not pid:
            raise ServiceError(f"Airflow component {name} is not running in {self.home}")
        _signal_group(pid, sig)
        return pid

    def status(self) -> list[tuple[str, str, str]]:
        """(component, state, log file) for each component."""
        rows = []
        for name in self.names():
            pid = self.pid(name)
            rows.append((name, f"running (pid {pid})" if pid else "stopped", str(self.log_dir / f"{name}.log")))
        return rows


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class AirflowAPI:
    """The deployment's REST API (``/api/v2``), authenticated with a token from the simple auth manager."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            res = self._http.get("/auth/token")
            res.raise_for_status()
            self._token = res.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs) -> dict:
        res = self._http.request(method, f"/api/v2{path}", headers=self._auth(), **kwargs)
        if res.status_code >= 400:
            raise ServiceError(f"Airflow API {method} {path}: HTTP {res.status_code}: {res.text[:300]}")
        return res.json() if res.content else {}

    def wait_ready(self, timeout_s: float, deployment: Deployment | None = None) -> None:
        @retry(retry=retry_if_exception_type(httpx.HTTPError), stop=stop_after_delay(timeout_s), wait=wait_fixed(1))
        def ping():
            _check_alive(deployment, "api-server")
            self._http.get("/api/v2/monitor/health").raise_for_status()

        try:
            ping()
        except httpx.HTTPError as exc:
            msg = f"the Airflow api-server did not answer at {self.base_url} in {timeout_s:.0f} s"
            raise ServiceError(msg) from exc

    def wait_dag(self, dag_id: str, timeout_s: float, deployment: Deployment | None = None) -> dict:
        """Wait until the dag-processor has parsed ``dag_id`` (and it is unpaused)."""
        deadline = time.monotonic() + timeout_s
        while True:
            _check_alive(deployment, "dag-processor")
            try:
                dag = self.request("GET", f"/dags/{dag_id}")
                if dag.get("is_paused"):
                    self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return dag
            except ServiceError:
                if time.monotonic() > deadline:
                    errors = self.request("GET", "/importErrors").get("import_errors", [])
                    why = f": {errors[0].get('stack_trace', '').strip().splitlines()[-1]}" if errors else ""
                    raise ServiceError(f"DAG {dag_id} was not parsed within {timeout_s:.0f} s{why}") from None
            time.sleep(2)

    def asset_id(self, uri: str) -> int:
        for asset in self.request("GET", "/assets", params={"uri_pattern": uri}).get("assets", []):
            if asset["uri"] == uri:
                return asset["id"]
        raise ServiceError(f"Airflow knows no asset {uri!r} (is tagger_retrain parsed?)")

    def emit_asset_event(self, uri: str, extra: dict | None = None) -> dict:
        """What a shop's feed job does when a catalog snapshot lands: the scheduler then runs tagger_retrain."""
        return self.request("POST", "/assets/events", json={"asset_id": self.asset_id(uri), "extra": extra or {}})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        run = self.request("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"}).get("dag_runs", [])

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Task instances in the order they ran (start time; not started yet last)."""
        tis = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").get("task_instances", [])
        return sorted(tis, key=lambda t: (t.get("start_date") is None, t.get("start_date") or ""))

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.request("GET", path, params={"full_content": True}).get("content", [])
        if isinstance(content, str):
            return content
        return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)

    def wait_for_run(self, dag_id: str, *, after: set[str] | None = None, timeout_s: float = 120) -> str:
        """Wait for a run of ``dag_id`` not in ``after`` to appear (scheduled by the scheduler); its run id."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["dag_run_id"] not in (after or set()):
                    return run["dag_run_id"]
            time.sleep(1)
        raise ServiceError(f"the scheduler started no run of {dag_id} within {timeout_s:.0f} s")

    def wait_finished(self, dag_id: str, run_id: str, *, timeout_s: float = 900, poll_s: float = 2) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise ServiceError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def summary(self, dag_id: str, run_id: str) -> dict:
        """The same shape as :func:`airflow_local.run_dag`'s result: state, tasks and seconds in run order."""
        tis = self.task_instances(dag_id, run_id)
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": self.run(dag_id, run_id)["state"],
            "tasks": {t["task_id"]: t["state"] or "none" for t in tis},
            "seconds": {t["task_id"]: t.get("duration") for t in tis},
            "tries": {t["task_id"]: t.get("try_number") for t in tis},
        }

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowAPI:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_alive(deployment: Deployment | None, name: str) -> None:
    if deployment is not None and not deployment.pid(name):
        logfile = deployment.log_dir / f"{name}.log"
        lines = logfile.read_text(errors="replace").strip().splitlines() if logfile.exists() else []
        raise ServiceError(f"Airflow {name} exited: {lines[-1] if lines else 'no output'} (log: {logfile})")

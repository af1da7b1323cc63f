"""A local Triton Inference Server: the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

The wheel holds Triton 2.51 with the Python backend only. To run it on a plain model repository we build a
backend folder (``<work>/backends/python/`` = the wheel's ``libtriton_python.so`` + the stub for the running
Python version), put the running interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else the stub links the
system libpython and ``import transformers``/``onnxruntime`` fail inside ``model.py``), put this venv's
site-packages (numpy<2) first on ``PYTHONPATH``, and start in ``--model-control-mode=explicit``.

The server runs in its own process group; :meth:`TritonServer.stop` terminates it, then kills whatever is left
of that group (Python-backend stubs) and removes the shared-memory files carrying this server's unique prefix.
It binds the hosts its URL settings name (loopback by default) and records itself in ``HOME/services/triton.json``
(:mod:`pipeline.core.records`), which ``tagger services status|stop`` and every later process of the home read.

One rule for the address (:func:`claim_address`): a server that holds an address this home wants without this
home's live record is *foreign* and never used. Ports the home chose itself move to free ones; an address the
user set is refused with a one-line error naming it and the setting.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from pipeline.core import records
from pipeline.errors import ServiceError
from pipeline.settings import Settings, free_loopback_port

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path  # folder with libtriton_python.so + triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the running Python version
    caches: Path
    libs: Path  # nvidia_pytriton.libs (bundled shared libraries)


def triton_install() -> TritonInstall:
    """Locate the tritonserver binary and its pieces inside the installed nvidia-pytriton wheel.

    Raises:
        ServiceError: the wheel is missing or has no stub for this Python version.
    """
    try:
        import pytriton
    except ImportError as exc:
        raise ServiceError("nvidia-pytriton is not installed; `pip install nvidia-pytriton==0.7.0`") from exc
    root = Path(pytriton.__file__).parent / "tritonserver"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    inst = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
        caches=root / "caches",
        libs=root.parent.parent / "nvidia_pytriton.libs",
    )
    for p in (inst.binary, inst.python_backend, inst.stub):
        if not p.exists():
            raise ServiceError(f"tritonserver piece {p} is missing from the nvidia-pytriton wheel; reinstall it")
    return inst


def free_port() -> int:
    """A loopback port nobody holds now (the same picker the home's port record uses)."""
    return free_loopback_port()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _host(url: str) -> str:
    return url.rsplit(":", 1)[0].strip("[]")


RECORD = "triton"  # HOME/services/triton.json


def endpoints(settings: Settings) -> list[tuple[str, str, int]]:
    """(settings field, bind host, port) of each address the local server binds; metrics share the gRPC host."""
    grpc_host = records.bind_host(_host(settings.triton_grpc_url))
    return [
        ("triton_grpc_url", grpc_host, _port(settings.triton_grpc_url)),
        ("triton_http_url", records.bind_host(_host(settings.triton_http_url)), _port(settings.triton_http_url)),
        ("triton_metrics_port", grpc_host, settings.triton_metrics_port),
    ]


def env_name(field: str) -> str:
    return f"TAGGER_{field.upper()}"


class TritonServer:
    """Start/stop one ``tritonserver`` process on ``settings.model_repository``.

    Usage::

        with TritonServer(settings) as server:   # waits until ready
            ...
    """

    def __init__(self, settings: Settings, *, load: list[str] | None = None, work_dir: Path | None = None):
        self.settings = settings
        self.repository = settings.model_repository
        self.work_dir = (work_dir or settings.home_dir / "triton").resolve()
        self.load = load  # models loaded at start; None: the configured model if its folder exists
        self.shm_prefix = f"tagger_{uuid.uuid4().hex[:8]}_"
        self.proc: subprocess.Popen | None = None
        self.proc_rc: int | None = None
        self.log_path = self.work_dir / "tritonserver.log"

    # ---- environment ------------------------------------------------------------------------------------
    def _backend_dir(self, inst: TritonInstall) -> Path:
        backends = self.work_dir / "backends"
        py = backends / "python"
        py.mkdir(parents=True, exist_ok=True)
        for src in (*inst.python_backend.glob("*.so"), *inst.python_backend.glob("*.py"), inst.stub):
            dst = py / src.name
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                shutil.copy2(src, dst)
        return backends

    def _env(self, inst: TritonInstall) -> dict[str, str]:
        env = os.environ.copy()
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        ld = [libdir, str(inst.libs), str(inst.binary.parent)]
        if env.get("LD_LIBRARY_PATH"):
            ld.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in ld if p)
        # The stub runs the interpreter it links (LIBDIR); give it this venv's packages, numpy<2 first.
        site = [sysconfig.get_paths()["purelib"], str(Path(__file__).resolve().parents[1])]
        if env.get("PYTHONPATH"):
            site.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = ":".join(site)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        return env

    def command(self) -> list[str]:
        inst = triton_install()
        s = self.settings
        (_, grpc_host, grpc_port), (_, http_host, http_port), (_, metrics_host, metrics_port) = endpoints(s)
        cmd = [
            str(inst.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self._backend_dir(inst)}",
            f"--cache-directory={inst.caches}",
            # the hosts the settings name (loopback by default), never Triton's own default 0.0.0.0
            f"--grpc-address={grpc_host}",
            f"--grpc-port={grpc_port}",
            f"--http-address={http_host}",
            f"--http-port={http_port}",
            f"--metrics-address={metrics_host}",
            f"--metrics-port={metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            "--exit-timeout-secs=10",
            # ready = the server answers; a model that failed to load (a bad candidate) must not make the server
            # look down to the next deploy (deploys check each model's own readiness)
            "--strict-readiness=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        load = self.load
        if load is None:
            load = [s.triton_model_name] if (self.repository / s.triton_model_name / "config.pbtxt").exists() else []
        cmd += [f"--load-model={m}" for m in load]
        return cmd

    # ---- lifecycle --------------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        """This home's record of the server (``HOME/services/triton.json``)."""
        return records.record_path(self.settings, RECORD)

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start the server and wait until it answers ready (models named by ``load`` loaded).

        Raises:
            ServiceError: this home's server already runs, an address is taken, the binary exits, or it is not
                ready within ``timeout`` s.
        """
        if self.proc is not None:
            return self
        running = records.read(self.settings, RECORD)
        if running and records.alive(running):
            raise ServiceError(
                f"this home's Triton already runs (pid {running.pid}, gRPC {running.addresses().get('grpc')}); "
                "stop it first (`tagger services stop`)"
            )
        for field, host, port in endpoints(self.settings):
            if not records.port_free(host, port):
                raise ServiceError(_taken_message(self.settings, field, host, port))
        self.repository.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        inst = triton_install()
        log.info("starting tritonserver on %s (repository %s)", self.settings.triton_grpc_url, self.repository)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        # stdin: never the caller's. An Airflow 3 task's stdin is its supervisor's socket; the Python backend
        # starts each stub through bash, and a bash whose stdin is a socket sources ~/.bashrc (a pyenv init
        # there puts the base interpreter before this venv, and the stub then finds no onnxruntime).
        self.proc = subprocess.Popen(
            cmd,
            env=self._env(inst),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._logf = logf
        (_, host, grpc), (_, _, http), (_, _, metrics) = endpoints(self.settings)
        records.write(
            self.settings,
            records.ServiceRecord(
                name=RECORD,
                pid=self.proc.pid,
                command=cmd,
                host=host,
                ports={"grpc": grpc, "http": http, "metrics": metrics},
                log=str(self.log_path),
                extra={
                    "grpc_url": self.settings.triton_grpc_url,
                    "http_url": self.settings.triton_http_url,
                    "shm_prefix": self.shm_prefix,
                    "repository": str(self.repository),
                },
            ),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise ServiceError(f"tritonserver exited with status {self.proc_rc} during start-up:\n{tail}")
            if is_ready(self.settings.triton_grpc_url, timeout=1.0):
                log.info("tritonserver ready (pid %d) in %.1f s", self.proc.pid, timeout - deadline + time.monotonic())
                return self
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise ServiceError(f"tritonserver was not ready after {timeout:.0f} s; its log ends with:\n{tail}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server, kill leftover stubs of its process group, remove its /dev/shm files."""
        if self.proc is None:
            return
        proc = self.proc
        # SIGTERM (it unloads models and stops its stubs), then SIGKILL what is left of its group; reap it
        records.terminate_group(proc.pid, lambda: proc.poll() is None, timeout)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver pid %d did not exit after SIGKILL", proc.pid)
        self.proc_rc = proc.returncode
        self.proc = None
        if getattr(self, "_logf", None):
            self._logf.close()
        remove_shm(self.shm_prefix)
        records.remove(self.settings, RECORD)

    def is_ready(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and is_ready(self.settings.triton_grpc_url)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def remove_shm(prefix: str) -> int:
    """Delete the Python backend's shared-memory regions named with ``prefix``; return how many."""
    n = 0
    for f in SHM_DIR.glob(f"{prefix}*"):
        try:
            f.unlink()
            n += 1
        except OSError:
            pass
    return n


def is_ready(grpc_url: str, timeout: float = 2.0) -> bool:
    """True when a Triton server answers *server ready* on ``grpc_url``."""

    try:
        client = grpcclient.InferenceServerClient(grpc_url)
        try:
            return bool(client.is_server_ready(client_timeout=timeout))
        finally:
            client.close()
    except Exception:
        return False


def wait_ready(grpc_url: str, timeout: float = 120.0) -> None:
    """Wait until the server at ``grpc_url`` answers ready (this home's server, still starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(grpc_url, timeout=1.0):
            return
        time.sleep(0.25)
    raise ServiceError(f"this home's Triton at {grpc_url} was not ready after {timeout:.0f} s")


def own_server(settings: Settings) -> records.ServiceRecord | None:
    """This home's live Triton on the configured gRPC address, or None."""
    rec = records.read(settings, RECORD)
    if rec and records.alive(rec) and rec.extra.get("grpc_url") == settings.triton_grpc_url:
        return rec
    return None


def _taken_message(settings: Settings, field: str, host: str, port: int) -> str:
    env = env_name(field)
    rec = records.read(settings, RECORD)
    if rec and records.alive(rec) and port in rec.ports.values():
        return (
            f"{host}:{port} ({env}) is held by this home's own Triton (pid {rec.pid}), started with other addresses "
            f"(gRPC {rec.extra.get('grpc_url')}): stop it (`tagger services stop`) or use the settings it started with"
        )
    return (
        f"{host}:{port} ({env}) is held by a process this home ({settings.home_dir}) did not start: free it "
        f"(`ss -ltnp 'sport = :{port}'` shows it; `tagger services stop` in its home), point {env} at a free port, "
        "or set TAGGER_TRITON_EXTERNAL=true for a Triton you run yourself"
    )


def foreign_address(settings: Settings) -> tuple[str, str, int] | None:
    """The first address of the local server that something other than this home's Triton holds, or None."""
    if own_server(settings):
        return None
    for field, host, port in endpoints(settings):
        if not records.port_free(host, port):
            return field, host, port
    return None


def claim_address(settings: Settings) -> Settings:
    """The settings to serve with, checked before any work: seconds, not after training.

    An external Triton (TAGGER_TRITON_EXTERNAL, or a non-loopback URL) is used as it is. Otherwise a foreign
    process on an address the home chose moves the home to free ports (recorded for every later process);
    one on an address the user set is refused.

    Raises:
        ServiceError: a foreign process holds an address the user set (one line: the address, the setting, the fix).
    """
    if settings.triton_is_external:
        return settings
    for _ in range(3):
        taken = foreign_address(settings)
        if taken is None:
            return settings
        field, host, port = taken
        if field not in settings.auto_ports:
            raise ServiceError(_taken_message(settings, field, host, port))
        log.warning(
            "%s:%d, recorded for this home's Triton, is now held by another process: moving to free ports",
            host,
            port,
        )
        settings = settings.with_new_ports()
    raise ServiceError(f"could not find free ports for Triton; see {records.records_dir(settings) / 'ports.json'}")


def stop_recorded(settings: Settings) -> bool:
    """Stop the Triton this home started (its record in ``HOME/services/``); True if one was running."""
    stopped, rec = records.stop_named(settings, RECORD)
    if rec is None:
        return False
    remove_shm(rec.extra.get("shm_prefix") or "tagger_none_")
    return stopped


def server_state(settings: Settings) -> str:
    """``running`` (this home's server answers ready), ``starting`` (ours, not ready yet), ``foreign`` (another
    process holds the address: not this home's), ``external`` (someone else's by design), or ``stopped``."""
    if settings.triton_is_external:
        return "external, ready" if is_ready(settings.triton_grpc_url, timeout=1.0) else "external, not ready"
    if own_server(settings):
        return "running" if is_ready(settings.triton_grpc_url, timeout=1.0) else "starting"
    return "foreign" if foreign_address(settings) else "stopped"

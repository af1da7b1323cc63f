"""A local Triton Inference Server: the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel.

The wheel holds Triton 2.51 with the Python backend only. To run it on a plain model repository we build a
backend folder (``<work>/backends/python/`` = the wheel's ``libtriton_python.so`` + the stub for the running
Python version), put the running interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else the stub links the
system libpython and ``import transformers``/``onnxruntime`` fail inside ``model.py``), put this venv's
site-packages (numpy<2) first on ``PYTHONPATH``, and start in ``--model-control-mode=explicit``.

The server runs in its own process group; :meth:`TritonServer.stop` terminates it, then kills whatever is left
of that group (Python-backend stubs) and removes the shared-memory files carrying this server's unique prefix.
A pid file under ``HOME/triton/`` lets ``tagger services status`` and a later ``tagger serve --stop`` find it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import tritonclient.grpc as grpcclient

from pipeline.errors import ServiceError
from pipeline.settings import Settings

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        cmd = [
            str(inst.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self._backend_dir(inst)}",
            f"--cache-directory={inst.caches}",
            f"--grpc-port={_port(s.triton_grpc_url)}",
            f"--http-port={_port(s.triton_http_url)}",
            f"--metrics-port={s.triton_metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            "--exit-timeout-secs=10",
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
        return self.work_dir / "triton.json"

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start the server and wait until it answers ready (models named by ``load`` loaded).

        Raises:
            ServiceError: a port is taken, the binary exits, or it is not ready within ``timeout`` s.
        """
        if self.proc is not None:
            return self
        self.repository.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if is_ready(self.settings.triton_grpc_url, timeout=1.0):
            raise ServiceError(
                f"a Triton server already answers on {self.settings.triton_grpc_url}; stop it "
                "(`tagger serve --stop`) or set TAGGER_TRITON_GRPC_URL to a free port"
            )
        cmd = self.command()
        inst = triton_install()
        log.info("starting tritonserver on %s (repository %s)", self.settings.triton_grpc_url, self.repository)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self.proc = subprocess.Popen(
            cmd, env=self._env(inst), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._logf = logf
        self.pid_file.write_text(
            json.dumps({"pid": self.proc.pid, "grpc": self.settings.triton_grpc_url, "shm_prefix": self.shm_prefix})
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
        stop_process_group(self.proc.pid, timeout=timeout, proc=self.proc)
        self.proc_rc = self.proc.returncode
        self.proc = None
        if getattr(self, "_logf", None):
            self._logf.close()
        remove_shm(self.shm_prefix)
        self.pid_file.unlink(missing_ok=True)

    def is_ready(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and is_ready(self.settings.triton_grpc_url)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process_group(pid: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the server (it unloads models and stops its stubs), then SIGKILL what is left of its group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        elif not _pid_alive(pid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the group is the server's own (start_new_session): stubs only
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver pid %d did not exit after SIGKILL", pid)


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


def recorded_pid_file(settings: Settings) -> Path:
    """Where a server started from this home records itself (``TritonServer.pid_file`` with the default work dir)."""
    return settings.home_dir / "triton" / "triton.json"


def stop_recorded(settings: Settings) -> bool:
    """Stop the server recorded in ``HOME/triton/triton.json`` (started by ``tagger serve``); True if one was."""
    pid_file = recorded_pid_file(settings)
    if not pid_file.exists():
        return False
    info = json.loads(pid_file.read_text())
    alive = _pid_alive(int(info["pid"]))
    if alive:
        stop_process_group(int(info["pid"]))
    remove_shm(info.get("shm_prefix", "tagger_none_"))
    pid_file.unlink(missing_ok=True)
    return alive


def server_state(settings: Settings) -> str:
    """``running`` (answers ready), ``starting`` (our process is up, not ready yet), or ``stopped``."""
    if is_ready(settings.triton_grpc_url, timeout=1.0):
        return "running"
    pid_file = recorded_pid_file(settings)
    if pid_file.exists():
        try:
            if _pid_alive(int(json.loads(pid_file.read_text())["pid"])):
                return "starting"
        except (ValueError, KeyError, OSError):
            pass
    return "stopped"

"""What this home started: one JSON record per long-running service under ``HOME/services/``.

Every server tagger starts (Triton today; Airflow components and workers next) writes a record here: pid,
the process's start time (so a recycled pid is never mistaken for ours), the command, the host and ports it binds,
and its log. ``tagger services status`` shows exactly these records and whether each process still lives and
answers; ``tagger services stop`` stops exactly these processes. A server that answers on an address this home
wants but that has no live record here is *foreign*: it is never used silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

from pipeline.settings import Settings


@dataclass(frozen=True)
class ServiceRecord:
    """One process this home started. ``ports`` maps a role (``grpc``, ``http``…) to the port it binds."""

    name: str
    pid: int
    command: list[str]
    host: str
    ports: dict[str, int]
    log: str | None = None
    create_time: float | None = None  # psutil's start time of ``pid``: guards against pid reuse
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    extra: dict = field(default_factory=dict)

    def addresses(self) -> dict[str, str]:
        return {role: f"{self.host}:{port}" for role, port in self.ports.items()}


def records_dir(settings: Settings) -> Path:
    return settings.home_dir / "services"


def record_path(settings: Settings, name: str) -> Path:
    return records_dir(settings) / f"{name}.json"


def write(settings: Settings, record: ServiceRecord) -> Path:
    """Record ``record`` (atomically: a reader never sees half a file)."""
    if record.create_time is None:
        with contextlib.suppress(psutil.Error):
            record = ServiceRecord(**{**asdict(record), "create_time": psutil.Process(record.pid).create_time()})
    path = record_path(settings, record.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    tmp.replace(path)
    return path


def read(settings: Settings, name: str) -> ServiceRecord | None:
    """The record of ``name``, or None when there is none (or it cannot be read)."""
    path = record_path(settings, name)
    try:
        return ServiceRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def all_records(settings: Settings) -> list[ServiceRecord]:
    folder = records_dir(settings)
    if not folder.is_dir():
        return []
    names = sorted(p.stem for p in folder.glob("*.json") if p.stem != "ports")
    return [r for r in (read(settings, n) for n in names) if r is not None]


def remove(settings: Settings, name: str) -> None:
    record_path(settings, name).unlink(missing_ok=True)


def alive(record: ServiceRecord) -> bool:
    """The recorded process still runs (same pid *and* same start time, so not a recycled pid)."""
    try:
        proc = psutil.Process(record.pid)
        if record.create_time is not None and abs(proc.create_time() - record.create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now (nothing listens there, on that host or on 0.0.0.0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is not a listener
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def bind_host(host: str) -> str:
    """The address a server binds for a URL host: loopback names become 127.0.0.1; others are taken as given."""
    return "127.0.0.1" if host in ("localhost", "") else host


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def stop(record: ServiceRecord, timeout: float = 20.0) -> bool:
    """SIGTERM the recorded process, then SIGKILL what is left of its process group (it was started in a new
    session, so the group holds only its children, e.g. Triton's backend stubs or a worker's task processes).
    Returns False when it was no longer running."""
    return terminate_group(record.pid, lambda: alive(record), timeout)


def stop_named(settings: Settings, name: str, timeout: float = 20.0) -> tuple[bool, ServiceRecord | None]:
    """Stop the process recorded as ``name`` and forget its record; returns (whether it was running, the record or
    None when there was none)."""
    rec = read(settings, name)
    if rec is None:
        return False, None
    stopped = stop(rec, timeout)
    remove(settings, name)
    return stopped, rec


def terminate_group(pid: int, running: Callable[[], bool], timeout: float = 20.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` while ``running()``, then SIGKILL its process group (its own: it was
    started in a new session), orphans of a dead leader included. ``running`` is the caller's liveness test: a
    record's pid and start time, or ``Popen.poll`` for a child (a zombie child still looks alive to psutil).
    Returns whether it was running."""
    was_alive = running()
    if was_alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and running():
            time.sleep(0.1)
    if was_alive or _group_alive(pid):  # orphans of a dead leader keep its group id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return was_alive

"""Real-time tagging: ``tagger tag-worker`` tags a product within a second of its insert or update.

Postgres is the queue (migration ``0004``): triggers on ``products`` write one ``tag_outbox`` row per product whose
text changed and ``NOTIFY tagger_outbox`` when that transaction commits. The worker LISTENs on a connection of its
own; on each notification (or every ``poll_s`` without one, so a notification missed while reconnecting costs at
most that) it drains the outbox, batch after batch::

    one transaction:  take up to ``max_batch`` outbox rows, oldest first, of the storefront's lane while it holds
                      any, else of the bulk-load lane (FOR UPDATE SKIP LOCKED: several workers share the outbox)
                      read those products as they are now, tag them through Triton over gRPC
                      replace their model tags (as batch tagging does: :func:`pipeline.tagging.batch.tag_rows`),
                      enqueue their pending tags for review, delete the outbox rows taken,
                      NOTIFY tagger_tagged with the product ids; commit

A storefront that wants to know when a product's tags are there LISTENs on ``tagger_tagged``: the payload (comma-
separated ``products.id``) is delivered when the tags are committed, never before.

Batching: after a wake-up the worker lingers ``linger_ms`` for more notifications, then each batch takes what has
arrived (up to ``max_batch``), so a burst is tagged in a few Triton calls instead of one per product.

Nothing lost, nothing twice: a worker killed mid-batch never commits, Postgres rolls its transaction back, and the
rows are back in the outbox for the next one. Triton unavailable: the client retries with back-off, then the batch
rolls back and the worker tries again after ``retry_s``. Postgres gone: the worker reconnects with back-off
(tenacity) and drains what arrived meanwhile. The hourly ``tagger_batch_tag`` DAG still catches anything no worker
tagged, and deletes the outbox rows it covers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

import psycopg
import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception_type, wait_exponential

from pipeline.catalog.taglib import ensure_schema
from pipeline.core import records
from pipeline.core.services import get_engine
from pipeline.errors import ServiceError, ServingError, TagLibraryError
from pipeline.review import queue
from pipeline.settings import Settings
from pipeline.tagging.batch import library_ids, tag_rows

log = logging.getLogger(__name__)

CHANNEL = "tagger_outbox"  # the channel migration 0004's triggers notify
TAGGED = "tagger_tagged"  # the worker notifies the product ids it tagged here, delivered when its batch commits
RECORD = "tag-worker"  # its record under HOME/services (tagger services status|stop)
APP_NAME = "tagger-tag-worker"  # application_name of the LISTEN connection, + ":<pid>"
_DB_DOWN = (psycopg.OperationalError, sa.exc.OperationalError, sa.exc.InterfaceError)

_TAKE = sa.text(
    """
    delete from tag_outbox o using (
        select id from tag_outbox where priority = :lane order by id limit :n for update skip locked
    ) taken where o.id = taken.id
    returning o.product_pk
    """
)
_PRODUCTS = sa.text(
    "select id, title, description, brand, attributes, updated_at from products where id = any(:pks) order by id"
)


@dataclass
class WorkerStats:
    batches: int = 0
    products: int = 0
    tags_written: int = 0
    pending_review: int = 0
    failed_batches: int = 0  # rolled back (Triton or Postgres failed); their rows went back to the outbox
    refused: int = 0  # products Triton refuses as they are (logged with their id); their outbox rows are done
    reconnects: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _payloads(ids: list[int], limit: int = 7900) -> list[str]:
    """Comma-separated ids in chunks under Postgres's 8000-byte NOTIFY payload limit."""
    out, cur = [], ""
    for i in map(str, ids):
        if cur and len(cur) + 1 + len(i) > limit:
            out.append(cur)
            cur = ""
        cur = f"{cur},{i}" if cur else i
    return [*out, cur] if cur else out


def listen_conninfo(engine: sa.Engine) -> str:
    """The libpq conninfo of ``engine``'s database (for the LISTEN connection, outside SQLAlchemy's pool)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class TagWorker:
    """Drain ``tag_outbox`` through Triton as products arrive. ``run()`` until :meth:`stop` (or SIGTERM/SIGINT in
    the CLI); ``drain()`` once for tests and tools."""

    def __init__(
        self,
        settings: Settings,
        *,
        client=None,
        max_batch: int = 64,
        linger_ms: float = 5.0,
        poll_s: float = 5.0,
        retry_s: float = 1.0,
        review_below: float = 0.5,
        library_refresh_s: float = 30.0,
    ):
        from serving.client import TaggerClient

        self.client = client or TaggerClient(settings.triton_grpc_url, settings.triton_model_name)
        self.max_batch, self.linger_s, self.poll_s, self.retry_s = max_batch, linger_ms / 1000, poll_s, retry_s
        self.review_below, self.library_refresh_s = review_below, library_refresh_s
        self.engine = ensure_schema(settings)
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._slugs: dict[str, int] = {}
        self._slugs_at = 0.0

    # ---- one batch ------------------------------------------------------------------------------------
    def _library(self, conn) -> dict[str, int]:
        if not self._slugs or time.monotonic() - self._slugs_at > self.library_refresh_s:
            self._slugs, self._slugs_at = library_ids(conn), time.monotonic()
            if not self._slugs:
                raise TagLibraryError("the tag library is empty: import a taxonomy or catalog first")
        return self._slugs

    def _tag(self, conn, rows) -> tuple[int, int]:
        """Tag ``rows`` in one Triton call; when Triton refuses the batch (a product it will never take: an empty
        title, a text over its limit), tag them one by one and leave out only the refused ones, each named in
        the log, so one bad product never blocks the outbox."""
        slugs = self._library(conn)
        try:
            return tag_rows(conn, self.client, rows, slugs, self.review_below)[:2]
        except ServingError as exc:
            if not exc.refused:
                raise
        written = pending = 0
        for row in rows:
            try:
                w, p, _ = tag_rows(conn, self.client, [row], slugs, self.review_below)
            except ServingError as exc:
                if not exc.refused:
                    raise
                self.stats.refused += 1
                log.warning("product %d refused by Triton, left untagged: %s", row.id, str(exc).splitlines()[0])
                continue
            written, pending = written + w, pending + p
        return written, pending

    def tag_once(self) -> int:
        """Take one batch from the outbox, tag it and commit; returns how many outbox rows it took (0: empty)."""
        with self.engine.begin() as conn:
            taken = conn.execute(_TAKE, {"n": self.max_batch, "lane": 0}).all()
            if not taken:  # a batch never mixes lanes: a storefront write never waits on bulk rows in its batch
                taken = conn.execute(_TAKE, {"n": self.max_batch, "lane": 1}).all()
            if not taken:
                return 0
            pks = sorted({r.product_pk for r in taken})
            rows = conn.execute(_PRODUCTS, {"pks": pks}).all()  # deleted products took their outbox rows along
            written = pending = 0
            if rows:
                written, pending = self._tag(conn, rows)
                queue.sync(conn, product_pks=pks)
                for payload in _payloads([r.id for r in rows]):  # a storefront may LISTEN for "tags are ready"
                    conn.execute(sa.text("select pg_notify(:ch, :p)"), {"ch": TAGGED, "p": payload})
        self.stats.batches += 1
        self.stats.products += len(rows)
        self.stats.tags_written += written
        self.stats.pending_review += pending
        log.info("tagged %d products (%d outbox rows): %d tags, %d pending review", len(rows), len(taken), written,
                 pending)  # fmt: skip
        return len(taken)

    def drain(self, *, retry: bool = True) -> int:
        """Tag batches until the outbox is empty (or stop is asked); returns outbox rows taken. A batch Triton
        fails is rolled back and counted, and its rows stay in the outbox; ``retry=False`` (``--once``) then
        raises instead of trying again.

        Raises:
            ServingError: Triton failed a batch and ``retry`` is False.
        """
        total = 0
        while not self._stop.is_set():
            try:
                n = self.tag_once()
            except ServingError as exc:
                self.stats.failed_batches += 1
                log.warning("batch rolled back, its products stay in the outbox: %s", exc)
                if not retry:
                    raise
                self._stop.wait(self.retry_s)
                continue
            except sa.exc.OperationalError as exc:
                if not str(getattr(exc.orig, "sqlstate", "") or "").startswith("40"):
                    raise  # not a transaction rollback (class 40): the server is gone, run() reconnects
                # a deadlock or serialization failure with another writer of the same products: try again
                self.stats.failed_batches += 1
                log.warning("batch rolled back by Postgres (%s); trying again", type(exc.orig).__name__)
                continue
            if n == 0:
                return total
            total += n
        return total

    # ---- the loop -------------------------------------------------------------------------------------
    def _listen(self) -> psycopg.Connection:
        conn = psycopg.connect(
            listen_conninfo(self.engine),
            autocommit=True,
            connect_timeout=5,
            application_name=f"{APP_NAME}:{os.getpid()}",  # how `tagger services` sees that it listens
        )
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _connect(self) -> psycopg.Connection:
        """LISTEN, retrying with back-off (0.2 s doubling to 5 s) while Postgres is unreachable."""
        for attempt in Retrying(
            retry=retry_if_exception_type(_DB_DOWN),
            wait=wait_exponential(multiplier=0.2, max=5),
            before_sleep=lambda s: log.warning(
                "Postgres unreachable (%s); reconnecting in %.1f s", s.outcome.exception(), s.next_action.sleep
            ),
        ):
            with attempt:
                if self._stop.is_set():
                    raise KeyboardInterrupt
                return self._listen()
        raise AssertionError("unreachable")

    def run(self) -> WorkerStats:
        """Listen and tag until :meth:`stop`; survives Postgres and Triton restarts. Returns the counts."""
        log.info("tag worker: listening on %s (batches up to %d, linger %.0f ms)", CHANNEL, self.max_batch,
                 self.linger_s * 1000)  # fmt: skip
        listen = None
        try:
            while not self._stop.is_set():
                try:
                    if listen is None:
                        listen = self._connect()
                    self.drain()  # what arrived before LISTEN, or while disconnected
                    woke = list(listen.notifies(timeout=self.poll_s, stop_after=1))
                    if woke and self.linger_s:
                        list(listen.notifies(timeout=self.linger_s))  # let the burst gather
                except _DB_DOWN as exc:
                    self.stats.reconnects += 1
                    log.warning("lost Postgres (%s); reconnecting", str(exc).splitlines()[0] if str(exc) else exc)
                    if listen is not None:
                        listen.close()
                    listen = None
                    self.engine.dispose()  # pooled connections died with the server
                    self._stop.wait(self.retry_s)
        except KeyboardInterrupt:
            pass
        finally:
            if listen is not None:
                listen.close()
        log.info("tag worker stopped: %s", self.stats.to_dict())
        return self.stats

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the batch in flight, then stop (a second one is not needed: a batch is short)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())


# ---- the worker as a service of the home -----------------------------------------------------------------
def listening(settings: Settings, pid: int) -> bool:
    """Whether process ``pid``'s worker holds its LISTEN connection now (Postgres's ``pg_stat_activity``)."""
    with get_engine(settings).connect() as conn:
        return bool(
            conn.scalar(
                sa.text("select count(*) from pg_stat_activity where application_name = :a"),
                {"a": f"{APP_NAME}:{pid}"},
            )
        )


def start_detached(settings: Settings, args: list[str] | None = None, *, wait_s: float = 60) -> records.ServiceRecord:
    """Start ``tagger tag-worker ARGS`` in the background (its own session, log in ``HOME/logs/tag-worker.log``),
    record it, and wait until it listens. A worker this home already runs is returned as it is.

    Raises:
        ServiceError: it exited or did not listen within ``wait_s`` (the message carries its log's last line).
    """
    rec = records.read(settings, RECORD)
    if rec and records.alive(rec):
        return rec
    log_dir = settings.home_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    logfile = log_dir / f"{RECORD}.log"
    cmd = [sys.executable, "-m", "pipeline.cli", "tag-worker", *(args or [])]
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    where = f"LISTEN {CHANNEL} on the tag-library database"  # it binds no port; `tagger services status` shows this
    rec = records.ServiceRecord(name=RECORD, pid=proc.pid, command=cmd, host="", ports={}, log=str(logfile),
                                extra={"where": where})  # fmt: skip
    records.write(settings, rec)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            records.remove(settings, RECORD)
            tail = logfile.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ServiceError(f"the tag worker exited with status {proc.returncode}: {tail[0]} (log {logfile})")
        if listening(settings, proc.pid):
            return records.read(settings, RECORD) or rec
        time.sleep(0.2)
    records.stop(rec)
    records.remove(settings, RECORD)
    raise ServiceError(f"the tag worker did not listen within {wait_s:.0f} s; see {logfile}")


def stop_detached(settings: Settings) -> bool:
    """Stop this home's background worker (SIGTERM: it finishes its batch); True if one was running."""
    return records.stop_named(settings, RECORD)[0]

"""Durable job store: enqueue with dedupe, claim with leases, heartbeats, retries, cancellation.

SQLite (WAL, ``BEGIN IMMEDIATE`` for claims) by default; PostgreSQL (``FOR UPDATE SKIP LOCKED``)
when the URL points to one, so several bridge processes or machines share the work. A partial
unique index keeps at most one *running* job per (pipeline, resource) — single-flight across processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, func, literal_column, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bridge.jobs.models import FINAL, Job, utcnow

log = logging.getLogger(__name__)

_INSERT_COLUMNS = ("pipeline", "params", "trigger", "dedupe_key", "flight_key", "status", "attempts", "max_attempts",
                   "available_at", "cancel_requested", "project_id", "task_id", "cvat_job_id", "progress_total",
                   "progress_done", "created_at", "updated_at")
"""What ``enqueue`` sets (frame_errors, objects and notes start empty; the rest has server defaults or NULL)."""
_JSON_COLUMNS = frozenset({"params", "trigger"})


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def make_engine(url: str) -> Engine:
    """Engine with the pragmas the store relies on (WAL and a busy timeout on SQLite)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite recipe)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            if conn.info.pop("immediate", False):
                begin_immediate(conn.connection.dbapi_connection)
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # No pre-ping round trip per checkout (it doubles the cost of a webhook insert); a connection
    # that died is invalidated on its first error, and CVAT retries that delivery.
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_conn: Any, _record: Any) -> None:
            # A worker cut off the network between two statements of a transaction (a heartbeat's
            # UPDATE and its COMMIT) leaves its server session idle in that transaction, holding the
            # job's row lock until TCP notices, hours later; every claim skips the locked row, so no
            # other worker can take the job over. The server ends such a session after this long.
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET idle_in_transaction_session_timeout = {int(PG_IDLE_IN_TRANSACTION_SECONDS * 1000)}")
            dbapi_conn.commit()

    return engine


PG_IDLE_IN_TRANSACTION_SECONDS = 5.0
"""How long PostgreSQL keeps a session that waits, inside a transaction, on a client that stopped
answering. The bridge's transactions run their statements back to back (milliseconds), and the
default lease (60 s) is far longer, so a cut-off worker's locks are gone before its lease runs out."""


SQLITE_BUSY_SECONDS = 30.0


def begin_immediate(dbapi_conn: Any, wait: float = SQLITE_BUSY_SECONDS) -> None:
    """``BEGIN IMMEDIATE`` (take SQLite's write lock), waiting up to ``wait`` s for another process to
    release it by trying again every 0.1-2 ms. SQLite's own busy handler sleeps 1, 2, 5 … 100 ms between
    tries: a process waiting on several others that write back to back (the HTTP processes and the
    workers of ``bridge serve``) could miss every free moment for seconds. Threads of one process queue
    on the store's lock before they get here."""
    dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + wait
        pause = 0.0001
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
                        or time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
            time.sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            pause = min(pause * 2, 0.002)
    finally:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")


@dataclass(frozen=True)
class EnqueueResult:
    job_id: int
    created: bool
    status: str


@dataclass
class JobFilter:
    status: str | None = None
    pipeline: str | None = None
    task_id: int | None = None
    cvat_job_id: int | None = None
    project_id: int | None = None


class JobStore:
    """All SQL lives here; callers get ``Job`` rows detached from their session."""

    def __init__(self, url: str, *, migrate: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; its busy handler waits by sleeping, so threads of this
        # process queue on a lock instead (instant hand-over). Other processes still use busy_timeout.
        self._write_lock: threading.Lock | contextlib.nullcontext = (
            threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        )
        if migrate:
            self.migrate()
        # The webhook path's statements as driver SQL, built once: SQLAlchemy's per-statement work (compiling
        # or caching, bind processing, result objects) cost more than SQLite's own insert.
        mark = "?" if self.dialect == "sqlite" else "%s"
        marks = [f"{mark}::json" if c in _JSON_COLUMNS and self.dialect == "postgresql" else mark
                 for c in _INSERT_COLUMNS]
        self._insert_sql = (f"INSERT INTO bridge_jobs ({', '.join(_INSERT_COLUMNS)}, frame_errors, objects, notes) "
                            f"VALUES ({', '.join(marks)}, '{{}}', '[]', '{{}}') "
                            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, status")
        self._existing_sql = f"SELECT id, status FROM bridge_jobs WHERE dedupe_key = {mark}"

    # --- schema ---------------------------------------------------------------------------------
    def migrate(self) -> None:
        from bridge.jobs.migrate import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """A write transaction. On SQLite it takes the write lock up front (BEGIN IMMEDIATE): a
        deferred read-then-write transaction in WAL mode fails with SQLITE_BUSY instead of waiting."""
        with self._write_lock, self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.info["immediate"] = True
            with conn.begin(), Session(bind=conn, expire_on_commit=False) as s:
                yield s
                s.flush()  # the connection-level transaction commits on leaving conn.begin()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # --- intake ---------------------------------------------------------------------------------
    def _row(self, pipeline: str, params: dict[str, Any], trigger: dict[str, Any], dedupe_key: str,
             flight_key: str, max_attempts: int) -> tuple[Any, ...]:
        """The insert's parameters, in ``_INSERT_COLUMNS`` order, as the column types store them."""
        now: Any = utcnow()
        if self.dialect == "sqlite":  # what SQLAlchemy's DateTime writes on SQLite (UTC, compared as text)
            now = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        return (pipeline, json.dumps(params), json.dumps(trigger), dedupe_key, flight_key, "queued", 0, max_attempts,
                now, False, trigger.get("project_id"), trigger.get("task_id"), trigger.get("job_id"), 0, 0, now, now)

    def _insert(self, cursor: Any, values: tuple[Any, ...]) -> EnqueueResult:
        """One insert on a DBAPI cursor; its errors as SQLAlchemy's (``DataError`` → 422 upstream)."""
        try:
            cursor.execute(self._insert_sql, values)
            row = cursor.fetchone()
            if row is None:
                cursor.execute(self._existing_sql, (values[3],))
                existing = cursor.fetchone()
                return EnqueueResult(existing[0], False, existing[1])
            return EnqueueResult(row[0], True, row[1])
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(self._insert_sql, values, exc, self.engine.dialect.loaded_dbapi.Error,
                                      dialect=self.engine.dialect) from exc

    @contextmanager
    def _cursor_tx(self) -> Iterator[Any]:
        """``_tx`` yielding a DBAPI cursor (no ORM session, no per-statement SQLAlchemy work): the webhook
        path's transaction; SQLAlchemy still begins, commits or rolls back and pools the connection."""
        with self._write_lock, self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.info["immediate"] = True
            with conn.begin():
                cursor = conn.connection.cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()

    def enqueue(
        self,
        *,
        pipeline: str,
        params: dict[str, Any],
        trigger: dict[str, Any],
        dedupe_key: str,
        flight_key: str,
        max_attempts: int,
    ) -> EnqueueResult:
        """Insert a queued job unless one with the same dedupe key exists; committed on return."""
        values = self._row(pipeline, params, trigger, dedupe_key, flight_key, max_attempts)
        with self._cursor_tx() as cursor:
            return self._insert(cursor, values)

    def enqueue_many(self, requests: Sequence[Mapping[str, Any]]) -> list[EnqueueResult | Exception]:
        """``enqueue`` for each of ``requests`` (its keyword arguments) in one transaction: one commit for
        all (group commit); every result is committed on return. When the transaction fails, each request
        is tried alone, so a value the store refuses fails only its own request (its exception is returned
        in its place)."""
        if not requests:
            return []
        rows = [self._row(**r) for r in requests]
        try:
            with self._cursor_tx() as cursor:
                return [self._insert(cursor, values) for values in rows]
        except Exception as exc:  # noqa: BLE001 - each request gets its own outcome below
            if len(rows) == 1:
                return [exc]
        out: list[EnqueueResult | Exception] = []
        for values in rows:
            try:
                with self._cursor_tx() as cursor:
                    out.append(self._insert(cursor, values))
            except Exception as exc:  # noqa: BLE001 - returned in its place, raised by the caller
                out.append(exc)
        return out

    # --- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        with self._sessions() as s:
            return s.get(Job, job_id)

    def list(self, flt: JobFilter, *, limit: int = 50, offset: int = 0,
             before_id: int | None = None, now: datetime | None = None) -> tuple[list[Job], int]:
        """Jobs matching ``flt``, newest first, and how many match. ``before_id`` (keyset pagination: the
        last id of the previous page) starts the page below that id, an index walk whatever the page's
        depth; ``offset`` skips rows after that (reading every skipped row). ``now`` is the clock the
        ``waiting`` filter compares with (the caller's, so what it shows agrees with what was selected)."""
        conds = []
        if flt.status == "waiting":  # queued again after a transient error, until its next attempt
            conds += [Job.status == "queued", Job.available_at > (now or utcnow())]
        elif flt.status:
            conds.append(Job.status == flt.status)
        if flt.pipeline:
            conds.append(Job.pipeline == flt.pipeline)
        if flt.task_id is not None:
            conds.append(Job.task_id == flt.task_id)
        if flt.cvat_job_id is not None:
            conds.append(Job.cvat_job_id == flt.cvat_job_id)
        if flt.project_id is not None:
            conds.append(Job.project_id == flt.project_id)
        where = and_(*conds) if conds else text("1=1")
        page = and_(where, Job.id < before_id) if before_id is not None else where
        with self._sessions() as s:
            total = s.execute(select(func.count()).select_from(Job).where(where)).scalar_one()
            rows = s.execute(
                select(Job).where(page).order_by(Job.id.desc()).limit(limit).offset(offset)
            ).scalars().all()
            return list(rows), int(total)

    def counts_by_status(self) -> dict[str, int]:
        with self._sessions() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        return {status: int(n) for status, n in rows}

    def previous_objects(self, pipeline: str, flight_key: str, *, before_id: int) -> list[dict[str, Any]]:
        """Objects recorded by earlier jobs of the same pipeline on the same resource (for idempotent re-runs)."""
        with self._sessions() as s:
            rows = s.execute(
                select(Job.objects, Job.params).where(
                    Job.pipeline == pipeline, Job.flight_key == flight_key, Job.id < before_id
                ).order_by(Job.id)
            ).all()
        out: list[dict[str, Any]] = []
        for objects, params in rows:
            for obj in objects or []:
                out.append({**obj, "params": params})
        return out

    # --- claiming -------------------------------------------------------------------------------
    def _candidate(self, s: Session, now: datetime) -> Job | None:
        """The next runnable job: an orphan (running, lease expired: its worker died) first, else the
        oldest due queued job whose resource has no live run. Each query reads the few running rows by
        status and walks the queued ones in claim order on an index (``ix_bridge_jobs_queued_due``; SQLite
        may take ``ix_bridge_jobs_claim``), stopping at the first runnable row: the cost does not grow with
        the backlog (an ``OR`` over both statuses made the planners sort every candidate). Statuses are SQL
        literals so that a planner can use the partial index (a bound parameter cannot prove
        ``status = 'queued'``)."""
        running, queued = literal_column("'running'"), literal_column("'queued'")
        orphan = (select(Job).where(Job.status == running, Job.lease_until < now)
                  .order_by(Job.lease_until, Job.id).limit(1))
        live = select(Job.flight_key).where(Job.status == running, Job.lease_until >= now)
        due = (select(Job).where(Job.status == queued, Job.available_at <= now, Job.flight_key.not_in(live))
               .order_by(Job.available_at, Job.id).limit(1))
        for q in (orphan, due):
            if self.dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            job = s.execute(q).scalars().first()
            if job is not None:
                return job
        return None

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the next runnable job: running with an expired lease (its worker died), else the oldest
        queued and due one whose resource is not running.

        Every claim increments ``lease_token`` (the fencing token): a worker holds the lease only while
        the row still carries the token it claimed with. A job whose workers died ``max_attempts`` times
        without progress fails instead of being claimed again (a job that kills its worker must not
        loop forever).
        """
        now = utcnow()
        for _ in range(5):  # a lost single-flight race just means: try the next candidate
            try:
                with self._tx() as s:
                    job = self._candidate(s, now)
                    if job is None:
                        return None
                    orphan = job.status == "running"
                    job.lease_token = (job.lease_token or 0) + 1  # fences off the previous holder
                    mark = (job.progress_done or 0) + len(job.objects or [])
                    if orphan:
                        # A worker that died (or froze) counts against max_attempts only when its attempt
                        # got nowhere: a job that kills its worker loops no more than that, while one whose
                        # workers are killed from outside (deploys, OOM of a neighbour) keeps resuming.
                        stuck = mark <= (job.claim_mark or 0)
                        log.warning("job %s: lease of worker %s expired; reclaiming (%s)", job.id, job.worker_id,
                                    "no progress" if stuck else "it had made progress")
                        job.failures = (job.failures or 0) + int(stuck)
                    job.claim_mark = mark
                    if job.cancel_requested:
                        self._finish(job, "cancelled", error="cancelled before it ran")
                        continue
                    if orphan and job.failures >= job.max_attempts:
                        self._finish(job, "failed", error=f"gave up: its worker died or froze past its lease "
                                                          f"{job.failures} times without progress "
                                                          "(BRIDGE_MAX_ATTEMPTS)")
                        continue
                    job.attempts += 1
                    job.status = "running"
                    job.worker_id = worker_id
                    job.lease_until = now + timedelta(seconds=lease_seconds)
                    job.started_at = job.started_at or now
                    job.updated_at = now
                    s.flush()
                    return job
            except IntegrityError:
                log.debug("single-flight race on claim; retrying")
            except OperationalError as exc:  # SQLite busy beyond the timeout: try again later
                log.warning("claim failed: %s", exc)
                return None
        return None

    @staticmethod
    def _finish(job: Job, status: str, *, error: str | None = None, summary: str | None = None) -> None:
        now = utcnow()
        job.status = status
        job.error = error
        if summary is not None:
            job.summary = summary
        job.finished_at = now
        job.updated_at = now
        job.lease_until = None
        started = _aware(job.started_at)
        job.duration_s = (now - started).total_seconds() if started else None

    @staticmethod
    def _holder(worker_id: str, token: int | None) -> Any:
        """SQL condition: the row is running under this worker's lease (and fencing token, when given)."""
        cond = and_(Job.worker_id == worker_id, Job.status == "running")
        return cond if token is None else and_(cond, Job.lease_token == token)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float, *,
                  token: int | None = None) -> tuple[bool, bool]:
        """Extend the lease. Returns (still ours, cancel requested)."""
        now = utcnow()
        with self._tx() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, self._holder(worker_id, token))
                .values(lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
            )
            owned = res.rowcount == 1
            cancel = bool(s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar())
        return owned, cancel

    def lease_left(self, job_id: int, worker_id: str, token: int | None) -> float | None:
        """Seconds left on this worker's lease (negative once expired), None when it is no longer ours.

        The fence checked before every CVAT write: a worker that froze past its lease (and may have
        been replaced) must not write."""
        with self._sessions() as s:
            row = s.execute(
                select(Job.lease_until).where(Job.id == job_id, self._holder(worker_id, token))
            ).first()
        if row is None or row[0] is None:
            return None
        return (_aware(row[0]) - utcnow()).total_seconds()  # type: ignore[operator]

    def save_progress(self, job_id: int, worker_id: str, *, total: int, done: int,
                      frame_errors: dict[int, str], objects: list[dict[str, Any]],
                      notes: dict[str, Any], token: int | None = None) -> bool:
        with self._tx() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, self._holder(worker_id, token))
                .values(progress_total=total, progress_done=done,
                        frame_errors={str(k): v for k, v in frame_errors.items()},
                        objects=objects, notes=notes, updated_at=utcnow())
            )
            return res.rowcount == 1

    def _owned(self, s: Session, job_id: int, worker_id: str, token: int | None = None) -> Job | None:
        job = s.get(Job, job_id)
        if job is None or job.worker_id != worker_id or job.status != "running":
            return None
        if token is not None and job.lease_token != token:
            return None
        return job

    def succeed(self, job_id: int, worker_id: str, summary: str, *, token: int | None = None) -> bool:
        with self._tx() as s:
            job = self._owned(s, job_id, worker_id, token)
            if job is None:
                return False
            self._finish(job, "succeeded", summary=summary)
            return True

    def fail(self, job_id: int, worker_id: str, error: str, *, status: str = "failed",
             token: int | None = None) -> bool:
        with self._tx() as s:
            job = self._owned(s, job_id, worker_id, token)
            if job is None:
                return False
            self._finish(job, status, error=error)
            return True

    def requeue(self, job_id: int, worker_id: str, error: str, *, base: float, cap: float,
                transient: bool = True, window: float = 4 * 86400.0, token: int | None = None) -> float | None:
        """Back to the queue after a growing, jittered delay; returns it, or None when the job failed for good.

        ``transient`` (CVAT or Nuclio unreachable, busy, timing out): retried for ``window`` seconds from
        the first such error — as long as CVAT itself retries webhooks — since CVAT never redelivers an
        event that was acknowledged. Otherwise (an unexpected error): at most ``max_attempts`` failures.
        """
        with self._tx() as s:
            job = self._owned(s, job_id, worker_id, token)
            if job is None:
                return None
            now = utcnow()
            if transient:
                if job.retry_until is None:
                    job.retry_until = now + timedelta(seconds=window)
                elif now >= _aware(job.retry_until):  # type: ignore[operator]
                    self._finish(job, "failed", error=f"{error} (still failing after retrying for "
                                                      f"{_duration(window)}; BRIDGE_RETRY_WINDOW_SECONDS)")
                    return None
            else:
                job.failures = (job.failures or 0) + 1
                if job.failures >= job.max_attempts:
                    self._finish(job, "failed", error=f"{error} (gave up after {job.failures} failed attempts)")
                    return None
            # "equal jitter": at least half the exponential step, so the next attempt time means something
            step = min(cap, base * (2 ** max(0, job.attempts - 1)))
            delay = step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter
            if transient and job.retry_until is not None:
                delay = min(delay, max(0.0, (_aware(job.retry_until) - now).total_seconds()))  # type: ignore[operator]
            job.status = "queued"
            job.error = error
            job.worker_id = None
            job.lease_until = None
            job.available_at = now + timedelta(seconds=delay)
            job.updated_at = now
            return delay

    # --- operator actions -----------------------------------------------------------------------
    def request_cancel(self, job_id: int) -> Job | None:
        """Queued → cancelled now; running → flagged (the worker stops at its next check)."""
        with self._tx() as s:
            job = s.get(Job, job_id)
            if job is None:
                return None
            if job.status == "queued":
                self._finish(job, "cancelled", error="cancelled by request")
            elif job.status == "running":
                job.cancel_requested = True
                job.updated_at = utcnow()
            return job

    def retry(self, job_id: int) -> Job | None:
        """A finished job (failed/cancelled/succeeded) runs again with a fresh attempt budget."""
        with self._tx() as s:
            job = s.get(Job, job_id)
            if job is None:
                return None
            if job.status not in FINAL:
                return job
            now = utcnow()
            job.status = "queued"
            job.attempts = 0
            job.failures = 0
            job.retry_until = None
            job.cancel_requested = False
            job.available_at = now
            job.finished_at = None
            job.error = None
            job.summary = None
            # A retry the user asks for runs again: checkpoints and progress go, the objects stay (the
            # run replaces the shapes it wrote before and reuses or completes the task it created).
            job.notes = {}
            job.frame_errors = {}
            job.progress_done = 0
            job.progress_total = 0
            job.updated_at = now
            return job

"""Durable job store: enqueue with dedupe, claim with leases, heartbeats, retries, cancellation.

SQLite (WAL, ``BEGIN IMMEDIATE`` for claims) by default; PostgreSQL (``FOR UPDATE SKIP LOCKED``)
when the URL points to one, so several bridge processes or machines share the work. A partial
unique index keeps at most one *running* job per (pipeline, resource) — single-flight across processes.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from bridge.jobs.models import FINAL, Job, utcnow

log = logging.getLogger(__name__)


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
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("immediate", False) else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    # No pre-ping round trip per checkout (it doubles the cost of a webhook insert); a connection
    # that died is invalidated on its first error, and CVAT retries that delivery.
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800)


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
        # The webhook path's one statement, built once (Core on the table: compiled and cached once,
        # without the ORM bulk-insert machinery, which cost more than the database round trips).
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        table = Job.__table__
        self._insert_new = (
            dialect_insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(table.c.id, table.c.status)
        )

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
        values = {
            "pipeline": pipeline,
            "params": params,
            "trigger": trigger,
            "dedupe_key": dedupe_key,
            "flight_key": flight_key,
            "status": "queued",
            "attempts": 0,
            "max_attempts": max_attempts,
            "available_at": utcnow(),
            "cancel_requested": False,
            "project_id": trigger.get("project_id"),
            "task_id": trigger.get("task_id"),
            "cvat_job_id": trigger.get("job_id"),
            "progress_total": 0,
            "progress_done": 0,
            "frame_errors": {},
            "objects": [],
            "notes": {},
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        with self._tx() as s:
            row = s.connection().execute(self._insert_new, values).first()
            if row is not None:
                return EnqueueResult(row[0], True, row[1])
            existing = s.execute(select(Job.id, Job.status).where(Job.dedupe_key == dedupe_key)).one()
            return EnqueueResult(existing[0], False, existing[1])

    # --- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> Job | None:
        with self._sessions() as s:
            return s.get(Job, job_id)

    def list(self, flt: JobFilter, *, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        conds = []
        if flt.status == "waiting":  # queued again after a transient error, until its next attempt
            conds += [Job.status == "queued", Job.available_at > utcnow()]
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
        with self._sessions() as s:
            total = s.execute(select(func.count()).select_from(Job).where(where)).scalar_one()
            rows = s.execute(
                select(Job).where(where).order_by(Job.id.desc()).limit(limit).offset(offset)
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
    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Take the oldest runnable job: queued and due, or running with an expired lease (its worker died).

        Every claim increments ``lease_token`` (the fencing token): a worker holds the lease only while
        the row still carries the token it claimed with. A job whose workers died ``max_attempts`` times
        without progress fails instead of being claimed again (a job that kills its worker must not
        loop forever).
        """
        now = utcnow()
        for _ in range(5):  # a lost single-flight race just means: try the next candidate
            try:
                with self._tx() as s:
                    running = select(Job.flight_key).where(
                        Job.status == "running", Job.lease_until >= now
                    )
                    q = (
                        select(Job)
                        .where(
                            or_(
                                and_(Job.status == "queued", Job.available_at <= now),
                                and_(Job.status == "running", Job.lease_until < now),
                            ),
                            or_(Job.status == "running", Job.flight_key.not_in(running)),
                        )
                        .order_by(Job.available_at, Job.id)
                        .limit(1)
                    )
                    if self.dialect == "postgresql":
                        q = q.with_for_update(skip_locked=True)
                    job = s.execute(q).scalars().first()
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

"""The job table: one row per triggered pipeline run (SQLAlchemy 2, SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(StrEnum):
    """A job's status (the one list of them; values are what the table and the API hold)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(JobStatus)
FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "bridge_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    flight_key: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """+1 on every claim, never reset: the fencing token of the current lease."""
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Attempts that ended in an unexpected error or with a dead worker (bounded by ``max_attempts``)."""
    retry_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Transient errors (outages) are retried until then; set by the first one of a run."""
    claim_mark: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """``progress_done + len(objects)`` when the current attempt was claimed."""
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    cvat_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    frame_errors: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    objects: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    notes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        # Single-flight: at most one running job per (pipeline, CVAT resource), across processes.
        Index(
            "ux_bridge_jobs_running_flight",
            "flight_key",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_bridge_jobs_claim", "status", "available_at"),
        # Migration 0003: the claim walks the queued jobs in claim order; GET /jobs?status= pages by id.
        Index(
            "ix_bridge_jobs_queued_due",
            "available_at",
            "id",
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_bridge_jobs_status_id", "status", "id"),
    )

"""The composition root: ``build(settings)`` wires the job store, the metrics, the pipeline registry
and the clients once; ``bridge serve`` (through the app factory), ``bridge worker`` and the tests all
start from it. Each room gets only its part of the settings (``Settings.cvat``, ``.nuclio``,
``.store``, ``.pipelines``).

The worker (``bridge.jobs``) calls ``Runtime.run_job``; the same call runs a job inline in tests.
Clients are created lazily (the bridge starts without CVAT or Nuclio reachable) and shared by
all worker threads (the CVAT client keeps one SDK client per thread).
"""

from __future__ import annotations

import gc
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.config import Settings
from bridge.errors import BridgeError, Cancelled, PermanentError
from bridge.events import Envelope, Trigger
from bridge.jobs.models import Job, JobStatus
from bridge.jobs.store import JobStore
from bridge.jobs.worker import Worker, WorkerPool
from bridge.metrics import BridgeMetrics
from bridge.pipelines.base import Progress, StepContext
from bridge.pipelines.fencing import FencedCvat
from bridge.pipelines.registry import Registry, flight_key

if TYPE_CHECKING:
    from bridge.cvat.client import CvatClient
    from bridge.cvat.warm import ChunkWarmer
    from bridge.nuclio.client import NuclioClient

log = logging.getLogger(__name__)
_WORK_DIR = re.compile(r"^job(\d+)-")
WARM_SETTLE = 0.3
"""Seconds a warm hint waits, to see whether an idle worker claims its job at once (then it is dropped)."""


class Runtime:
    """Runs stored jobs through their pipelines with shared, lazily built clients."""

    def __init__(self, settings: Settings, store: JobStore | None = None, *,
                 cvat: CvatClient | None = None, nuclio: NuclioClient | None = None,
                 metrics: BridgeMetrics | None = None, registry: Registry | None = None):
        self.settings = settings
        self.pipeline_settings = settings.pipelines
        self.store = store
        self.metrics = metrics
        self.registry = registry or Registry(settings.extra_pipelines)
        self._cvat = cvat
        self._nuclio = nuclio
        self._lock = threading.Lock()
        self._reported: set[tuple[int, int]] = set()
        self._warmer: ChunkWarmer | None = None

    @property
    def cvat(self) -> CvatClient:
        with self._lock:
            if self._cvat is None:
                from bridge.cvat.client import CvatClient

                self._cvat = CvatClient.from_settings(self.settings.cvat)
            return self._cvat

    @property
    def nuclio(self) -> NuclioClient:
        with self._lock:
            if self._nuclio is None:
                from bridge.nuclio.client import NuclioClient

                self._nuclio = NuclioClient.from_settings(self.settings.nuclio)
            return self._nuclio

    def prepare(self, names: tuple[str, ...] = ("nuclio", "cvat")) -> None:
        """Build the clients now (imports, TLS context: ~0.2-0.6 s of CPU on a small machine) instead of in
        the first job or webhook; they still connect lazily. A missing setting is left for its user."""
        for name in names:
            try:
                getattr(self, name)
            except BridgeError as exc:
                log.debug("runtime: %s client not built ahead: %s", name, exc)
        freeze_start_up()

    @property
    def warmer(self) -> ChunkWarmer | None:
        """Has CVAT build queued jobs' first chunks (``BRIDGE_WARM_CHUNKS`` threads); None when off or
        when no CVAT credentials are configured."""
        cfg = self.settings.cvat
        if self.settings.warm_chunks < 1 or not (cfg.access_token or (cfg.username and cfg.password)):
            return None
        with self._lock:
            if self._warmer is None:
                from bridge.cvat.warm import ChunkWarmer

                self._warmer = ChunkWarmer(lambda task, chunk: self.cvat.warm_chunk(task, chunk),
                                           threads=self.settings.warm_chunks, settle=WARM_SETTLE)
            return self._warmer

    def warm(self, pipeline: str, env: Envelope, job_id: int | None = None) -> bool:
        """A webhook just queued job ``job_id`` of ``pipeline``: have CVAT build the chunk it will read first
        (in the background, ``WARM_SETTLE`` s later unless a worker has claimed the job by then; never
        waits, never fails the caller). True when a read was queued."""
        try:
            warmer = self.warmer
            hint = self.registry.spec(pipeline).first_chunk(env) if warmer is not None else None
            store = self.store
            queued = (lambda: self._still_queued(store, job_id)) if store is not None and job_id else None
            return hint is not None and warmer is not None and warmer.offer(*hint, still_needed=queued)
        except Exception:  # noqa: BLE001 - a hint must never fail the acknowledgement it follows
            log.warning("could not queue the first chunk of a %s job for warming", pipeline, exc_info=True)
            return False

    @staticmethod
    def _still_queued(store: JobStore, job_id: int) -> bool:
        job = store.get(job_id)
        return job is not None and job.status == JobStatus.QUEUED

    def close(self) -> None:
        if self._warmer is not None:
            self._warmer.close()
        for client in (self._cvat, self._nuclio):
            if client is not None:
                client.close()

    # --- running --------------------------------------------------------------------------------
    def context_for(self, job: Job, progress: Progress, cancel: threading.Event,
                    deadline: float | None = None) -> StepContext:
        """The step context of one attempt: the CVAT client fenced by the job's lease, the Nuclio client
        bounded by the attempt's ``deadline`` (``time.monotonic()``; AUTO_ANN_TIMEOUT from the start) and
        queued for function slots by the job's age (its id: the oldest job is served first)."""
        trigger = Trigger.from_dict(job.trigger)
        previous: dict[str, Any] = {"objects": list(job.objects or []), "notes": dict(job.notes or {})}
        if self.store is not None:
            previous["earlier_runs"] = self.store.previous_objects(
                job.pipeline, flight_key(job.pipeline, trigger.resource, trigger.resource_id), before_id=job.id
            )
        return StepContext(
            trigger=trigger,
            params=self.registry.parse_params(job.pipeline, job.params),
            settings=self.pipeline_settings,
            cvat=FencedCvat(lambda: self.cvat, progress.fence),  # type: ignore[arg-type]
            nuclio=self.nuclio.with_deadline(deadline, priority=job.id),
            progress=progress,
            job_id=job.id,
            cancel_event=cancel,
            log=logging.LoggerAdapter(logging.getLogger(f"bridge.pipelines.{job.pipeline}"), {"job_id": job.id}),
            previous=previous,
        )

    def sweep_work_dirs(self, job: Job | None = None) -> list[str]:
        """Remove work dirs that no running attempt uses: those of earlier attempts of ``job`` and of
        jobs that are not running any more (a crashed attempt leaves its dir behind). Returns their names."""
        root = self.settings.resolved_cache_dir / "work"
        if not root.is_dir():
            return []
        removed = []
        for path in root.iterdir():
            match = _WORK_DIR.match(path.name)
            if match is None:
                continue
            owner = int(match.group(1))
            if job is not None and owner == job.id:
                stale = True
            else:
                other = self.store.get(owner) if self.store is not None else None
                stale = other is None or other.status != "running"
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        if removed:
            log.info("removed %d stale work dirs: %s", len(removed), ", ".join(sorted(removed)[:10]))
        return removed

    def run_job(self, job: Job, progress: Progress, cancel: threading.Event) -> str:
        """``JobRunner`` for the worker: one attempt of one job, bounded by AUTO_ANN_TIMEOUT."""
        self.sweep_work_dirs(job)
        pipeline = self.registry.spec(job.pipeline)
        ctx = self.context_for(job, progress, cancel, deadline=time.monotonic() + self.settings.auto_ann_timeout)
        timed_out = threading.Event()

        def _expire() -> None:
            timed_out.set()
            cancel.set()

        timer = threading.Timer(self.settings.auto_ann_timeout, _expire)
        timer.daemon = True
        timer.start()
        try:
            result = pipeline.run(ctx)
        except Cancelled as exc:
            if timed_out.is_set():
                raise PermanentError(
                    f"timed out after AUTO_ANN_TIMEOUT={self.settings.auto_ann_timeout:g} s"
                ) from exc
            raise
        finally:
            timer.cancel()
        if result.frames_failed:
            errors = getattr(progress, "errors", {})
            self.report(ctx.trigger, f"cvat-bridge {job.pipeline} (job #{job.id}): "
                        f"{result.frames_failed} of {result.frames_total} frames failed: "
                        + _frame_list(errors), frame=min(errors) if errors else None)
        return result.summary

    # --- reporting ------------------------------------------------------------------------------
    def before_fail(self, job: Job, error: str) -> None:
        """A permanent failure is reported in CVAT before the job is marked failed (``Worker.before_fail``)."""
        self._reported.add((job.id, job.lease_token))
        if self.settings.report_issues:
            self.report(Trigger.from_dict(job.trigger), f"cvat-bridge {job.pipeline} (job #{job.id}) failed: {error}")

    def on_finish(self, job: Job, outcome: str, seconds: float, error: str | None) -> None:
        if self.metrics is not None:
            self.metrics.jobs_finished.labels(job.pipeline, outcome).inc()
            self.metrics.job_seconds.labels(job.pipeline, outcome).observe(seconds)
        reported = (job.id, job.lease_token) in self._reported
        self._reported.discard((job.id, job.lease_token))
        if outcome == "failed" and error and not reported and self.settings.report_issues:
            self.report(Trigger.from_dict(job.trigger), f"cvat-bridge {job.pipeline} (job #{job.id}) failed: {error}")

    def report(self, trigger: Trigger, message: str, frame: int | None = None) -> None:
        """Create a CVAT issue where annotators will see it (the triggering job, else the task's first job)."""
        if not self.settings.report_issues:
            return
        try:
            job_id = trigger.job_id
            if job_id is None and trigger.task_id is not None:
                task = self.cvat.get_task(trigger.task_id)
                job_id = task.job_ids[0] if task.job_ids else None
            if job_id is None:
                return
            if frame is None:
                frame = self.cvat.get_job(job_id).start_frame
            self.cvat.create_issue(job_id, frame, message[:4000])
        except BridgeError as exc:
            log.warning("could not create a CVAT issue (%s): %s", exc, message)


def freeze_start_up() -> None:
    """What start-up loaded (modules, the app, cvat-sdk's generated models: ~10^5 objects) stays for the
    process's life: collect what is already garbage, then move the rest out of the cyclic collector's
    way, so that its full passes (40-120 ms over those objects) do not stall requests."""
    gc.collect()
    gc.freeze()


def _frame_list(errors: dict[int, str], limit: int = 20) -> str:
    items = [f"frame {f}: {reason}" for f, reason in sorted(errors.items())[:limit]]
    more = len(errors) - limit
    return "; ".join(items) + (f"; … and {more} more" if more > 0 else "")


@dataclass
class Bridge:
    """What ``build`` wires: one of each, shared by the HTTP layer and the workers of a process."""

    settings: Settings
    store: JobStore
    metrics: BridgeMetrics
    registry: Registry
    runtime: Runtime

    def worker(self, index: int = 0) -> Worker:
        cfg = self.settings.store
        return Worker(self.store, self.runtime.run_job, lease_seconds=cfg.lease_seconds,
                      poll_seconds=cfg.poll_seconds, retry_base=cfg.retry_base_seconds,
                      retry_cap=cfg.retry_max_seconds, retry_window=cfg.retry_window_seconds,
                      on_finish=self.runtime.on_finish, before_fail=self.runtime.before_fail)

    def worker_pool(self, count: int) -> WorkerPool:
        """``count`` workers; their clients are built in the background meanwhile (``Runtime.prepare``)."""
        if count:
            threading.Thread(target=self.runtime.prepare, name="runtime-prepare", daemon=True).start()
        return WorkerPool(self.worker, count)

    def close(self) -> None:
        self.runtime.close()


def build(settings: Settings, *, store: JobStore | None = None, runtime: Runtime | None = None) -> Bridge:
    """The composition root. ``store``/``runtime`` replace the ones it would build (tests)."""
    store = store or JobStore(settings.store.database_url)
    metrics = runtime.metrics if runtime is not None and runtime.metrics is not None \
        else BridgeMetrics(store.counts_by_status)
    runtime = runtime or Runtime(settings, store, metrics=metrics)
    runtime.store = runtime.store or store
    runtime.metrics = runtime.metrics or metrics
    return Bridge(settings=settings, store=store, metrics=metrics, registry=runtime.registry, runtime=runtime)


"""Steps shared by the pipelines: stream frames through a bounded pool, write shapes in batches,
clean up what earlier runs wrote, report unmatched labels."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from bridge.cvat.types import Shape, Tag
from bridge.errors import BridgeError, CvatUnavailable, FunctionUnavailable, PermanentError
from bridge.pipelines.base import StepContext
from bridge.pipelines.reconcile import PENDING_KEY, Intent, missing, written_ids

R = TypeVar("R")


def map_frames(
    ctx: StepContext,
    frames: Iterable[tuple[int, bytes]],
    work: Callable[[int, bytes], R],
    *,
    concurrency: int,
) -> Iterator[tuple[int, R | BaseException]]:
    """Run ``work(frame, data)`` over a stream of frames with ``concurrency`` calls in flight.

    Frames are pulled lazily (the CVAT client downloads one chunk at a time), at most
    ``2 × concurrency`` frames are held in memory, and results are yielded as they complete.
    A failing frame yields its exception instead of stopping the others.
    """
    limit = max(1, concurrency) * 2
    pending: dict[Future, int] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="frames")
    try:
        for frame, data in frames:
            ctx.check_cancelled()
            while len(pending) >= limit:
                yield from _drain(pending, block=True)
            pending[pool.submit(work, frame, data)] = frame
            yield from _drain(pending, block=False)
        while pending:
            ctx.check_cancelled()
            yield from _drain(pending, block=True)
    finally:
        # Never wait here for calls in flight: a cancelled or timed-out job stops now; a call still
        # running ends by its own deadline, and nothing it returns is written.
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def _drain(pending: dict[Future, int], *, block: bool) -> Iterator[tuple[int, Any]]:
    if block:
        done, _ = wait(list(pending), timeout=1.0, return_when=FIRST_COMPLETED)
    else:
        done = {f for f in pending if f.done()}
    for fut in done:
        frame = pending.pop(fut)
        exc = fut.exception()
        yield frame, (exc if exc is not None else fut.result())


class ShapeWriter:
    """Buffers shapes and writes them in batches (CVAT charges ~80 ms per write call) from one
    background thread, so writing overlaps the model calls instead of stalling the frame stream.

    A batch goes out when ``batch_size`` objects are buffered, or ``early`` when no write is in
    flight (so the last write after the final frame stays small). Writes keep their order. Every
    written id is recorded on the job (``progress.created("shape", id)``) right after the write
    returns, and the frames whose shapes are all written are checkpointed in the job notes
    (``done_key``), so a retried attempt resumes instead of writing twice. ``flush()`` writes the
    rest, waits, and raises the first write error.

    Lost answers: each batch is recorded as an intent (``bridge.pipelines.reconcile``) before it is
    sent. When CVAT's answer is lost (timeout, 5xx from a proxy, reset), what CVAT holds on those frames
    is read back and only the objects it lacks are written. When the process died instead, the next
    attempt's writer finds the intent and records the objects CVAT did create as this job's (the
    pipeline then replaces them with the frames it redoes): never a duplicate, never a gap.
    """

    reconcile_tries: int = 4
    reconcile_wait: float = 1.0

    def __init__(self, ctx: StepContext, job_id: int, *, batch_size: int, done_key: str = "frames_done",
                 early: int = 250):
        self.ctx = ctx
        self.job_id = job_id
        self.batch_size = batch_size
        self.early = max(1, min(early, batch_size))
        self.done_key = done_key
        self.frames_done: set[int] = set(ctx.previous.get("notes", {}).get(done_key, []))
        self._shapes: list[Shape] = []
        self._tags: list[Tag] = []
        self._frames: set[int] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []
        self.written = 0
        self.ids: list[int] = []
        self.recover_lost_write()

    def _known_ids(self) -> set[int]:
        objects = [*self.ctx.previous.get("objects", []), *getattr(self.ctx.progress, "objects", [])]
        return {int(o["id"]) for o in objects if o.get("kind") == "shape"} | set(self.ids)

    def recover_lost_write(self) -> list[int]:
        """An earlier attempt died with a write in flight: record what CVAT created from it as this
        job's objects (so the resumed pipeline treats them like the rest of that attempt's output)."""
        intent = Intent.from_note(self.ctx.previous.get("notes", {}).get(PENDING_KEY))
        if intent is None:
            return []
        found = written_ids(self.ctx.cvat.get_annotations(job_id=self.job_id), intent, self._known_ids())
        for object_id in found:
            self.ctx.progress.created("shape", object_id)
        self.ctx.previous.setdefault("objects", []).extend({"kind": "shape", "id": i} for i in found)
        self.ctx.progress.note(PENDING_KEY, None)
        self.ctx.previous.get("notes", {}).pop(PENDING_KEY, None)  # recovered once per attempt
        if found:
            self.ctx.log.info("job %s: an earlier attempt's last write reached CVAT (%d objects); "
                              "treating them as that attempt's", self.job_id, len(found))
        return found

    def add(self, frame: int, shapes: Sequence[Shape], tags: Sequence[Tag] = ()) -> None:
        self._raise_failed()
        with self._lock:
            self._shapes.extend(shapes)
            self._tags.extend(tags)
            self._frames.add(frame)
            n = len(self._shapes) + len(self._tags)
            idle = not self._writes or self._writes[-1].done()
        if n >= self.batch_size or (n >= self.early and idle):
            self._submit()

    def flush(self) -> None:
        """Write what is buffered and wait for every write; raises the first write error."""
        self._submit()
        writes, self._writes = self._writes, []
        try:
            for fut in writes:
                fut.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _submit(self) -> None:
        with self._lock:
            shapes, tags, frames = self._shapes, self._tags, self._frames
            self._shapes, self._tags, self._frames = [], [], set()
            if not (shapes or tags or frames):
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shape-writer")
            self._writes.append(self._pool.submit(self._write, shapes, tags, frames))

    def _raise_failed(self) -> None:
        for fut in self._writes:
            if fut.done() and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]

    def _write(self, shapes: list[Shape], tags: list[Tag], frames: set[int]) -> None:
        if shapes or tags:
            ids = self._create(shapes, tags)
            self.written += len(ids)
            self.ids.extend(ids)
        if frames:
            self.frames_done |= frames
            self.ctx.progress.note(self.done_key, sorted(self.frames_done))
            self.written_frames(frames)

    def _create(self, shapes: list[Shape], tags: list[Tag]) -> list[int]:
        """Write one batch exactly once, whatever happens to CVAT's answers; returns the new ids."""
        progress = self.ctx.progress
        progress.note(PENDING_KEY, Intent.of(shapes, tags).to_note())  # durable before the write
        ids: list[int] = []
        for attempt in range(self.reconcile_tries + 1):
            try:
                new = self.ctx.cvat.create_shapes(self.job_id, shapes, tags, batch_size=self.batch_size)
            except CvatUnavailable as exc:
                # CVAT may have applied the write: look before writing again (a failed read raises,
                # and the next attempt of the job reconciles from the recorded intent)
                if attempt == self.reconcile_tries:
                    raise
                self.ctx.log.warning("job %s: answer to a write of %d objects lost (%s); checking what CVAT "
                                     "holds", self.job_id, len(shapes) + len(tags), exc)
                time.sleep(self.reconcile_wait * (2 ** attempt))
                found, shapes, tags = missing(shapes, tags, self.ctx.cvat.get_annotations(job_id=self.job_id),
                                              self._known_ids() | set(ids))
                ids += found
                for object_id in found:
                    progress.created("shape", object_id)
                if not shapes and not tags:
                    break
                continue
            ids += new
            for object_id in new:
                progress.created("shape", object_id)
            break
        progress.note(PENDING_KEY, None)
        return ids

    def written_frames(self, frames: set[int]) -> None:
        """Hook: ``frames`` are written and checkpointed (runs on the writer thread)."""


def earlier_shape_ids(ctx: StepContext, *, match: Callable[[dict[str, Any]], bool]) -> set[int]:
    """Ids of shapes written by earlier runs of this pipeline on this resource whose parameters
    ``match`` (e.g. the same model), plus those of earlier attempts of this job."""
    ids = {int(o["id"]) for o in ctx.previous.get("earlier_runs", [])
           if o.get("kind") == "shape" and match(o.get("params") or {})}
    return ids


def attempt_shape_ids(ctx: StepContext) -> set[int]:
    """Ids of shapes written by earlier attempts of this same job (a crashed or retried attempt)."""
    return {int(o["id"]) for o in ctx.previous.get("objects", []) if o.get("kind") == "shape"}


def remove_earlier_shapes(ctx: StepContext, job_id: int, ids: set[int], *, sources: Sequence[str],
                          keep_frames: set[int] = frozenset()) -> int:
    """Delete those of ``ids`` that still exist in the job unchanged by a human (source kept),
    except on ``keep_frames`` (frames a resumed attempt keeps). Anything else in the job —
    manual shapes, other models' shapes — is never touched."""
    if not ids:
        return 0
    current = ctx.cvat.get_annotations(job_id=job_id)
    doomed = [s.id for s in current.shapes
              if s.id in ids and s.source in sources and s.frame not in keep_frames]
    doomed += [t.id for t in current.tags
               if t.id in ids and t.source in sources and t.frame not in keep_frames]
    if doomed:
        ctx.cvat.delete_shapes(job_id, [i for i in doomed if i is not None])
        ctx.log.info("job %s: removed %d shapes of an earlier run", job_id, len(doomed))
    return len(doomed)


def report_unmatched(ctx: StepContext, job_id: int, function: str, unmatched: dict[str, int]) -> None:
    """Unmatched function labels are reported on the job (notes + a CVAT issue), never silently dropped."""
    if not unmatched:
        return
    ctx.progress.note("unmatched_labels", unmatched)
    listing = ", ".join(f"{name} ({n})" for name, n in sorted(unmatched.items()))
    ctx.log.warning("job %s: labels of %s not in the project, dropped: %s", job_id, function, listing)
    if ctx.settings.report_issues:
        try:
            frame = ctx.cvat.get_job(job_id).start_frame
            ctx.cvat.create_issue(job_id, frame, f"cvat-bridge: function {function} returned labels that this "
                                                 f"project does not have; those detections were dropped: {listing}")
        except BridgeError as exc:
            ctx.log.warning("could not report unmatched labels in CVAT: %s", exc)


class FramePolicy:
    """The one frame-failure policy of the function-calling pipelines (detect, sam2_refine, …).

    A frame that fails is recorded with its reason (``progress.frame_error``) and the others go on.
    When the first ``min(3, todo)`` answers are all "function unavailable" and none succeeded, the
    function is down rather than a frame bad: the whole job retries later (``FunctionUnavailable``).
    When every frame to do failed, the job fails — or retries, if every failure was an outage.
    """

    def __init__(self, ctx: StepContext, function: str, todo: int, *, noun: str = "frames", prefix: str = ""):
        self.ctx = ctx
        self.function = function
        self.todo = todo
        self.noun = noun
        self.prefix = prefix
        self.errors: dict[int, str] = {}
        self.unavailable = 0
        self.ok = 0

    def failed(self, frame: int, exc: BaseException) -> None:
        """``frame``'s call raised ``exc``: record it; raise ``FunctionUnavailable`` if the function is down."""
        outage = isinstance(exc, FunctionUnavailable)
        self.error(frame, error_text(exc), outage=outage)
        if outage and self.ok == 0 and self.unavailable >= min(3, self.todo):
            raise FunctionUnavailable(str(exc))

    def error(self, frame: int, reason: str, *, outage: bool = False) -> None:
        self.errors[frame] = reason
        self.unavailable += outage
        self.ctx.progress.frame_error(frame, self.prefix + reason)

    def succeeded(self) -> None:
        self.ok += 1

    def check(self) -> None:
        """After the last frame: fail (or retry) the job when every frame to do failed."""
        if not self.todo or self.ok or len(self.errors) < self.todo:
            return
        first = next(iter(self.errors.values()), "unknown error")
        if self.unavailable and self.unavailable == len(self.errors):
            raise FunctionUnavailable(f"{self.function}: every frame failed: {first}")
        raise PermanentError(f"{self.function}: all {len(self.errors)} {self.noun} failed; first: {first}")


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"

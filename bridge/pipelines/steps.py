"""Steps shared by the pipelines: stream frames through a bounded pool, write shapes in batches,
clean up what earlier runs wrote, report unmatched labels."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from bridge.cvat.types import Shape, Tag
from bridge.errors import BridgeError, Cancelled
from bridge.pipelines.base import StepContext

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
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="frames") as pool:
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
        except (Cancelled, GeneratorExit):
            for fut in pending:
                fut.cancel()
            raise


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
    """Buffers shapes and writes them in batches (CVAT charges ~80 ms per write call).

    Every written id is recorded on the job (``progress.created("shape", id)``) right after the
    write returns, and the frames whose shapes are all written are checkpointed in the job notes
    (``frames_done``), so a retried attempt resumes instead of writing twice.
    """

    def __init__(self, ctx: StepContext, job_id: int, *, batch_size: int, done_key: str = "frames_done"):
        self.ctx = ctx
        self.job_id = job_id
        self.batch_size = batch_size
        self.done_key = done_key
        self.frames_done: set[int] = set(ctx.previous.get("notes", {}).get(done_key, []))
        self._shapes: list[Shape] = []
        self._tags: list[Tag] = []
        self._frames: set[int] = set()
        self._lock = threading.Lock()
        self.written = 0
        self.ids: list[int] = []

    def add(self, frame: int, shapes: Sequence[Shape], tags: Sequence[Tag] = ()) -> None:
        with self._lock:
            self._shapes.extend(shapes)
            self._tags.extend(tags)
            self._frames.add(frame)
            full = len(self._shapes) + len(self._tags) >= self.batch_size
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            shapes, tags, frames = self._shapes, self._tags, self._frames
            self._shapes, self._tags, self._frames = [], [], set()
        if shapes or tags:
            ids = self.ctx.cvat.create_shapes(self.job_id, shapes, tags, batch_size=self.batch_size)
            for object_id in ids:
                self.ctx.progress.created("shape", object_id)
            self.written += len(ids)
            self.ids.extend(ids)
        if frames:
            self.frames_done |= frames
            self.ctx.progress.note(self.done_key, sorted(self.frames_done))


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


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"

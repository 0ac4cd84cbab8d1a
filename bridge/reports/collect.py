"""The I/O side of cover reports: read quadrats from CVAT, trace them to their source photos, write files.

Reads go through ``CvatClient`` (``get_task``, ``task_frames``, ``get_labels``, ``get_annotations``).
Each coral-stage frame is a quadrat; it is traced back to the photo it came from through the stage
tasks' names: the bridge names a follow-on task ``<source name> · <stage> (from task #<id>)`` and
keeps the frame names (``bridge.pipelines.next_task.next_task_name``), so the chain of ``(from task
#N)`` markers leads to the first stage's task, where the frame of the same name is the source photo.

Reports are written under ``<data_dir>/reports/task-<id>/`` (or ``project-<id>/``), each file
replaced atomically and only when its bytes change, so a rerun over unchanged annotations leaves
identical files.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bridge.cvat.types import FrameInfo, Shape, TaskInfo
from bridge.errors import ConfigError, LabelMismatch, NotFound, PermanentError
from bridge.reports.cover import AREA_TYPES, Quadrat, Region
from bridge.reports.report import CoverReport, ReportOptions, build_report, report_files

if TYPE_CHECKING:
    from bridge.cvat.client import CvatClient

AREA_LABEL_TYPES = ("any", "polygon", "mask")
_MARKER = re.compile(r"\(from task #(\d+)\)\s*$")
_MAX_CHAIN = 16
_REPORT_FILES = re.compile(r"^(cover_per_quadrat|cover_long|cover_per_genus)\.(csv|parquet)$|"
                           r"^(coralnet_points\.csv|cover\.png|report\.json)$")


def parent_task_id(name: str) -> int | None:
    """The task a bridge-made task came from (the last ``(from task #N)`` of its name), or None."""
    m = _MARKER.search(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Lineage:
    """The stage tasks from the source (first) to the reported task (last), as far as they exist.
    ``missing`` is the id a name points to that could not be read (deleted task)."""

    tasks: tuple[TaskInfo, ...]
    missing: int | None = None
    note: str | None = None

    @property
    def source_task_id(self) -> int:
        return self.missing if self.missing is not None else self.tasks[0].id

    def as_dict(self) -> dict[str, Any]:
        return {"task_ids": [t.id for t in self.tasks], "source_task_id": self.source_task_id,
                "source_task_name": None if self.missing is not None else self.tasks[0].name,
                "note": self.note}


def lineage(cvat: CvatClient, task: TaskInfo) -> Lineage:
    chain = [task]
    seen = {task.id}
    while (parent := parent_task_id(chain[-1].name)) is not None:
        if parent in seen or len(chain) >= _MAX_CHAIN:
            return Lineage(tuple(reversed(chain)), note=f"task names loop back to task {parent}; stopped there")
        try:
            chain.append(cvat.get_task(parent))
        except NotFound:
            return Lineage(tuple(reversed(chain)), missing=parent,
                           note=f"source task {parent} no longer exists; source frames unknown")
        seen.add(parent)
    return Lineage(tuple(reversed(chain)))


@dataclass
class TaskQuadrats:
    task: TaskInfo
    lineage: Lineage
    labels: list[str]
    quadrats: list[Quadrat]
    ignored_shapes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task.id, "task_name": self.task.name, "status": self.task.status,
                "frames": len(self.quadrats), "lineage": self.lineage.as_dict(),
                "ignored_shapes": dict(sorted(self.ignored_shapes.items()))}


def _frame_numbers_by_name(frames: Iterable[FrameInfo]) -> dict[str, int | None]:
    """Basename → frame number; None for a name that occurs twice (ambiguous)."""
    out: dict[str, int | None] = {}
    for f in frames:
        name = PurePosixPath(f.name).name
        out[name] = None if name in out else f.frame
    return out


def collect_task(cvat: CvatClient, task_id: int) -> TaskQuadrats:
    """Every (non-deleted) frame of ``task_id`` as a quadrat with its polygon and mask shapes."""
    task = cvat.get_task(task_id)
    if not task.size:
        raise PermanentError(f"task {task_id} has no frames")
    specs = sorted(cvat.get_labels(task_id=task_id), key=lambda lb: lb.id)
    names = {lb.id: lb.name for lb in specs}
    labels = [lb.name for lb in specs if lb.type in AREA_LABEL_TYPES]
    if not labels:
        have = ", ".join(f"{lb.name} ({lb.type})" for lb in specs) or "none"
        raise LabelMismatch(f"task {task_id} has no polygon or mask labels (labels: {have}); "
                            "a cover report reads the coral stage's polygons/masks")
    frames = cvat.task_frames(task_id)
    lin = lineage(cvat, task)
    source = lin.tasks[0]
    source_frames = (_frame_numbers_by_name(cvat.task_frames(source.id))
                     if lin.missing is None and source.id != task.id else None)

    by_frame: dict[int, list[Region]] = defaultdict(list)
    ignored: Counter[str] = Counter()
    for position, shape in enumerate(cvat.get_annotations(task_id=task_id).shapes):
        label = names.get(shape.label_id)
        if shape.type not in AREA_TYPES or shape.outside or label is None:
            ignored[shape.type if label is not None else f"{shape.type} (unknown label)"] += 1
            continue
        if label not in labels:
            labels.append(label)  # a polygon on a label typed otherwise: still measured
        by_frame[shape.frame].append(_region(shape, label, position))

    quadrats = []
    for f in frames:
        name = PurePosixPath(f.name).name
        source_frame = f.frame if source.id == task.id else (source_frames or {}).get(name)
        info = {"source_name": name, "source_task_id": lin.source_task_id, "source_frame": source_frame,
                "task_id": task.id, "frame": f.frame, "frame_name": name}
        quadrats.append(Quadrat(name, f.width, f.height, tuple(by_frame.get(f.frame, ())), info))
    return TaskQuadrats(task, lin, labels, quadrats, dict(ignored))


def _region(shape: Shape, label: str, position: int) -> Region:
    # CVAT draws equal z_order in id order; shapes without an id keep their read order.
    order = shape.id if shape.id is not None else position
    return Region(label, shape.type, shape.points, int(shape.z_order or 0), int(order))  # type: ignore[arg-type]


def project_task_ids(cvat: CvatClient, project_id: int) -> list[int]:
    """Ids of the project's tasks (``NotFound`` when the project does not exist)."""
    cvat.get_project(project_id)  # NotFound with a clear message when it does not exist
    return cvat.list_task_ids(project_id)


# --- whole reports ---------------------------------------------------------------------------------------
def preset_colors() -> dict[str, str]:
    """Label colours of the built-in coral label set (CVAT's ``LabelSpec`` carries no colour)."""
    from bridge.labels import builtin_labels

    try:
        return {str(lb["name"]): str(lb["color"]) for lb in builtin_labels("coral_finegrained") if lb.get("color")}
    except ConfigError:
        return {}


def make_report(cvat: CvatClient, options: ReportOptions, *, task_id: int | None = None,
                project_id: int | None = None, completed_only: bool = False, workers: int = 1,
                on_quadrat: Callable[[Any], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> tuple[CoverReport, dict[str, Any]]:
    """Read and measure one task, or every task of a project; returns the report and its scope."""
    if (task_id is None) == (project_id is None):
        raise ValueError("give exactly one of task_id, project_id")
    options.check()
    if task_id is not None:
        parts = [collect_task(cvat, task_id)]
        scope: dict[str, Any] = {"task_id": task_id}
    else:
        assert project_id is not None
        parts = []
        for tid in project_task_ids(cvat, project_id):
            info = cvat.get_task(tid)
            if (completed_only and info.status != "completed") or not info.size:
                continue
            parts.append(collect_task(cvat, tid))
        if not parts:
            raise PermanentError(f"project {project_id} has no {'completed ' if completed_only else ''}"
                                 "tasks with frames to report on")
        scope = {"project_id": project_id, "completed_only": completed_only}
    labels: list[str] = []
    for part in parts:
        labels.extend(lb for lb in part.labels if lb not in labels)
    quadrats = sorted((q for part in parts for q in part.quadrats), key=_quadrat_order)
    if on_total:
        on_total(len(quadrats))
    colors = {**preset_colors(), **options.colors}
    options = ReportOptions(options.points, options.quadrat_cm, options.format, options.plot, colors)
    report = build_report(quadrats, labels, options, workers=workers, on_quadrat=on_quadrat)
    meta: dict[str, Any] = {"scope": scope, "tasks": [p.as_dict() for p in sorted(parts, key=lambda p: p.task.id)]}
    repeated = sorted(name for name, n in Counter(q.name for q in quadrats).items() if n > 1)
    if repeated:  # CoralNet needs unique image names: say so instead of guessing which row is right
        meta["repeated_image_names"] = repeated
    return report, meta


def _quadrat_order(q: Quadrat) -> tuple:
    i = q.info
    return (i.get("source_task_id") or 0, i.get("source_frame") if i.get("source_frame") is not None else -1,
            q.name, i.get("task_id") or 0, i.get("frame") or 0)


def report_dir(data_dir: Path, *, task_id: int | None = None, project_id: int | None = None) -> Path:
    if (task_id is None) == (project_id is None):
        raise ValueError("give exactly one of task_id, project_id")
    return Path(data_dir) / "reports" / (f"task-{task_id}" if task_id is not None else f"project-{project_id}")


def write_report(files: dict[str, bytes], out_dir: Path) -> list[Path]:
    """Write ``files`` into ``out_dir`` (atomic per file, unchanged files untouched) and remove report
    files of an earlier run that this one did not produce (e.g. the other table format)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in sorted(files.items()):
        path = out_dir / name
        if not (path.is_file() and path.read_bytes() == data):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        written.append(path)
    for stale in out_dir.iterdir():
        if stale.is_file() and _REPORT_FILES.match(stale.name) and stale.name not in files:
            stale.unlink()
    return written


def existing_report_files(data_dir: Path, *, task_id: int | None = None, project_id: int | None = None) -> list[Path]:
    """The report files last written for a task (or project), for serving them; [] when none."""
    folder = report_dir(data_dir, task_id=task_id, project_id=project_id)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _REPORT_FILES.match(p.name))


def build_and_write(cvat: CvatClient, options: ReportOptions, out_dir: Path,
                    **kw: Any) -> tuple[CoverReport, list[Path]]:
    """``make_report`` then ``write_report`` into ``out_dir``."""
    report, meta = make_report(cvat, options, **kw)
    return report, write_report(report_files(report, meta), out_dir)

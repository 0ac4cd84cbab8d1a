"""Plain data the rest of the bridge uses instead of cvat-sdk models.

Frame numbers are always task-relative (as CVAT stores them in annotations). Label and
attribute ids are CVAT's ids; skeleton elements use their sublabel's id.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str


@dataclass(frozen=True)
class JobInfo:
    """A job: its segment ``start_frame..stop_frame`` is task-relative and inclusive."""

    id: int
    task_id: int
    project_id: int | None
    start_frame: int
    stop_frame: int
    frame_count: int
    type: str  # annotation | ground_truth | consensus_replica
    state: str  # new | in progress | completed | rejected
    stage: str  # annotation | validation | acceptance
    status: str  # annotation | validation | completed (derived by CVAT)


@dataclass(frozen=True)
class TaskInfo:
    id: int
    name: str
    project_id: int | None
    size: int  # number of frames (0 while the task has no data)
    subset: str
    segment_size: int
    status: str
    job_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class AttributeSpec:
    """A label attribute. For ``number`` attributes ``values`` is ``[min, max, step]``."""

    id: int
    name: str
    input_type: str  # select | radio | checkbox | number | text
    values: list[str]
    default_value: str
    mutable: bool


@dataclass(frozen=True)
class LabelSpec:
    """A label; skeleton sublabels are keyed by name and carry their own (real) label ids."""

    id: int
    name: str
    type: str  # any | rectangle | polygon | ... | skeleton | points | tag
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)
    sublabels: dict[str, LabelSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameInfo:
    frame: int  # task-relative frame number
    name: str
    width: int
    height: int


@dataclass
class Shape:
    """One labeled shape. ``attributes`` maps attribute spec id → value string.

    Skeletons have ``points == []`` and one ``points`` element per sublabel in ``elements``.
    Masks carry CVAT RLE followed by the inclusive ``[left, top, right, bottom]``.
    """

    type: str
    label_id: int
    frame: int
    points: list[float]
    source: str = "auto"
    score: float | None = None
    attributes: dict[int, str] = field(default_factory=dict)
    elements: list[Shape] = field(default_factory=list)
    occluded: bool = False
    outside: bool = False
    z_order: int = 0
    rotation: float = 0.0
    group: int = 0
    id: int | None = None


@dataclass
class Tag:
    label_id: int
    frame: int
    source: str = "auto"
    attributes: dict[int, str] = field(default_factory=dict)
    id: int | None = None


@dataclass
class Track:
    """A CVAT track: one object over frames. ``shapes`` are its keyframes (``Shape`` with ``frame``,
    ``type``, ``points``, ``outside``; their ``label_id`` is the track's)."""

    label_id: int
    frame: int
    shapes: list[Shape] = field(default_factory=list)
    source: str = "semi-auto"
    attributes: dict[int, str] = field(default_factory=dict)
    group: int = 0
    id: int | None = None


@dataclass
class Annotations:
    shapes: list[Shape] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)

"""Reconciling writes whose answer was lost.

CVAT may apply ``PATCH /api/jobs/{id}/annotations?action=create`` and the answer never arrive (a 504
from a proxy, a read timeout, a reset, the bridge killed right after). The ids are then unknown, and
writing the batch again would duplicate it. So every batch is recorded as an *intent* (its frames and
a fingerprint per object) before it is sent; when its answer is lost — in the same attempt or, after a
crash, in the next one — what CVAT holds on those frames is read back, the objects matching the
intent's fingerprints are taken as written, and only the rest is written.

A fingerprint is the object's content as CVAT stores it: frame, label, type, source, geometry rounded to
0.01 px, skeleton elements. Two identical objects in one batch are matched as a multiset.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge.cvat.types import Annotations, Shape, Tag

PENDING_KEY = "pending_write"


def _round(points: Sequence[float]) -> list[float]:
    return [round(float(p), 2) for p in points]


def fingerprint(obj: Shape | Tag) -> str:
    """A short content hash of ``obj`` as CVAT stores it (ids, scores and attributes left out)."""
    if isinstance(obj, Tag):
        material: list = ["tag", obj.frame, obj.label_id, obj.source]
    else:
        elements = sorted((e.label_id, _round(e.points), bool(e.outside)) for e in obj.elements)
        material = [obj.type, obj.frame, obj.label_id, obj.source, _round(obj.points),
                    round(float(obj.rotation or 0.0), 2), elements]
    return hashlib.sha1(json.dumps(material, separators=(",", ":")).encode()).hexdigest()[:20]  # noqa: S324


@dataclass(frozen=True)
class Intent:
    """What one write is about to create: its frames and the fingerprints of its objects."""

    frames: list[int]
    prints: list[str]

    @classmethod
    def of(cls, shapes: Sequence[Shape], tags: Sequence[Tag]) -> Intent:
        frames = sorted({o.frame for o in [*shapes, *tags]})
        return cls(frames, [fingerprint(o) for o in [*shapes, *tags]])

    def to_note(self) -> dict:
        return {"frames": self.frames, "prints": self.prints}

    @classmethod
    def from_note(cls, note: object) -> Intent | None:
        if not isinstance(note, dict) or not isinstance(note.get("prints"), list):
            return None
        return cls([int(f) for f in note.get("frames") or []], [str(p) for p in note["prints"]])


def written_ids(current: Annotations, intent: Intent, known: Iterable[int]) -> list[int]:
    """Ids of objects in ``current`` that an intended write created: on the intent's frames, not
    ``known`` (ids recorded already), matching the intent's fingerprints (each at most once)."""
    wanted = Counter(intent.prints)
    frames = set(intent.frames)
    skip = set(known)
    found: list[int] = []
    for obj in [*current.shapes, *current.tags]:
        if obj.id is None or obj.id in skip or obj.frame not in frames:
            continue
        fp = fingerprint(obj)
        if wanted[fp] > 0:
            wanted[fp] -= 1
            found.append(int(obj.id))
    return found


def missing(shapes: Sequence[Shape], tags: Sequence[Tag], current: Annotations,
            known: Iterable[int]) -> tuple[list[int], list[Shape], list[Tag]]:
    """(ids of the batch's objects CVAT already holds, the shapes still to write, the tags still to write)."""
    found = written_ids(current, Intent.of(shapes, tags), known)
    have: Counter[str] = Counter()
    by_id = {o.id: o for o in [*current.shapes, *current.tags]}
    have.update(fingerprint(by_id[i]) for i in found)
    todo_shapes: list[Shape] = []
    todo_tags: list[Tag] = []
    for obj in [*shapes, *tags]:
        fp = fingerprint(obj)
        if have[fp] > 0:
            have[fp] -= 1
        elif isinstance(obj, Tag):
            todo_tags.append(obj)
        else:
            todo_shapes.append(obj)
    return found, todo_shapes, todo_tags

"""Label sets for the converter tests, built from the real CVAT exports in tests/fixtures/labels/.

The exports carry no ids (CVAT assigns them on import), so ids are handed out here in file
order: labels from ``first_id`` up, their attributes from 1000 + that, sublabels right after
their parent.
"""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

from bridge.cvat.types import AttributeSpec, LabelSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "labels"


def load_export(file_name: str) -> list[dict]:
    return json.loads((FIXTURES / file_name).read_text(encoding="utf-8"))


def to_specs(raw: list[dict], first_id: int = 1) -> list[LabelSpec]:
    ids = count(first_id)
    attr_ids = count(1000 + first_id)

    def build(d: dict) -> LabelSpec:
        label_id = next(ids)
        attributes = {
            a["name"]: AttributeSpec(
                id=next(attr_ids), name=a["name"], input_type=a["input_type"],
                values=list(a.get("values") or []), default_value=str(a.get("default_value", "")),
                mutable=bool(a.get("mutable", False)),
            )
            for a in d.get("attributes") or []
        }
        sublabels = {s["name"]: build(s) for s in d.get("sublabels") or []}
        return LabelSpec(id=label_id, name=d["name"], type=d.get("type", "any"),
                         attributes=attributes, sublabels=sublabels)

    return [build(d) for d in raw]


def corner_labels() -> list[LabelSpec]:
    return to_specs(load_export("corner_annotation_example.json"), first_id=10)


def grid_labels() -> list[LabelSpec]:
    return to_specs(load_export("grid_annotation_example.json"), first_id=100)


def genera_labels() -> list[LabelSpec]:
    return to_specs(load_export("finegained_seg_example.json"), first_id=500)

"""Label presets: the real CVAT exports become creatable label schemas (SVG fixed, ids stripped)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.labels import (
    BUILTIN_LABEL_SETS,
    LABELS_DIR,
    builtin_labels,
    fix_skeleton_svg,
    load_label_file,
    prepare_labels,
)

# The real CVAT exports (copied from ../shared/reference/labels into the test fixtures).
SHARED_LABELS = Path(__file__).resolve().parents[1] / "fixtures" / "labels"
NAME_RE = re.compile(r'data-label-name="([^"]*)"')


def _names_in_svg(svg: str) -> list[str]:
    return NAME_RE.findall(svg)


def test_bundled_copies_match_the_reference_exports() -> None:
    pairs = {
        "quadrat_corner": "corner_annotation_example.json",
        "grid": "grid_annotation_example.json",
        "coral_finegrained": "finegained_seg_example.json",
    }
    for ours, theirs in pairs.items():
        assert json.loads((LABELS_DIR / f"{ours}.json").read_text()) == json.loads(
            (SHARED_LABELS / theirs).read_text()
        )


def test_corner_skeleton_svg_refers_to_sublabels_by_name() -> None:
    [label] = builtin_labels("quadrat_corner")
    assert label["type"] == "skeleton" and [s["name"] for s in label["sublabels"]] == ["1", "2", "3", "4"]
    svg = label["svg"]
    assert "&quot;" not in svg and "data-label-id" not in svg
    assert _names_in_svg(svg) == ["1", "2", "3", "4"]
    # The node layout survives: node 1 (TL) is left of node 2 (TR) and above node 4 (BL).
    cx = [float(v) for v in re.findall(r'cx="([\d.]+)"', svg)]
    cy = [float(v) for v in re.findall(r'cy="([\d.]+)"', svg)]
    assert cx[0] < cx[1] and cy[0] < cy[3]
    assert label["attributes"][0]["name"] == "confidence" and label["attributes"][0]["values"] == [
        "0",
        "100",
        "1",
    ]


def test_grid_skeleton_has_117_named_nodes_in_order() -> None:
    [label] = builtin_labels("grid")
    names = [s["name"] for s in label["sublabels"]]
    assert names == [str(i) for i in range(1, 118)]
    assert _names_in_svg(label["svg"]) == names
    assert "data-label-id" not in label["svg"]


def test_coral_set_has_16_polygon_genera() -> None:
    labels = builtin_labels("coral_finegrained")
    assert len(labels) == 16 and all(label["type"] == "polygon" for label in labels)
    assert {"Atrea", "Pavona/Leptoseris", "Porites"} <= {label["name"] for label in labels}
    assert all("sublabels" not in label and "svg" not in label for label in labels)


def test_instance_ids_are_stripped_and_ids_in_svg_mapped_by_own_ids() -> None:
    exported = [
        {
            "id": 7,
            "name": "k",
            "color": "#ffffff",
            "type": "skeleton",
            "project_id": 3,
            "has_parent": False,
            "attributes": [{"id": 9, "name": "a", "input_type": "text", "mutable": True, "values": [""]}],
            "sublabels": [
                {"id": 21, "name": "b", "type": "points", "attributes": [], "has_parent": True},
                {"id": 20, "name": "a", "type": "points", "attributes": [], "has_parent": True},
            ],
            "svg": '<circle data-node-id="1" data-label-id="21"></circle>'
            '<circle data-node-id="2" data-label-id="20"></circle>',
        }
    ]
    [label] = prepare_labels(exported)
    assert "id" not in label and "project_id" not in label and "has_parent" not in label
    assert "id" not in label["attributes"][0]
    assert all("id" not in s and "has_parent" not in s for s in label["sublabels"])
    assert _names_in_svg(label["svg"]) == ["b", "a"]


def test_svg_with_names_is_kept_and_escaped_once() -> None:
    svg = html.escape('<circle data-label-name="x"></circle>')
    assert fix_skeleton_svg(svg, [{"name": "x"}]) == '<circle data-label-name="x"></circle>'


def test_svg_mismatching_sublabels_is_refused() -> None:
    with pytest.raises(ConfigError, match="3 sublabels"):
        fix_skeleton_svg(
            '<a data-label-id="1"></a><a data-label-id="2"></a>', [{"name": n} for n in "abc"], "s"
        )
    with pytest.raises(ConfigError, match="does not follow the sublabel order"):
        fix_skeleton_svg(
            '<a data-node-id="1" data-label-id="6"></a><a data-node-id="2" data-label-id="5"></a>',
            [{"name": "a"}, {"name": "b"}],
            "s",
        )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "non-empty"),
        ([{"color": "#fff"}], "needs a non-empty 'name'"),
        ([{"name": "a"}, {"name": "a"}], "duplicate label names: a"),
        ([{"name": "a", "type": "blob"}], "unknown type"),
        ([{"name": "s", "type": "skeleton", "svg": "<x/>"}], "no sublabels"),
        ([{"name": "s", "type": "skeleton", "sublabels": [{"name": "1"}]}], "no 'svg'"),
        ([{"name": "p", "type": "polygon", "sublabels": [{"name": "1"}]}], "not a skeleton"),
        ([{"name": "p", "attributes": [{"name": "c", "input_type": "slider"}]}], "input_type"),
    ],
)
def test_bad_labels_get_clear_errors(labels: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare_labels(labels)


def test_label_files_in_several_shapes(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps([{"name": "Coral", "type": "polygon"}]))
    (tmp_path / "wrapped.json").write_text(json.dumps({"labels": [{"name": "Coral"}]}))
    (tmp_path / "page.json").write_text(json.dumps({"count": 1, "results": [{"name": "Coral", "id": 4}]}))
    for name in ("list.json", "wrapped.json", "page.json"):
        [label] = load_label_file(tmp_path / name)
        assert label["name"] == "Coral" and "id" not in label
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="bad.json is not readable JSON"):
        load_label_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_label_file(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="unknown label set"):
        builtin_labels("nope")
    assert set(BUILTIN_LABEL_SETS) == {p.stem for p in LABELS_DIR.glob("*.json")}

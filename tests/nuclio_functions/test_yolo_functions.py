"""The YOLO Nuclio functions (gridcorners, gridpose, coralseg) with tiny random models.

Models are built from ultralytics' bundled yaml files and saved the way trained checkpoints are; the
functions load them through their real ``init_context`` and are called through the Nuclio handler
interface and over HTTP. Pure parts (template matching, skeleton building, mask/polygon conversion)
are checked on synthetic inputs with known answers.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.functions

torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("ultralytics", reason="the functions' runtime (ultralytics) is not installed")
pytest.importorskip("scipy", reason="scipy is not installed")
cv2 = pytest.importorskip("cv2")
httpx = pytest.importorskip("httpx")

from tests.doubles.function_server import load_function, serve_in_thread  # noqa: E402

FUNCTIONS = Path(__file__).resolve().parents[2] / "nuclio_functions"
GRIDCORNERS, GRIDPOSE, CORALSEG = FUNCTIONS / "gridcorners", FUNCTIONS / "gridpose", FUNCTIONS / "coralseg"


# ----------------------------------------------------------------------------------------- helpers

def import_module_from(directory: Path, name: str):
    """Import ``directory/name.py`` privately (siblings resolvable, nothing left in sys.modules)."""
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        unique = f"_test_{directory.name}_{name}"
        spec = importlib.util.spec_from_file_location(unique, directory / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(directory))
        for mod in set(sys.modules) - before:
            if (getattr(sys.modules[mod], "__file__", None) or "").startswith(str(directory)):
                del sys.modules[mod]


def b64_png(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def make_image(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def offline_yolo(tmp_path_factory):
    """ultralytics set up as offline-models.md says (no network, nothing written to HOME)."""
    saved = dict(os.environ)
    cfg = tmp_path_factory.mktemp("ultralytics_cfg")
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cfg), "MPLCONFIGDIR": str(cfg)})
    import ultralytics  # noqa: F401 - reads the settings above on first import

    yield tmp_path_factory.mktemp("yolo_models")
    os.environ.clear()
    os.environ.update(saved)


def save_random_yolo(path: Path, cfg: str, task: str, nc: int, seed: int = 0) -> Path:
    """A randomly initialised YOLO saved like a trained checkpoint (exact fp32 round trip)."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    torch.manual_seed(seed)
    model_cls = SegmentationModel if task == "segment" else DetectionModel
    model = model_cls(cfg, nc=nc, verbose=False)
    torch.save({"model": model, "train_args": {"task": task}}, path)
    return path


@pytest.fixture(scope="module")
def det_weights(offline_yolo) -> Path:
    return save_random_yolo(offline_yolo / "det.pt", "yolo11n.yaml", "detect", nc=1)


@pytest.fixture(scope="module")
def seg_weights(offline_yolo) -> Path:
    return save_random_yolo(offline_yolo / "seg.pt", "yolo11n-seg.yaml", "segment", nc=16)


def load(path: Path, env: dict[str, str]):
    """Load a function with exactly ``env`` on top of the current environment, then restore it."""
    saved = dict(os.environ)
    for key in ("TEMPLATE_PATH", "CLASS_NAMES", "MAX_COST", "CONF", "CONF_THRESHOLD"):
        os.environ.pop(key, None)
    try:
        return load_function(path, {"IMGSZ": "160", "DEVICE": "cpu", **env})
    finally:
        os.environ.clear()
        os.environ.update(saved)


def predicted_centres(weights: Path, image: np.ndarray, conf: float, max_det: int) -> np.ndarray:
    """The detection centres the same model gives outside the function (ground truth for matching)."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    res = model.predict(image, conf=conf, imgsz=160, max_det=max_det, device="cpu", verbose=False)[0]
    return res.boxes.xywh[:, :2].numpy()


def assert_cvat_skeleton(item: dict, label: str, names: list[str], width: int, height: int) -> None:
    assert item["label"] == label and item["type"] == "skeleton" and item["points"] == []
    assert [e["label"] for e in item["elements"]] == names
    for e in item["elements"]:
        assert e["type"] == "points" and e["outside"] in (0, 1)
        x, y = e["points"]
        assert 0 <= x <= width and 0 <= y <= height
    assert isinstance(item["confidence"], float) and 0 <= item["confidence"] <= 1
    (attr,) = item["attributes"]
    assert attr["name"] == "confidence" and attr["value"].isnumeric() and 0 <= int(attr["value"]) <= 100
    assert int(attr["value"]) == round(item["confidence"] * 100)


MALFORMED = [
    ({}, "missing 'image'"),
    ({"image": 123}, "must be a base64 string"),
    ({"image": "not base64 !!!"}, "not valid base64"),
    ({"image": base64.b64encode(b"hello, not an image").decode()}, "could not be decoded"),
    ({"image": ""}, "is empty"),
]


def check_malformed(fn, valid_image: str) -> None:
    for body, reason in MALFORMED:
        status, out = fn.call(body)
        assert status == 400, (body, out)
        assert reason in out["error"], (reason, out)
    for threshold in ("0.5", 2, -1, True):
        status, out = fn.call({"image": valid_image, "threshold": threshold})
        assert status == 400 and "threshold" in out["error"], (threshold, out)
    status, _, data = fn.call_raw(b"{not json")
    assert status == 400 and b"not valid JSON" in data
    status, _, data = fn.call_raw(b"[1, 2]")
    assert status == 400 and b"JSON object" in data


# ------------------------------------------------------------------------------ template matching

@pytest.fixture(scope="module")
def tm():
    return import_module_from(GRIDPOSE, "template_matching")


@pytest.fixture(scope="module")
def layout():
    return import_module_from(GRIDPOSE, "grid_layout")


def test_grid_layout_ids_follow_the_label_export(layout):
    assert layout.NUM_POINTS == 117
    assert [layout.point_id(0, c) for c in range(1, 10)] == list(range(1, 10))
    assert layout.point_id(1, 0) == 10 and layout.point_id(1, 10) == 20 and layout.point_id(9, 10) == 108
    assert [layout.point_id(10, c) for c in range(1, 10)] == list(range(109, 118))
    for i in range(1, 118):
        assert layout.point_id(*layout.position(i)) == i
    for corner in layout.CORNERS:
        with pytest.raises(ValueError):
            layout.point_id(*corner)
    with pytest.raises(ValueError):
        layout.position(118)
    tpl = layout.lattice_template()
    assert tpl.shape == (117, 2)
    np.testing.assert_allclose(tpl[0], [0.1, 0.0])  # id 1 = row 0, col 1
    np.testing.assert_allclose(tpl[9], [0.0, 0.1])  # id 10 = row 1, col 0
    np.testing.assert_allclose(tpl[116], [0.9, 1.0])  # id 117 = row 10, col 9
    exported = json.loads((GRIDPOSE / "labels.json").read_text())[0]
    assert [s["name"] for s in exported["sublabels"]] == layout.element_names()


def test_matching_recovers_shuffled_jittered_points_with_missing_and_outliers(tm, layout):
    rng = np.random.default_rng(1)
    template = layout.lattice_template()
    truth = template + rng.normal(0, 0.01, template.shape)  # jitter well below the 0.1 spacing
    missing = np.array([1, 5, 30, 58, 59, 100, 117]) - 1  # element ids -> indices
    present = np.setdiff1d(np.arange(117), missing)
    # far outliers, plus a spurious detection 0.05 from id 80 (whose neighbours are all present)
    outliers = np.array([[0.5, 1.4], [-0.4, 0.5], [1.3, 1.3], template[79] + [0.04, -0.03]])
    points = np.concatenate([truth[present], outliers])
    order = rng.permutation(len(points))
    assignment = tm.match_to_template(points[order], template, max_cost=0.12)
    assert (assignment[missing] == -1).all()
    recovered = points[order][assignment[present]]
    np.testing.assert_allclose(recovered, truth[present])
    outlier_positions = set(np.argsort(order)[len(present):].tolist())
    assert not outlier_positions & set(assignment[assignment >= 0].tolist())  # no outlier is matched


def test_matching_respects_the_cost_bound_and_empty_inputs(tm):
    template = np.array([[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]])
    far = np.array([[0.5, 0.5]])
    assert (tm.match_to_template(far, template, 0.3) == -1).all()
    assert tm.match_to_template(far, template, 0.7).tolist().count(0) == 1
    assert (tm.match_to_template(np.zeros((0, 2)), template, 0.3) == -1).all()
    with pytest.raises(ValueError):
        tm.match_to_template(far, template, 0)
    # two detections compete for one corner: the closer one wins, the other goes unmatched
    close = np.array([[0.2, 0.2], [0.06, 0.06]])
    assert tm.match_to_template(close, template, 0.3).tolist() == [1, -1, -1, -1]
    # a missing point does not make a neighbour's detection move over to it
    row = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0]])
    got = tm.match_to_template(np.array([[0.101, 0.0], [0.199, 0.0]]), row, 0.12)
    assert got.tolist() == [-1, 0, 1]


def test_template_file_is_checked(tm, tmp_path):
    good = tmp_path / "t.npy"
    np.save(good, np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]))
    assert tm.load_template(str(good), 4).shape == (4, 2)
    with pytest.raises(ValueError, match="shape"):
        tm.load_template(str(good), 117)
    pixels = tmp_path / "px.npy"
    np.save(pixels, np.array([[10, 10], [900, 10], [900, 900], [10, 900]], float))
    with pytest.raises(ValueError, match="normalised"):
        tm.load_template(str(pixels), 4)


def test_skeleton_item_from_known_detections():
    kd = import_module_from(GRIDCORNERS, "keypoint_detector")
    template = np.array([[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]])
    # detections for TR, BL, TL (shuffled) and an outlier in the middle; BR is missing
    centres = np.array([[950.0, 40.0], [60.0, 700.0], [40.0, 30.0], [500.0, 380.0]])
    scores = np.array([0.9, 0.7, 0.8, 0.99])
    item = kd.skeleton_item("quadrat_corner", ["1", "2", "3", "4"], template, centres, scores, 1000, 750, 0.3)
    assert_cvat_skeleton(item, "quadrat_corner", ["1", "2", "3", "4"], 1000, 750)
    el = {e["label"]: e for e in item["elements"]}
    assert el["1"]["points"] == [40.0, 30.0] and el["1"]["outside"] == 0
    assert el["2"]["points"] == [950.0, 40.0] and el["2"]["outside"] == 0
    assert el["4"]["points"] == [60.0, 700.0] and el["4"]["outside"] == 0
    assert el["3"]["outside"] == 1
    np.testing.assert_allclose(el["3"]["points"], [0.95 * 999, 0.95 * 749])
    assert item["confidence"] == pytest.approx((0.9 + 0.7 + 0.8) / 3)
    assert item["attributes"] == [{"name": "confidence", "value": "80"}]
    assert kd.skeleton_item("quadrat_corner", ["1", "2", "3", "4"], template, centres[3:], scores[3:],
                            1000, 750, 0.3) is None


# ------------------------------------------------------------------------------- gridcorners / pose

def test_gridcorners_end_to_end_with_a_random_detector(det_weights, tmp_path):
    image = make_image()
    centres = predicted_centres(det_weights, image, conf=1e-4, max_det=50)
    assert len(centres) >= 4
    # a random model puts its boxes around the image centre: a template there makes them match ...
    near = tmp_path / "near_centre.npy"
    np.save(near, np.array([[0.45, 0.45], [0.55, 0.45], [0.55, 0.55], [0.45, 0.55]]))
    fn = load(GRIDCORNERS, {"MODEL_PATH": str(det_weights), "CONF": "0.0001", "TEMPLATE_PATH": str(near)})
    status, out = fn.call({"image": b64_png(image)})
    assert status == 200, out
    (item,) = out
    assert_cvat_skeleton(item, "quadrat_corner", ["1", "2", "3", "4"], 320, 240)
    visible = [e["points"] for e in item["elements"] if not e["outside"]]
    assert visible
    # every visible element is a detection centre, and no detection serves two elements
    detected = Counter(tuple(np.round(c, 2)) for c in centres)
    used = Counter(tuple(np.round(p, 2)) for p in visible)
    assert all(n <= detected[c] for c, n in used.items()), (used, detected)
    # ... a template 0.45 outside every image corner is beyond MAX_COST (0.3) of any detection ...
    outside = tmp_path / "outside.npy"
    np.save(outside, np.array([[-0.45, -0.45], [1.45, -0.45], [1.45, 1.45], [-0.45, 1.45]]))
    env = {"MODEL_PATH": str(det_weights), "CONF": "0.0001", "TEMPLATE_PATH": str(outside), "WARMUP": "false"}
    assert load(GRIDCORNERS, env).call({"image": b64_png(image)}) == (200, [])
    # ... until MAX_COST allows it
    status, out = load(GRIDCORNERS, {**env, "MAX_COST": "1.5"}).call({"image": b64_png(image)})
    assert status == 200 and [e["outside"] for e in out[0]["elements"]] == [0, 0, 0, 0]
    # the default corner template gives a valid answer too
    status, out = load(GRIDCORNERS, {"MODEL_PATH": str(det_weights), "CONF": "0.0001"}).call(
        {"image": b64_png(image)})
    assert status == 200 and len(out) <= 1
    for item in out:
        assert_cvat_skeleton(item, "quadrat_corner", ["1", "2", "3", "4"], 320, 240)
    # a request threshold above every score leaves nothing
    assert fn.call({"image": b64_png(image), "threshold": 0.99}) == (200, [])
    check_malformed(fn, b64_png(image))


def test_gridpose_end_to_end_and_over_http(det_weights):
    image = make_image(256, 256, seed=3)
    centres = predicted_centres(det_weights, image, conf=1e-4, max_det=300)
    fn = load(GRIDPOSE, {"MODEL_PATH": str(det_weights), "CONF": "0.0001"})
    with serve_in_thread(fn, max_workers=2) as url:
        resp = httpx.post(url, json={"image": b64_png(image)}, timeout=60)
        assert resp.status_code == 200, resp.text
        (item,) = resp.json()
        bad = httpx.post(url, json={"image": "%%%"}, timeout=60)
        assert bad.status_code == 400 and "base64" in bad.json()["error"]
    names = [str(i) for i in range(1, 118)]
    assert_cvat_skeleton(item, "grid", names, 256, 256)
    layout = import_module_from(GRIDPOSE, "grid_layout")
    template = layout.lattice_template()
    visible = 0
    for e, tpl in zip(item["elements"], template, strict=True):
        if e["outside"]:
            np.testing.assert_allclose(e["points"], tpl * 255)
        else:
            visible += 1
            assert np.linalg.norm(np.array(e["points"]) / 256 - tpl) <= 0.12 + 1e-9
            assert np.min(np.linalg.norm(centres - np.array(e["points"]), axis=1)) < 1e-3
    assert 1 <= visible < 117


def test_yolo_functions_refuse_bad_settings(det_weights, seg_weights, tmp_path):
    with pytest.raises(RuntimeError, match="MODEL_PATH is required"):
        load(GRIDCORNERS, {"MODEL_PATH": ""})
    with pytest.raises(FileNotFoundError):
        load(GRIDPOSE, {"MODEL_PATH": str(tmp_path / "missing.pt")})
    with pytest.raises(ValueError, match="'segment' model"):
        load(CORALSEG, {"MODEL_PATH": str(det_weights)})
    with pytest.raises(ValueError, match="'detect' model"):
        load(GRIDCORNERS, {"MODEL_PATH": str(seg_weights)})
    with pytest.raises(RuntimeError, match="MAX_COST"):
        load(GRIDCORNERS, {"MODEL_PATH": str(det_weights), "MAX_COST": "-1"})
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="shape"):
        load(GRIDCORNERS, {"MODEL_PATH": str(det_weights), "TEMPLATE_PATH": str(wrong)})


# ------------------------------------------------------------------------------------------ coralseg

def test_mask_and_polygon_conversion_on_a_known_shape():
    seg = import_module_from(CORALSEG, "segmenter")
    mask = np.zeros((40, 60), bool)
    mask[10:20, 15:45] = True
    mask[20:30, 15:25] = True  # an L shape
    raw = seg.mask_to_cvat(mask)
    left, top, right, bottom = raw[-4:]
    assert (left, top, right, bottom) == (15, 10, 44, 29)
    crop = np.array(raw[:-4]).reshape(bottom - top + 1, right - left + 1)
    assert np.array_equal(crop.astype(bool), mask[top:bottom + 1, left:right + 1])
    assert seg.mask_to_cvat(np.zeros((5, 5), bool)) is None
    poly = seg.simplify_polygon(seg.mask_contour(mask), 1.0, 60, 40)
    pts = np.array(poly).reshape(-1, 2)
    assert len(pts) == 6  # the L's six corners survive simplification
    filled = np.zeros_like(mask, np.uint8)
    cv2.fillPoly(filled, [pts.round().astype(np.int32)], 1)
    assert (filled.astype(bool) == mask).mean() > 0.97
    assert seg.simplify_polygon(np.array([[1, 1], [2, 2]]), 1.0, 60, 40) == []
    assert seg.confidence_value(0.876) == "88" and seg.confidence_value(1.7) == "100"


def test_class_names_parsing(tmp_path):
    seg = import_module_from(CORALSEG, "segmenter")
    assert seg.parse_class_names('["Coral"]') == ["Coral"]
    lines = tmp_path / "names.txt"
    lines.write_text("Acropora\nPorites\n\n")
    assert seg.parse_class_names(str(lines)) == ["Acropora", "Porites"]
    as_json = tmp_path / "names.json"
    as_json.write_text('["A", "B"]')
    assert seg.parse_class_names(str(as_json)) == ["A", "B"]
    for bad in ('["A", "A"]', "[1, 2]", "[]", "not a file nor json", '{"a": 1}'):
        with pytest.raises(ValueError):
            seg.parse_class_names(bad)


def assert_cvat_mask_item(item: dict, labels: list[str], width: int, height: int) -> None:
    assert item["label"] in labels and item["type"] == "mask"
    pts = np.array(item["points"], float)
    assert len(pts) % 2 == 0 and len(pts) >= 6
    pts = pts.reshape(-1, 2)
    assert (pts >= 0).all() and (pts[:, 0] <= width - 1).all() and (pts[:, 1] <= height - 1).all()
    raw = item["mask"]
    left, top, right, bottom = raw[-4:]
    assert all(isinstance(v, int) for v in raw)
    assert 0 <= left <= right < width and 0 <= top <= bottom < height
    crop = np.array(raw[:-4])
    assert crop.size == (right - left + 1) * (bottom - top + 1)
    assert set(np.unique(crop)) <= {0, 1} and crop.any()
    crop = crop.reshape(bottom - top + 1, right - left + 1)
    assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # tight bbox
    (attr,) = item["attributes"]
    assert attr["name"] == "confidence" and attr["value"].isnumeric()
    assert int(attr["value"]) == round(item["confidence"] * 100)


def test_coralseg_end_to_end_with_a_random_16_class_model(seg_weights, tmp_path):
    genera = [label["name"] for label in json.loads((CORALSEG / "labels.json").read_text())]
    assert len(genera) == 16 and genera[3] == "Atrea"
    image = make_image(200, 150, seed=5)
    fn = load(CORALSEG, {"MODEL_PATH": str(seg_weights), "CONF_THRESHOLD": "0.0001", "MAX_DET": "5"})
    status, items = fn.call({"image": b64_png(image)})
    assert status == 200, items
    assert 1 <= len(items) <= 5
    for item in items:
        assert_cvat_mask_item(item, genera, 200, 150)
    assert fn.call({"image": b64_png(image), "threshold": 0.99}) == (200, [])
    check_malformed(fn, b64_png(image))
    with serve_in_thread(fn) as url:
        resp = httpx.post(url, json={"image": b64_png(image)}, timeout=60)
        assert resp.status_code == 200 and resp.json() == items

    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class_{i}" for i in range(16)))
    renamed = load(CORALSEG, {"MODEL_PATH": str(seg_weights), "CONF_THRESHOLD": "0.0001", "MAX_DET": "5",
                              "CLASS_NAMES": str(names), "WARMUP": "false"})
    status, out = renamed.call({"image": b64_png(image)})
    assert status == 200
    assert [i["label"] for i in out] == [f"class_{genera.index(i['label'])}" for i in items]
    with pytest.raises(ValueError, match="16 classes but CLASS_NAMES has 1"):
        load(CORALSEG, {"MODEL_PATH": str(seg_weights), "CLASS_NAMES": '["Coral"]'})


# --------------------------------------------------------------------------- packaging and metadata

@pytest.mark.parametrize("directory,name,label_file", [
    (GRIDCORNERS, "pth-yolo-gridcorners", "labels.json"),
    (GRIDPOSE, "pth-yolo-gridpose", "labels.json"),
    (CORALSEG, "pth-yolo-coralsegv4", "labels.json"),
])
def test_detector_function_yaml(directory, name, label_file):
    exported = json.loads((directory / label_file).read_text())
    for file, gpu in (("function.yaml", False), ("function-gpu.yaml", True)):
        conf = yaml.safe_load((directory / file).read_text())
        meta, spec = conf["metadata"], conf["spec"]
        assert meta["name"] == name and meta["namespace"] == "cvat"
        ann = meta["annotations"]
        assert ann["type"] == "detector" and ann["name"]
        labels = json.loads(ann["spec"])
        assert [lab["name"] for lab in labels] == [lab["name"] for lab in exported]
        for lab, exp in zip(labels, exported, strict=True):
            if directory == CORALSEG:
                # the items are masks: the spec says so; CVAT maps mask labels onto the project's
                # polygon labels (labels_compatible treats mask and polygon as one)
                assert (lab["type"], exp["type"]) == ("mask", "polygon")
            else:
                assert lab["type"] == exp["type"]
            (attr,) = lab["attributes"]
            assert attr["name"] == "confidence" and attr["input_type"] == "number"
            assert attr["values"] == ["0", "100", "1"]
            if lab["type"] == "skeleton":
                subs = [s["name"] for s in lab["sublabels"]]
                assert subs == [s["name"] for s in exp["sublabels"]]
                assert all(s["type"] == "points" for s in lab["sublabels"])
                for s in subs:
                    assert f'data-label-name="{s}"' in lab["svg"]
        assert spec["handler"] == "main:handler" and spec["runtime"] == "python:3.10"
        assert spec["eventTimeout"].endswith("s")
        env = {e["name"]: e["value"] for e in spec["env"]}
        assert env["MODEL_PATH"].startswith("/opt/nuclio/")
        trigger = spec["triggers"]["myHttpTrigger"]
        assert trigger["kind"] == "http" and trigger["maxWorkers"] == (1 if gpu else 2)
        assert trigger["workerAvailabilityTimeoutMilliseconds"] == 10000
        assert trigger["attributes"]["maxRequestBodySize"] == 33554432
        assert spec["platform"]["attributes"]["network"] == "cvat_cvat"
        assert ("resources" in spec) == gpu
        if gpu:
            assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
        build = spec["build"]
        assert build["baseImage"]
        assert any("WEIGHTS_URL=" in d["value"] for d in build["directives"]["preCopy"])


def test_coralseg_spec_matches_its_default_class_names():
    conf = yaml.safe_load((CORALSEG / "function.yaml").read_text())
    labels = [lab["name"] for lab in json.loads(conf["metadata"]["annotations"]["spec"])]
    main = import_module_from(CORALSEG, "main")
    assert main.default_class_names() == labels


def test_shared_module_copies_are_identical():
    copies = {
        "function_io.py": ["gridcorners", "gridpose", "coralseg", "lama"],
        "template_matching.py": ["gridcorners", "gridpose"],
        "keypoint_detector.py": ["gridcorners", "gridpose"],
        "grid_layout.py": ["gridpose", "lama"],
    }
    for file, dirs in copies.items():
        texts = {(FUNCTIONS / d / file).read_text() for d in dirs}
        assert len(texts) == 1, f"{file} differs between {dirs}"


def test_deploy_script_is_valid_bash():
    script = FUNCTIONS / "deploy.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    out = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--gpu" in out.stdout
    bad = subprocess.run(["bash", str(script), "no-such-function"], capture_output=True, text=True,
                         env={**os.environ, "NUCTL": "true"})
    assert bad.returncode != 0 and "no-such-function" in bad.stderr
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(script)], check=True)


FAKE_NUCTL = """#!/usr/bin/env bash
echo "$*" >> "$NUCTL_LOG"
if [[ "$1 $2" == "get project" ]]; then [[ -f "$NUCTL_STATE-$3" ]]; exit $?; fi
if [[ "$1 $2" == "create project" ]]; then touch "$NUCTL_STATE-$3"; fi
if [[ "$1" == "deploy" ]]; then
    while [[ $# -gt 0 ]]; do [[ "$1" == "--file" ]] && grep 'WEIGHTS_URL=' "$2" >> "$NUCTL_LOG"; shift; done
fi
exit 0
"""


def test_deploy_script_drives_nuctl_like_cvat_does(tmp_path):
    nuctl = tmp_path / "nuctl"
    nuctl.write_text(FAKE_NUCTL)
    nuctl.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "NUCTL": str(nuctl), "NUCTL_LOG": str(log), "NUCTL_STATE": str(tmp_path / "state"),
           "WEIGHTS_URL_GRIDPOSE": "https://example.org/w.pt?a=1&b=2"}
    script = str(FUNCTIONS / "deploy.sh")
    subprocess.run(["bash", script, "--gpu", "gridpose", "lama"], env=env, check=True, capture_output=True)
    subprocess.run(["bash", script, "coralseg", "lama"], env=env, check=True, capture_output=True)
    lines = log.read_text().splitlines()
    # each project is created once (idempotent); lama, which has no CVAT type, goes to a project
    # CVAT does not list, so CVAT 2.73 does not fail on "unknown type: None" on every listing
    assert sum(line == "create project cvat --platform local" for line in lines) == 1
    assert sum(line == "create project cvat-bridge --platform local" for line in lines) == 1
    deploys = [line for line in lines if line.startswith("deploy ")]
    assert len(deploys) == 4
    assert f"--path {GRIDPOSE} --file " in deploys[0] and deploys[0].split("--file ")[1].split()[0].endswith(
        "gridpose-function-gpu.yaml")
    assert f"--file {FUNCTIONS / 'lama' / 'function-gpu.yaml'}" in deploys[1]
    assert f"--file {CORALSEG / 'function.yaml'}" in deploys[2]
    projects = [line.split("--project-name ")[1].split()[0] for line in deploys]
    assert projects == ["cvat", "cvat-bridge", "cvat", "cvat-bridge"]
    for line in deploys:
        assert "--platform local" in line
        assert "--env CVAT_FUNCTIONS_REDIS_HOST=cvat_redis_ondisk" in line
        assert "--env CVAT_FUNCTIONS_REDIS_PORT=6666" in line
        assert '--platform-config {"attributes": {"network": "cvat_cvat"}}' in line
    urls = [line.strip() for line in lines if "WEIGHTS_URL=" in line]
    assert urls[0] == "value: WEIGHTS_URL=https://example.org/w.pt?a=1&b=2"  # overridden, & kept
    assert "simple-lama-inpainting" in urls[1]  # lama keeps its default

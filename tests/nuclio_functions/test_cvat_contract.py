"""The functions against exactly what CVAT 2.73 sends them, and their answers as CVAT uses them.

Bodies: ``tests/fixtures/lambda/`` (the lambda manager's real calls, image regenerated). Around each
call, ``cvat_lambda`` does what ``cvat/apps/lambda_manager/views.py`` does: builds the payload from
the UI's request (checked here to reproduce the recorded bodies key for key), and after the call maps
detector labels and attributes, turns raw masks into CVAT RLE or polygons, fills skeletons, and signs
and unsigns tracker states. Answers are then decoded the way CVAT's UI and SDK decode them
(``cvat_sdk.masks.decode_mask`` = cvat-core's ``rle2Mask``). All functions run their real handlers
with tiny random models.
"""

from __future__ import annotations

import base64
import copy
import json
import os

import cv2
import numpy as np
import pytest
import yaml
from cvat_sdk.masks import decode_mask, encode_mask

from tests.doubles.function_server import REPO, load_function
from tests.nuclio_functions import cvat_lambda

pytestmark = pytest.mark.functions
torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("sam2", reason="the functions' runtime (sam2) is not installed")

FUNCTIONS = REPO / "nuclio_functions"
FIXTURE = REPO / "tests" / "fixtures" / "lambda" / "cvat-2.73-invocations-generated-image.jsonl"
RECORDED = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
IMAGE = RECORDED[0]["body"]["image"]
W, H = 480, 360
SAM2_ENV = {"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_WARMUP": "0"}
DIRS = {"pth-sam2": "sam2", "pth-sam2-auto": "sam2_auto", "pth-yolo-gridcorners": "gridcorners",
        "pth-yolo-gridpose": "gridpose", "pth-yolo-coralsegv4": "coralseg", "pth-sam2-tracker": "sam2_tracker"}


def bodies(function: str) -> list[dict]:
    return [r["body"] for r in RECORDED if r["function"] == function]


def meta_of(folder: str, file: str = "function.yaml") -> dict:
    return cvat_lambda.function_metadata(yaml.safe_load((FUNCTIONS / folder / file).read_text()))


def task_labels_from_export(folder: str, rename: str = "") -> list[dict]:
    """A task created from the project's label export (``labels.json``), with database ids."""
    ids = iter(range(1, 10_000))

    def attrs(items: list[dict]) -> list[dict]:
        return [{"name": a["name"], "input_type": a["input_type"], "values": "\n".join(a["values"]), "id": next(ids)}
                for a in items]

    def convert(label: dict) -> dict:
        subs = [convert(s) for s in label.get("sublabels", [])]
        return cvat_lambda.task_label(rename + label["name"], label.get("type", "any"),
                                      attrs(label.get("attributes", [])), subs, next(ids))

    return [convert(lb) for lb in json.loads((FUNCTIONS / folder / "labels.json").read_text())]


def raw_crop(item: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    xtl, ytl, xbr, ybr = item["mask"][-4:]
    crop = np.array(item["mask"][:-4], bool).reshape(ybr - ytl + 1, xbr - xtl + 1)
    return crop, (xtl, ytl, xbr, ybr)


# ------------------------------------------------------------------------------- the bodies

def test_the_fixture_is_what_the_lambda_manager_builds_from_the_ui_requests() -> None:
    """Each recorded body = ``invoke()``'s payload for the UI request that made it (key order too)."""
    assert len(RECORDED) == 12 and {r["function"] for r in RECORDED} <= set(DIRS)
    for rec in RECORDED:
        body = rec["body"]
        assert rec["headers"]["x-nuclio-function-name"] == rec["function"]
        assert rec["headers"]["x-nuclio-project-name"] == "cvat" and rec["headers"]["x-nuclio-path"] == "/"
        meta = meta_of(DIRS[rec["function"]])
        if meta["kind"] == "interactor":
            # the UI sends obj_bbox [] without a box (convertShapesForInteractor reduces nothing to []);
            # a request without obj_bbox (or with null) gives null: CVAT drops only None
            ui = {"job": 7, "frame": 0, "pos_points": body["pos_points"], "neg_points": body["neg_points"],
                  "obj_bbox": body["obj_bbox"]}
            payload = cvat_lambda.interactor_payload(meta, ui, IMAGE)
        else:
            # annotate_frame with mapping and ROI, or a frame of task auto-annotation: mapping,
            # conv_mask_to_poly, cleanup and ROI stay in CVAT, only a truthy threshold travels
            ui = {"task": 3, "frame": 0, "mapping": {"x": {"name": "y"}}, "cleanup": False,
                  "conv_mask_to_poly": True, "threshold": body.get("threshold")}
            payload = cvat_lambda.detector_payload(ui, IMAGE)
        assert payload == body and list(payload) == list(body), rec["function"]
    boxes = [r["body"]["obj_bbox"] for r in RECORDED if r["function"] == "pth-sam2"]
    assert [] in boxes and None in boxes and any(b and len(b) == 2 for b in boxes)
    assert cvat_lambda.detector_payload({"frame": 0, "threshold": 0.0}, "img") == {"image": "img"}  # falsy: dropped


# ------------------------------------------------------------------------------- interactor

@pytest.fixture(scope="module")
def sam2_fn():
    torch.manual_seed(0)
    return load_function(FUNCTIONS / "sam2", SAM2_ENV)


def ui_masks(answer: dict) -> list[np.ndarray]:
    """cvat-ui keeps the ``mask`` shapes of an interactor answer and decodes their RLE + bbox."""
    assert set(answer) == {"shapes"} and isinstance(answer["shapes"], list)
    out = []
    for shape in answer["shapes"]:
        assert shape["type"] == "mask" and shape["source"] == "semi-auto"
        mask = decode_mask(shape["points"], image_width=W, image_height=H)
        left, top, right, bottom = shape["points"][-4:]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (left, top, right, bottom) == (cols[0], rows[0], cols[-1], rows[-1])  # tight crop convention
        out.append(mask)
    return out


def test_every_recorded_interactor_click_is_answered(sam2_fn) -> None:
    answers = []
    for body in bodies("pth-sam2"):
        status, answer = sam2_fn.call(body)
        assert status == 200, (body["obj_bbox"], answer)  # the recorded "obj_bbox": [] was a 400
        answers.append((body, ui_masks(answer)))
    # "obj_bbox": [] is the same prompt as null: the same mask
    by_box = {json.dumps(b["obj_bbox"]): m for b, m in answers if b["pos_points"] == [[200, 180]]}
    assert len(by_box["[]"]) == len(by_box["null"]) and all(
        np.array_equal(a, b) for a, b in zip(by_box["[]"], by_box["null"], strict=True))


@pytest.mark.parametrize("neg", [[[200, 180]], [[10, 10], [470, 350]], []])
def test_a_lone_negative_click_gets_an_empty_answer_not_an_error(sam2_fn, neg) -> None:
    body = {**bodies("pth-sam2")[0], "pos_points": [], "neg_points": neg, "obj_bbox": []}
    status, answer = sam2_fn.call(body)
    assert (status, answer) == (200, {"shapes": []})
    assert ui_masks(answer) == []
    status, answer = sam2_fn.call({**body, "neg_points": [[W + 5, 10]]})
    assert status == 400 and "outside the 480x360 image" in answer["error"]  # still checked


# -------------------------------------------------------------------------------- detectors

@pytest.fixture(scope="module")
def yolo_models(tmp_path_factory):
    pytest.importorskip("ultralytics", reason="the functions' runtime (ultralytics) is not installed")
    saved = dict(os.environ)
    cfg = tmp_path_factory.mktemp("ultralytics_cfg")
    os.environ.update({"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cfg), "MPLCONFIGDIR": str(cfg)})
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    out = tmp_path_factory.mktemp("yolo")
    torch.manual_seed(0)
    torch.save({"model": DetectionModel("yolo11n.yaml", nc=1, verbose=False), "train_args": {"task": "detect"}},
               out / "det.pt")
    torch.save({"model": SegmentationModel("yolo11n-seg.yaml", nc=16, verbose=False),
                "train_args": {"task": "segment"}}, out / "seg.pt")
    centre = out / "centre.npy"
    np.save(centre, np.array([[0.45, 0.45], [0.55, 0.45], [0.55, 0.55], [0.45, 0.55]]))
    yield out
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def detectors(yolo_models):
    env = {"IMGSZ": "160", "DEVICE": "cpu", "WARMUP": "false"}
    det, seg = str(yolo_models / "det.pt"), str(yolo_models / "seg.pt")
    fns = {  # load_function puts the test process's environment back after each init_context
        "pth-yolo-coralsegv4": load_function(FUNCTIONS / "coralseg", {
            **env, "MODEL_PATH": seg, "CONF_THRESHOLD": "0.0001", "MAX_DET": "5"}),
        "pth-yolo-gridcorners": load_function(FUNCTIONS / "gridcorners", {
            **env, "MODEL_PATH": det, "CONF": "0.0001", "TEMPLATE_PATH": str(yolo_models / "centre.npy"),
            "MAX_COST": "1.5"}),
        "pth-yolo-gridpose": load_function(FUNCTIONS / "gridpose", {**env, "MODEL_PATH": det, "CONF": "0.0001"}),
    }
    fns["pth-sam2-auto"] = load_function(FUNCTIONS / "sam2_auto", {
        **SAM2_ENV, "SAM2_AUTO_POINTS_PER_SIDE": "2", "SAM2_AUTO_PRED_IOU_THRESH": "0",
        "SAM2_AUTO_STABILITY_SCORE_THRESH": "0", "SAM2_AUTO_BOX_NMS_THRESH": "0.95"})
    return fns


def check_stored(meta: dict, items: list[dict], stored: dict, task_labels: list[dict], conv: bool) -> None:
    """The shapes CVAT stores for ``items`` are valid and decode to what the function meant."""
    by_id = {lb["id"]: lb for lb in task_labels}
    assert stored["tags"] == [] and len(stored["shapes"]) == len(items)
    for item, shape in zip(items, stored["shapes"], strict=True):
        label = by_id[shape["label_id"]]
        spec_type = next(lb["type"] for lb in meta["labels_v2"] if lb["name"] == item["label"])
        assert spec_type == item["type"], "the spec declares what the function returns"
        if item["type"] == "mask" and conv:
            assert shape["type"] == "polygon" and shape["points"] == item["points"] and len(shape["points"]) >= 6
        elif item["type"] == "mask":
            crop, (xtl, ytl, xbr, ybr) = raw_crop(item)
            mask = decode_mask(shape["points"], image_width=W, image_height=H)  # as the UI and SDK read it
            assert shape["points"][-4:] == [xtl, ytl, xbr, ybr]
            assert np.array_equal(mask[ytl:ybr + 1, xtl:xbr + 1], crop) and mask.sum() == crop.sum()
            assert shape["points"] == encode_mask(mask, bbox=[xtl, ytl, xbr + 1, ybr + 1])
        elif item["type"] == "skeleton":
            assert shape["type"] == "skeleton" and label["type"] == "skeleton"
            assert [e["label_id"] for e in shape["elements"]] == [s["id"] for s in label["sublabels"]]
            for element in shape["elements"]:
                assert element["type"] == "points" and len(element["points"]) == 2
        for attr in shape["attributes"]:  # only attributes CVAT accepted for the task's attribute
            spec = next(a for a in label["attributes"] if a["id"] == attr["spec_id"])
            low, high, step = map(int, spec["values"].split("\n"))
            assert low <= int(attr["value"]) <= high
        if any(a.get("name") == "confidence" for a in item.get("attributes", [])) and label["attributes"]:
            assert shape["attributes"], "the confidence attribute survives CVAT's checks"


@pytest.mark.parametrize("function", ["pth-yolo-coralsegv4", "pth-yolo-gridcorners", "pth-yolo-gridpose",
                                      "pth-sam2-auto"])
def test_recorded_detector_calls_are_answered_and_stored_as_cvat_stores_them(detectors, function) -> None:
    folder = DIRS[function]
    meta = meta_of(folder)
    if function == "pth-sam2-auto":
        task_labels = [cvat_lambda.task_label("object", "polygon", label_id=1)]
    else:
        task_labels = task_labels_from_export(folder)
    answered = 0
    for body in bodies(function):
        status, items = detectors[function].call(body)
        assert status == 200 and isinstance(items, list), items
        answered += bool(items)
        for conv in (False, True):
            stored = cvat_lambda.convert_detections(meta, items, task_labels, frame=0, conv_mask_to_poly=conv)
            check_stored(meta, items, stored, task_labels, conv)
    assert answered, f"{function}: the random model answered nothing to every recorded body"


def test_annotate_frame_with_a_mapping_reaches_the_renamed_task_labels(detectors) -> None:
    """``annotate_frame`` with ``mapping`` (and ROI): the function gets only the image; CVAT maps."""
    meta = meta_of("coralseg")
    body = bodies("pth-yolo-coralsegv4")[0]
    status, items = detectors["pth-yolo-coralsegv4"].call(body)
    assert status == 200 and items
    task_labels = task_labels_from_export("coralseg", rename="reef/")
    for lb in task_labels:
        lb["attributes"][0]["name"] = "score"
    mapping = {lb["name"]: {"name": f"reef/{lb['name']}", "attributes": {"confidence": "score"}}
               for lb in meta["labels_v2"]}
    stored = cvat_lambda.convert_detections(meta, items, task_labels, frame=4, mapping=mapping)
    names = {lb["id"]: lb["name"] for lb in task_labels}
    assert [names[s["label_id"]] for s in stored["shapes"]] == [f"reef/{i['label']}" for i in items]
    assert all(s["frame"] == 4 and s["attributes"] for s in stored["shapes"])
    partial = {items[0]["label"]: mapping[items[0]["label"]]}  # labels left out of the mapping are dropped
    kept = cvat_lambda.convert_detections(meta, items, task_labels, frame=4, mapping=partial)["shapes"]
    assert len(kept) == sum(i["label"] == items[0]["label"] for i in items)


def test_task_auto_annotation_over_several_frames(detectors) -> None:
    """``POST /api/lambda/requests``: one call per frame with ``threshold``; CVAT converts masks to polygons."""
    meta = meta_of("coralseg")
    task_labels = task_labels_from_export("coralseg")
    total = 0
    for frame in range(3):
        payload = cvat_lambda.detector_payload({"task": 3, "frame": frame, "threshold": 1e-6, "mapping": None,
                                                "conv_mask_to_poly": True}, shifted_image(7 * frame))
        assert list(payload) == ["threshold", "image"]
        status, items = detectors["pth-yolo-coralsegv4"].call(payload)
        assert status == 200
        stored = cvat_lambda.convert_detections(meta, items, task_labels, frame=frame, conv_mask_to_poly=True)
        check_stored(meta, items, stored, task_labels, conv=True)
        assert all(s["frame"] == frame and s["type"] == "polygon" for s in stored["shapes"])
        total += len(stored["shapes"])
    assert total


# ---------------------------------------------------------------------------------- tracker

@pytest.fixture(scope="module")
def tracker_fn():
    torch.manual_seed(0)
    # the config's own 1024 input; with random weights masks cover the frame: open the scale guard
    return load_function(FUNCTIONS / "sam2_tracker", {**SAM2_ENV, "SAM2_TRACKER_MAX_SCALE_CHANGE": "1000"})


def shifted_image(dx: int) -> str:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(IMAGE), np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".png", np.roll(img, dx, axis=1))
    return base64.b64encode(buf.tobytes()).decode()


def call_through_cvat(fn, meta: dict, ui_request: dict, image: str, signer) -> dict:
    """``POST /api/lambda/functions/<tracker>``: CVAT builds the payload, calls, signs; JSON both ways."""
    payload = cvat_lambda.tracker_payload(meta, json.loads(json.dumps(ui_request)), image, signer)
    status, answer = fn.call(payload)
    assert status == 200, answer
    return json.loads(json.dumps(cvat_lambda.tracker_answer(meta, answer, signer)))


def assert_tracked(shape, kind: str) -> None:
    if shape is None:  # lost: CVAT's tracking functions answer null for the object
        return
    assert shape["type"] == kind
    points = shape["points"]
    if kind == "rectangle":
        x1, y1, x2, y2 = points
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
    elif kind == "polygon":
        assert len(points) >= 6 and len(points) % 2 == 0
    else:
        assert decode_mask(points, image_width=W, image_height=H).any()


def test_tracker_start_and_continue_through_cvat_signing(tracker_fn) -> None:
    meta = meta_of("sam2_tracker")
    assert meta["supported_shape_types"] == ["rectangle", "polygon", "mask"]
    signer = cvat_lambda.TimestampSigner("cvat-secret-key", f"cvat-tracker-state:{meta['id']}")
    disk = np.zeros((H, W), np.uint8)
    cv2.circle(disk, (220, 190), 85, 1, -1)
    shapes = [{"type": "rectangle", "points": [135.0, 105.0, 305.0, 275.0]},  # what the UI tracks
              {"type": "polygon", "points": [315.0, 205.0, 455.0, 205.0, 455.0, 340.0, 315.0, 340.0]},
              {"type": "mask", "points": encode_mask(disk.astype(bool))}]  # these two: through the API
    started = call_through_cvat(tracker_fn, meta, {"job": 1, "frame": 0, "shapes": shapes}, IMAGE, signer)
    assert started["shapes"] == shapes  # the first frame echoes the shapes
    assert all(isinstance(s, str) for s in started["states"])  # signed strings the UI keeps opaque
    states = started["states"]
    found = 0
    for frame in (1, 2):
        # the 2.73 UI continues with states only; CVAT pads shapes with nulls and unsigns the states
        payload = cvat_lambda.tracker_payload(meta, {"job": 1, "frame": frame, "states": states},
                                              shifted_image(3 * frame), signer)
        assert payload["shapes"] == [None] * 3 and all(isinstance(s, dict) for s in payload["states"])
        answer = call_through_cvat(tracker_fn, meta, {"job": 1, "frame": frame, "states": states},
                                   shifted_image(3 * frame), signer)
        for shape, kind in zip(answer["shapes"], ("rectangle", "polygon", "mask"), strict=True):
            assert_tracked(shape, kind)
            found += shape is not None
        states = answer["states"]
        assert all(len(s) <= 2560 + 64 for s in states)
    assert found, "with the scale guard open the random model finds the objects"
    # CVAT refuses what it did not sign, or what another function signed, before calling the function
    value, stamp, sig = states[0].rsplit(":", 2)
    forged = json.dumps({**json.loads(value), "box": [0, 0, 479, 359]}, separators=(",", ":"))
    with pytest.raises(cvat_lambda.BadSignature):
        cvat_lambda.tracker_payload(meta, {"frame": 3, "states": [f"{forged}:{stamp}:{sig}"]}, IMAGE, signer)
    other = cvat_lambda.TimestampSigner("cvat-secret-key", "cvat-tracker-state:pth-other-tracker")
    with pytest.raises(cvat_lambda.BadSignature):
        cvat_lambda.tracker_payload(meta, {"frame": 3, "states": states}, IMAGE, other)
    with pytest.raises(cvat_lambda.ValidationError, match="does not support shapes of type 'ellipse'"):
        cvat_lambda.tracker_payload(meta, {"frame": 0, "shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]},
                                    IMAGE, signer)


def test_tracker_also_speaks_the_legacy_rectangle_protocol(tracker_fn) -> None:
    """Without ``supported_shape_types`` (older CVAT, or the annotation removed) shapes are bare
    ``[x1, y1, x2, y2]`` lists both ways, and CVAT wraps the answers as rectangles."""
    config = yaml.safe_load((FUNCTIONS / "sam2_tracker" / "function.yaml").read_text())
    del config["metadata"]["annotations"]["supported_shape_types"]
    meta = cvat_lambda.function_metadata(copy.deepcopy(config))
    signer = cvat_lambda.TimestampSigner("k", f"cvat-tracker-state:{meta['id']}")
    rect = {"type": "rectangle", "points": [135.0, 105.0, 305.0, 275.0]}
    payload = cvat_lambda.tracker_payload(meta, {"frame": 0, "shapes": [rect]}, IMAGE, signer)
    assert payload["shapes"] == [rect["points"]]
    started = call_through_cvat(tracker_fn, meta, {"frame": 0, "shapes": [rect]}, IMAGE, signer)
    assert started["shapes"] == [rect]
    answer = call_through_cvat(tracker_fn, meta, {"frame": 1, "states": started["states"]}, shifted_image(4), signer)
    assert_tracked(answer["shapes"][0], "rectangle")

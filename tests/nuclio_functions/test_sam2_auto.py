"""``nuclio_functions/sam2_auto`` (CVAT detector) with a tiny randomly initialised SAM 2.

Quality thresholds are switched off through the environment (random weights predict low IoU), so
the generator returns masks whose CVAT detector encoding can be checked.
"""

from __future__ import annotations

import base64
import shutil

import cv2
import httpx
import numpy as np
import pytest

from tests.doubles.function_server import REPO, load_function, serve_in_thread

pytestmark = pytest.mark.functions
torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("sam2", reason="the functions' runtime (sam2) is not installed")

FN_DIR = REPO / "nuclio_functions" / "sam2_auto"
SHARED_DIR = REPO / "nuclio_functions" / "sam2"
W, H = 256, 192
ENV = {"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_WARMUP": "0", "SAM2_AUTO_LABEL": "coral",
       "SAM2_AUTO_POINTS_PER_SIDE": "4", "SAM2_AUTO_PRED_IOU_THRESH": "0",
       "SAM2_AUTO_STABILITY_SCORE_THRESH": "0", "SAM2_AUTO_BOX_NMS_THRESH": "0.95"}


def _image_b64() -> str:
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    cv2.circle(img, (90, 80), 40, (30, 240, 250), -1)
    cv2.rectangle(img, (160, 110), (230, 170), (200, 30, 20), -1)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


IMAGE = _image_b64()


@pytest.fixture(scope="module")
def fn():
    torch.manual_seed(0)
    return load_function(FN_DIR, ENV)


@pytest.fixture(scope="module")
def detected(fn):
    status, body = fn.call({"image": IMAGE})
    assert status == 200, body
    return body


def test_detector_items_follow_cvat_detector_format(detected) -> None:
    assert isinstance(detected, list) and detected, "thresholds are off: the generator must return masks"
    for item in detected:
        assert set(item) == {"label", "type", "points", "mask", "confidence"}
        assert item["label"] == "coral" and item["type"] == "mask" and isinstance(item["confidence"], float)
        xtl, ytl, xbr, ybr = item["mask"][-4:]
        assert 0 <= xtl <= xbr < W and 0 <= ytl <= ybr < H
        raw = np.array(item["mask"][:-4])
        assert raw.size == (xbr - xtl + 1) * (ybr - ytl + 1) and set(np.unique(raw)) <= {0, 1}
        crop = raw.reshape(ybr - ytl + 1, xbr - xtl + 1).astype(bool)
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()  # tight, inclusive
        pts = np.array(item["points"]).reshape(-1, 2)
        assert len(pts) >= 3 and cv2.contourArea(pts.astype(np.float32)) > 0
        assert xtl <= pts[:, 0].min() and pts[:, 0].max() <= xbr
        assert ytl <= pts[:, 1].min() and pts[:, 1].max() <= ybr
        assert crop[pts[:, 1] - ytl, pts[:, 0] - xtl].all()  # polygon vertices lie on the mask
    scores = [i["confidence"] for i in detected]
    assert scores == sorted(scores, reverse=True)


def test_threshold_filters_by_predicted_iou(fn, detected) -> None:
    cut = detected[0]["confidence"]
    status, body = fn.call({"image": IMAGE, "threshold": cut})
    assert status == 200 and body and all(i["confidence"] >= cut for i in body)


def test_max_masks_caps_the_answer(fn, detected, monkeypatch) -> None:
    monkeypatch.setattr(fn.context.user_data.detector, "max_masks", 1)
    status, body = fn.call({"image": IMAGE})
    assert status == 200 and len(body) == 1 and body[0] == detected[0]


@pytest.mark.parametrize(("payload", "reason"), [
    ({}, "'image' is missing"),
    ({"image": "@@"}, "not valid base64"),
    ({"image": base64.b64encode(b"no image here").decode()}, "could not be decoded"),
    ({"image": IMAGE, "threshold": "high"}, "'threshold' must be a finite number"),
    ({"image": IMAGE, "threshold": 2}, "'threshold' must be in [0, 1]"),
])
def test_malformed_requests_are_400(fn, payload, reason) -> None:
    status, body = fn.call(payload)
    assert status == 400 and reason in body["error"]


def test_generator_settings_from_env(fn) -> None:
    params = fn.module.generator_params({"SAM2_AUTO_POINTS_PER_SIDE": "8", "SAM2_AUTO_USE_M2M": "true"})
    assert params["points_per_side"] == 8 and params["use_m2m"] is True and params["pred_iou_thresh"] == 0.8
    with pytest.raises(ValueError, match="SAM2_AUTO_POINTS_PER_SIDE must be int"):
        fn.module.generator_params({"SAM2_AUTO_POINTS_PER_SIDE": "many"})
    with pytest.raises(ValueError, match="SAM2_AUTO_USE_M2M must be bool"):
        fn.module.generator_params({"SAM2_AUTO_USE_M2M": "maybe"})


def test_over_http(fn) -> None:
    with serve_in_thread(fn) as url:
        r = httpx.post(url, json={"image": IMAGE, "threshold": 1.0}, timeout=120)
        assert r.status_code == 200 and r.json() == []  # "nothing found" is an empty list, not an error
        r = httpx.post(url, json={"threshold": 0.5}, timeout=60)
        assert r.status_code == 400 and "'image' is missing" in r.json()["error"]


def test_deployed_layout_loads_its_own_copies(tmp_path) -> None:
    """What deploy.sh stages: main.py plus the shared model.py/protocol.py in one folder."""
    staged = tmp_path / "sam2_auto"
    staged.mkdir()
    shutil.copy(FN_DIR / "main.py", staged)
    for name in ("model.py", "protocol.py"):
        shutil.copy(SHARED_DIR / name, staged)
    loaded = load_function(staged, ENV)
    assert loaded.module.model.__file__ == str(staged / "model.py")
    assert loaded.module.protocol.__file__ == str(staged / "protocol.py")
    status, body = loaded.call({"image": IMAGE, "threshold": 7})
    assert status == 400 and "'threshold' must be in [0, 1]" in body["error"]


def test_missing_shared_modules_fail_loudly(tmp_path) -> None:
    lone = tmp_path / "nested" / "sam2_auto"
    lone.mkdir(parents=True)
    shutil.copy(FN_DIR / "main.py", lone)
    with pytest.raises(ImportError, match="deploy with nuclio_functions/sam2_auto/deploy.sh"):
        load_function(lone, ENV)

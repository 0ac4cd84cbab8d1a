"""``nuclio_functions/sam2_tracker`` with a tiny randomly initialised SAM 2 (hiera-tiny config).

Random weights make the masks meaningless (they tend to cover the whole frame), so these tests run
the function with ``SAM2_TRACKER_MAX_SCALE_CHANGE`` opened up wherever the found path is under test,
and check formats, state round trips, loss handling and errors. The tracking logic itself (motion,
mask prompt placement, state updates) is checked separately with a colour segmenter standing in for
SAM 2, whose right answer is known.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask

from tests.doubles.function_server import REPO, load_function, serve_in_thread

pytestmark = pytest.mark.functions
torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("sam2", reason="the functions' runtime (sam2) is not installed")

FN_DIR = REPO / "nuclio_functions" / "sam2_tracker"
W, H = 320, 240
ENV = {"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_WARMUP": "0", "SAM2_IMAGE_SIZE": "256",
       "SAM2_TRACKER_MAX_SCALE_CHANGE": "1000", "SAM2_CACHE_MB": "64"}


def frame(x: int, y: int = 120, radius: int = 30) -> np.ndarray:
    """A textured background with a yellow disk at (x, y) (RGB)."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([(xx * 3) % 90 + 40, (yy * 5) % 70 + 50, np.full_like(xx, 60)], -1).astype(np.uint8)
    cv2.circle(img, (x, y), radius, (250, 220, 30), -1)
    return img


def b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


@pytest.fixture(scope="module")
def fn():
    torch.manual_seed(0)
    return load_function(FN_DIR, ENV)


@pytest.fixture(scope="module")
def modules(fn):
    """The function's own ``wire`` and ``tracker`` modules (as its main.py imported them)."""
    return fn.module.wire, fn.module.tracker


def disk_rle(x: int, y: int = 120, radius: int = 30) -> list[int]:
    mask = np.zeros((H, W), np.uint8)
    cv2.circle(mask, (x, y), radius, 1, -1)
    return encode_mask(mask.astype(bool))


START = [{"type": "rectangle", "points": [70, 90, 130, 150]},
         {"type": "polygon", "points": [75, 95, 125, 95, 125, 145, 75, 145]},
         {"type": "mask", "points": disk_rle(100)},
         [70, 90, 130, 150]]


def assert_ui_shape(shape, kind: str, legacy: bool = False) -> None:
    """Decodes the way CVAT's UI and SDK decode a tracked shape of ``kind``."""
    if legacy:
        assert isinstance(shape, list) and len(shape) == 4
        points = shape
    else:
        assert set(shape) == {"type", "points"} and shape["type"] == kind
        points = shape["points"]
    assert all(isinstance(v, (int, float)) for v in points)
    if kind == "rectangle":
        x1, y1, x2, y2 = points
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
    elif kind == "polygon":
        pts = np.array(points).reshape(-1, 2)
        assert len(pts) >= 3 and pts.min() >= 0 and pts[:, 0].max() < W and pts[:, 1].max() < H
    else:
        mask = decode_mask(points, image_width=W, image_height=H)
        assert mask.any() and list(points[-4:]) == [int(np.flatnonzero(mask.any(0))[0]),
                                                   int(np.flatnonzero(mask.any(1))[0]),
                                                   int(np.flatnonzero(mask.any(0))[-1]),
                                                   int(np.flatnonzero(mask.any(1))[-1])]


def test_start_echoes_the_shapes_and_returns_compact_states(fn, modules) -> None:
    wire, _ = modules
    status, body = fn.call({"image": b64(frame(100)), "shapes": START})
    assert status == 200, body
    assert list(body) == ["shapes", "states"] and len(body["states"]) == 4
    assert body["shapes"] == [START[0], START[1], START[2], [70.0, 90.0, 130.0, 150.0]]
    for state, kind in zip(body["states"], ("rectangle", "polygon", "mask", "rectangle"), strict=True):
        assert len(json.dumps(state, separators=(",", ":"))) <= wire.MAX_STATE_BYTES
        st = wire.ObjectState.from_json(state, "s")
        assert st.type == kind and (st.width, st.height) == (W, H) and st.lost == 0 and st.frames == 0
        assert st.template is not None and st.template.shape == (256,)
    boxes = [wire.ObjectState.from_json(s, "s").box.tolist() for s in body["states"]]
    assert boxes[0] == boxes[3] == [70, 90, 130, 150]
    assert boxes[1] == [75, 95, 126, 146] and boxes[2] == [70, 90, 131, 151]  # the drawn pixels' extent


def test_continuing_answers_each_type_in_its_own_form_with_flat_state_size(fn, modules) -> None:
    wire, _ = modules
    status, body = fn.call({"image": b64(frame(100)), "shapes": START})
    sizes = []
    for step in range(1, 4):
        status, body = fn.call({"image": b64(frame(100 + 4 * step)), "shapes": [None] * 4, "states": body["states"]})
        assert status == 200, body
        for shape, kind, legacy in zip(body["shapes"], ("rectangle", "polygon", "mask", "rectangle"),
                                       (False, False, False, True), strict=True):
            if shape is not None:
                assert_ui_shape(shape, kind, legacy)
        states = [wire.ObjectState.from_json(s, "s") for s in body["states"]]
        assert [s.frames for s in states] == [step] * 4
        sizes.append(max(len(json.dumps(s, separators=(",", ":"))) for s in body["states"]))
    assert max(sizes) <= wire.MAX_STATE_BYTES
    assert any(s is not None for s in body["shapes"]), "with the scale guard open a random model finds something"


def test_a_lost_object_answers_null_and_is_looked_for_again(fn, modules, monkeypatch) -> None:
    wire, _ = modules
    tracker = fn.context.user_data.tracker
    status, body = fn.call({"image": b64(frame(100)), "shapes": [START[0]]})
    real = tracker.model.candidates

    def absent(*args, **kwargs):  # SAM 2 says the object is not there
        return replace(real(*args, **kwargs), object_logit=-3.0)

    monkeypatch.setattr(tracker.model, "candidates", absent)
    before = wire.ObjectState.from_json(body["states"][0], "s")
    for lost in (1, 2):
        status, body = fn.call({"image": b64(frame(104)), "states": body["states"]})
        assert status == 200 and body["shapes"] == [None]
        st = wire.ObjectState.from_json(body["states"][0], "s")
        assert st.lost == lost and st.frames == lost
        np.testing.assert_allclose(st.box, before.box, atol=0.1)  # coasts on its (zero) velocity
    monkeypatch.undo()
    status, body = fn.call({"image": b64(frame(104)), "states": body["states"]})
    assert status == 200 and body["shapes"][0] is not None
    assert wire.ObjectState.from_json(body["states"][0], "s").lost == 0


def test_default_guards_refuse_a_mask_that_jumps_in_size(fn, modules, monkeypatch) -> None:
    wire, _ = modules
    tracker = fn.context.user_data.tracker
    status, body = fn.call({"image": b64(frame(100)), "shapes": [{"type": "rectangle", "points": [90, 110, 110, 130]}]})
    big = np.zeros((H, W), bool)
    big[10:230, 10:310] = True  # 20 px box -> a 300 px mask
    real = tracker.model.candidates

    def whole_frame(*args, **kwargs):
        c = real(*args, **kwargs)
        return replace(c, masks=np.stack([big] * len(c.masks)), object_logit=5.0)

    monkeypatch.setattr(tracker.model, "candidates", whole_frame)
    monkeypatch.setattr(tracker, "config", replace(tracker.config, max_scale_change=2.0))
    status, out = fn.call({"image": b64(frame(102)), "states": body["states"]})
    assert status == 200 and out["shapes"] == [None]
    monkeypatch.setattr(tracker, "config", replace(tracker.config, max_scale_change=20.0))
    status, out = fn.call({"image": b64(frame(102)), "states": body["states"]})
    assert out["shapes"] == [{"type": "rectangle", "points": [10.0, 10.0, 310.0, 230.0]}]
    monkeypatch.setattr(tracker, "config", replace(tracker.config, min_similarity=1.0))  # nothing is that similar
    status, out = fn.call({"image": b64(frame(102)), "states": body["states"]})
    assert out["shapes"] == [None]


def test_one_encode_per_frame_whatever_the_number_of_objects(fn, monkeypatch) -> None:
    sam = fn.context.user_data.tracker.model.sam_model
    calls = []
    original = sam.forward_image
    monkeypatch.setattr(sam, "forward_image", lambda batch: calls.append(tuple(batch.shape)) or original(batch))
    image = b64(frame(150, 100))
    status, body = fn.call({"image": image, "shapes": [START[0]] * 5})
    assert status == 200 and calls == [(1, 3, 256, 256)]  # SAM2_IMAGE_SIZE=256
    status, body = fn.call({"image": image, "states": body["states"]})  # same frame again: cached
    assert status == 200 and len(calls) == 1


@pytest.mark.parametrize(("payload", "reason"), [
    ({"image": None, "shapes": [[1, 2, 30, 40]]}, "'image' is missing"),
    ({"image": "%%%", "shapes": [[1, 2, 30, 40]]}, "not valid base64"),
    ({"image": base64.b64encode(b"not an image").decode(), "shapes": [[1, 2, 30, 40]]}, "could not be decoded"),
    ({"shapes": [{"type": "rectangle", "points": [400, 10, 500, 50]}]}, "not inside the 320x240 image"),
    ({"shapes": [{"type": "polygon", "points": [-9, -9, -5, -9, -5, -5]}]}, "covers no pixel"),
    ({"shapes": [{"type": "mask", "points": [0, 5, 300, 230, 301, 231]}]}, "runs cover 5 pixels"),
    ({"shapes": [{"type": "ellipse", "points": [1, 2, 30, 40]}]}, "not supported"),
    ({"states": [{"v": 1}]}, "states[0].t"),
    ({"shapes": [None, None]}, "neither a shape nor a state"),
])
def test_bad_requests_are_400_with_a_reason(fn, payload, reason) -> None:
    body = {"image": b64(frame(100)), **payload}
    status, out = fn.call({k: v for k, v in body.items() if v is not None})
    assert status == 400, out
    assert reason in out["error"]


def test_unexpected_failure_is_500_and_the_worker_survives(fn, monkeypatch) -> None:
    tracker = fn.context.user_data.tracker
    monkeypatch.setattr(tracker.model, "candidates", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    status, out = fn.call({"image": b64(frame(100)), "shapes": [START[0]]})
    assert status == 500 and out == {"error": "RuntimeError: boom"}
    monkeypatch.undo()
    assert fn.call({"image": b64(frame(100)), "shapes": [START[0]]})[0] == 200


def test_over_http(fn) -> None:
    with serve_in_thread(fn) as url:
        r = httpx.post(url, json={"image": b64(frame(100)), "shapes": [START[0]]}, timeout=120)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        r2 = httpx.post(url, json={"image": b64(frame(103)), "shapes": [None], "states": r.json()["states"]},
                        timeout=120)
        assert r2.status_code == 200 and len(r2.json()["states"]) == 1
        r3 = httpx.post(url, content=b"{oops", headers={"content-type": "application/json"}, timeout=60)
        assert r3.status_code == 400 and "not valid JSON" in r3.json()["error"]


def test_configuration_errors_are_explicit(fn) -> None:
    build = fn.module.build_tracker
    log = fn.context.logger
    with pytest.raises(ValueError, match="SAM2_CHECKPOINT is not set"):
        build({}, log)
    with pytest.raises(ValueError, match="SAM2_TRACKER_MIN_SIMILARITY must be in"):
        build({"SAM2_CHECKPOINT": "", "SAM2_TRACKER_MIN_SIMILARITY": "2"}, log)
    with pytest.raises(ValueError, match="SAM2_TRACKER_MASK_PROMPT must be a boolean"):
        build({"SAM2_CHECKPOINT": "", "SAM2_TRACKER_MASK_PROMPT": "maybe"}, log)
    with pytest.raises(Exception, match="multiple of 64"):
        build({"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "cpu", "SAM2_IMAGE_SIZE": "500"}, log)
    with pytest.raises(Exception, match="checkpoint not found"):
        build({"SAM2_CHECKPOINT": "/nonexistent/sam2.pt"}, log)


# ---------------------------------------------------------------- the tracking logic, known answer

class ColourSegmenter:
    """Stands in for ``Sam2Model``: the "mask" for a box is the yellow pixels inside the box grown
    by half its size; the "features" are the image's colours. Its right answer is known, so the
    tracker's own logic (motion, prompt placement, state updates) can be checked."""

    model_id = "colour"
    embedding_size = 16
    low_res_size = 64

    def __init__(self) -> None:
        self.prompts: list[np.ndarray | None] = []

    def embed(self, image: np.ndarray):
        yellow = (image[..., 0] > 200) & (image[..., 1] > 180) & (image[..., 2] < 100)
        small = cv2.resize(image.astype(np.float32) / 255, (16, 16), interpolation=cv2.INTER_AREA)
        return SimpleNamespace(height=image.shape[0], width=image.shape[1], nbytes=1, yellow=yellow,
                               feats=small.transpose(2, 0, 1))

    def candidates(self, emb, box, mask_input=None, multimask=True, threshold=0.5):
        x1, y1, x2, y2 = box
        gx, gy = (x2 - x1) / 2, (y2 - y1) / 2
        window = np.zeros_like(emb.yellow)
        window[max(0, int(y1 - gy)):int(y2 + gy), max(0, int(x1 - gx)):int(x2 + gx)] = True
        mask = emb.yellow & window
        low = cv2.resize(mask.astype(np.float32), (self.low_res_size,) * 2) * 20 - 10
        self.prompts.append(mask_input)
        return SimpleNamespace(masks=mask[None], scores=np.array([0.9]), low_res=low[None],
                               object_logit=1.0 if mask.any() else -1.0)

    def pooled_features(self, emb, weights):
        return np.tensordot(emb.feats, weights, axes=([1, 2], [0, 1])) / weights.sum()


def test_tracking_logic_follows_a_fast_object_thanks_to_its_velocity(fn, modules) -> None:
    wire, tracker_mod = modules
    cache_mod = tracker_mod.cache_mod
    seg = ColourSegmenter()
    tracker = tracker_mod.Sam2Tracker(seg, cache_mod.EmbeddingCache(10**6, 60), tracker_mod.TrackerConfig())
    step = 22  # px per frame: more than half the 40 px box, so only a moving search window keeps it
    req = wire.parse_request({"shapes": [{"type": "rectangle", "points": [40, 100, 80, 140]}]}, wire.SHAPE_TYPES, 4)
    out = tracker.track(base64.b64decode(b64(frame(60, 120, 20))), req)
    centres = []
    for k in range(1, 10):
        req = wire.parse_request({"states": out["states"]}, wire.SHAPE_TYPES, 4)
        out = tracker.track(base64.b64decode(b64(frame(60 + step * k, 120, 20))), req)
        shape = out["shapes"][0]
        assert shape is not None, f"lost at frame {k}"
        x1, y1, x2, y2 = shape["points"]
        centres.append(((x1 + x2) / 2, (y1 + y2) / 2))
    truth = [(60 + step * k + 0.5, 120.5) for k in range(1, 10)]
    # the first step (no velocity yet) sees the disk only partly inside its search window ...
    np.testing.assert_allclose(centres[0], truth[0], atol=3.0)
    # ... from then on the box is moved by the learnt velocity and the whole disk is found
    np.testing.assert_allclose(centres[1:], truth[1:], atol=1.0)
    st = wire.ObjectState.from_json(out["states"][0], "s")
    assert abs(st.velocity[0] - step) < 2 and abs(st.velocity[1]) < 1
    # on the last frame the stored logits came back as a mask prompt where the disk had moved to
    prompt = seg.prompts[-1]
    assert prompt.shape == (64, 64)
    cols = np.flatnonzero((prompt > 0).any(0))
    predicted_centre = truth[-1][0] * 64 / W  # in low-resolution cells
    assert abs((cols[0] + cols[-1] + 1) / 2 - predicted_centre) < 2.5
    # without the motion model (velocity zeroed before every frame) the same segmenter lags behind
    still = tracker_mod.Sam2Tracker(seg, cache_mod.EmbeddingCache(10**6, 60), tracker_mod.TrackerConfig())
    out = still.track(base64.b64decode(b64(frame(60, 120, 20))), wire.parse_request(
        {"shapes": [{"type": "rectangle", "points": [40, 100, 80, 140]}]}, wire.SHAPE_TYPES, 4))
    errors = []
    for k in range(1, 10):
        st = wire.ObjectState.from_json(out["states"][0], "s")
        frozen = replace(st, velocity=np.zeros(2, np.float32)).to_json()
        out = still.track(base64.b64decode(b64(frame(60 + step * k, 120, 20))),
                          wire.parse_request({"states": [frozen]}, wire.SHAPE_TYPES, 4))
        shape = out["shapes"][0]
        errors.append(np.inf if shape is None else abs((shape["points"][0] + shape["points"][2]) / 2 - truth[k - 1][0]))
    assert np.mean(errors[1:]) > 5 * max(1.0, np.abs(np.array(centres)[1:, 0] - np.array(truth)[1:, 0]).mean())


def test_logits_crop_and_paste_are_inverse_on_the_same_box(modules) -> None:
    _, tracker_mod = modules
    side = 128
    low = np.full((side, side), -10.0, np.float32)
    cv2.circle(low, (40, 70), 12, 10.0, -1)
    box = np.array([28 * W / side, 58 * H / side, 53 * W / side, 83 * H / side], np.float32)
    crop = tracker_mod.crop_logits(low, box, W, H)
    pasted = tracker_mod.paste_logits(crop, box, W, H, side)
    inside = (slice(58, 83), slice(28, 53))
    assert ((pasted[inside] > 0) == (low[inside] > 0)).mean() > 0.95
    assert (pasted[:50] == tracker_mod.BACKGROUND_LOGIT).all()
    moved = tracker_mod.paste_logits(crop, box + np.array([40, 0, 40, 0], np.float32), W, H, side)
    cols = np.flatnonzero((moved > 0).any(0))
    assert abs((cols[0] + cols[-1]) / 2 - (40 + 40 * side / W)) <= 1.5  # the prompt moves with the box
    edge = tracker_mod.paste_logits(crop, np.array([W - 10, 0, W + 50, 40], np.float32), W, H, side)
    assert edge.shape == (side, side)  # a box over the edge is pasted clipped

"""``nuclio_functions/sam2`` end to end with a tiny randomly initialised SAM 2 (hiera-tiny config).

Through the Nuclio handler interface (``load_function``) and over HTTP (``serve_in_thread``,
``serve_function``). Random weights make the masks meaningless, so the checks are about formats,
caching, batching, ordering and errors, never about a particular mask.
"""

from __future__ import annotations

import base64
import json

import cv2
import httpx
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask

from tests.doubles.function_server import REPO, load_function, serve_function, serve_in_thread

pytestmark = pytest.mark.functions
torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
pytest.importorskip("sam2", reason="the functions' runtime (sam2) is not installed")

FN_DIR = REPO / "nuclio_functions" / "sam2"
W, H = 256, 192
ENV = {"SAM2_CHECKPOINT": "", "SAM2_CONFIG": "configs/sam2.1/sam2.1_hiera_t.yaml", "SAM2_DEVICE": "cpu",
       "SAM2_WARMUP": "1", "SAM2_CACHE_MB": "256", "SAM2_CACHE_TTL_S": "600"}


def make_image(variant: int = 0) -> np.ndarray:
    """A smooth scene (gradient, a disk, a bar); ``variant`` changes the bytes, hence the cache key."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 90 + variant)], axis=-1).astype(np.uint8)
    cv2.circle(img, (90, 80), 40, (250, 240, 30), -1)
    cv2.rectangle(img, (160, 110), (230, 170), (20, 30, 200), -1)
    return img


def b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


IMAGE = b64(make_image())


def interactor(image: str = IMAGE, pos=((90, 80),), neg=(), box=None, **extra) -> dict:
    return {"image": image, "pos_points": [list(p) for p in pos], "neg_points": [list(p) for p in neg],
            "obj_bbox": box, **extra}


@pytest.fixture(scope="module")
def fn():
    torch.manual_seed(0)
    return load_function(FN_DIR, ENV)


@pytest.fixture
def encoder_calls(fn, monkeypatch):
    """Counts real image-encoder runs (``SAM2Base.forward_image``) during a test."""
    sam = fn.context.user_data.service.model.sam_model
    calls = []
    original = sam.forward_image

    def counting(img_batch):
        calls.append(tuple(img_batch.shape))
        return original(img_batch)

    monkeypatch.setattr(sam, "forward_image", counting)
    return calls


def assert_cvat_mask(points: list, width: int = W, height: int = H) -> np.ndarray:
    """RLE + inclusive bbox that cvat-sdk decodes to the image size, tight around the mask."""
    assert all(isinstance(v, int) for v in points) and len(points) >= 5
    mask = decode_mask(points, image_width=width, image_height=height)
    assert mask.shape == (height, width) and mask.any()
    left, top, right, bottom = points[-4:]
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    assert (left, top, right, bottom) == (cols[0], rows[0], cols[-1], rows[-1])
    assert points == encode_mask(mask)
    return mask


def assert_polygons(polys: list, width: int = W, height: int = H) -> None:
    for poly in polys:
        pts = np.array(poly).reshape(-1, 2)
        assert len(poly) % 2 == 0 and len(pts) >= 3
        assert pts.min() >= 0 and pts[:, 0].max() < width and pts[:, 1].max() < height
        assert cv2.contourArea(pts.astype(np.float32)) > 0


# -------------------------------------------------------------------------------------- interactor

def test_interactor_point_returns_one_cvat_mask_shape(fn) -> None:
    status, body = fn.call(interactor())
    assert status == 200, body
    assert list(body) == ["shapes"] and len(body["shapes"]) == 1
    shape = body["shapes"][0]
    assert {k: v for k, v in shape.items() if k != "points"} == {
        "type": "mask", "group": 0, "source": "semi-auto", "attributes": [], "occluded": False, "rotation": 0}
    assert_cvat_mask(shape["points"])


@pytest.mark.parametrize("prompt", [
    {"pos": (), "box": [[60, 40], [130, 120]]},  # box only
    {"pos": (), "neg": ((5, 5),), "box": [[130, 120], [60, 40]]},  # box + negative point, corners swapped
    {"pos": ((90, 80), (100, 90)), "neg": ((200, 20),)},  # points only
    {"pos": ((0, 0), (W, H))},  # the image's far edge is inside
])
def test_interactor_accepts_box_only_points_only_and_both(fn, prompt) -> None:
    status, body = fn.call(interactor(**prompt))
    assert status == 200, body
    for shape in body["shapes"]:
        assert_cvat_mask(shape["points"])


def test_interactor_threshold_near_one_gives_no_shape_not_an_error(fn) -> None:
    status, low = fn.call(interactor(threshold=0.01))
    assert status == 200
    status, high = fn.call(interactor(threshold=0.999999))
    assert status == 200
    low_area = assert_cvat_mask(low["shapes"][0]["points"]).sum()
    high_area = sum(assert_cvat_mask(s["points"]).sum() for s in high["shapes"])
    assert high_area < low_area  # a higher probability threshold can only shrink the mask


def test_second_click_on_same_image_is_a_cache_hit_without_encoder(fn, encoder_calls) -> None:
    cache = fn.context.user_data.service.cache
    image = b64(make_image(variant=1))
    before = cache.stats()
    assert fn.call(interactor(image))[0] == 200
    assert encoder_calls == [(1, 3, 1024, 1024)]  # one encode, always at 1024²
    assert fn.call(interactor(image, pos=((180, 140),), neg=((90, 80),)))[0] == 200
    assert fn.call(interactor(image, pos=(), box=[[150, 100], [240, 180]]))[0] == 200
    assert len(encoder_calls) == 1
    after = cache.stats()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)
    # another image misses again
    assert fn.call(interactor(b64(make_image(variant=2))))[0] == 200
    assert len(encoder_calls) == 2


# ------------------------------------------------------------------------------------------- batch

def test_batch_returns_one_result_per_prompt_in_order(fn, encoder_calls) -> None:
    image = b64(make_image(variant=3))
    prompts = [
        {"bbox": [60, 40, 130, 120]},
        {"pos_points": [[90, 80]], "neg_points": [[200, 140]]},
        {"bbox": [150, 100, 240, 180], "pos_points": [[190, 140]]},
        {"pos_points": [[W + 50, 10]]},  # outside the image: an error for this prompt only
        {"bbox": [10, 10, 60, 50]},
        {"pos_points": [[20, 170]], "neg_points": [[30, 30]]},
    ]
    status, body = fn.call({"image": image, "prompts": prompts, "multimask_output": False})
    assert status == 200, body
    results = body["results"]
    assert len(results) == len(prompts)
    assert len(encoder_calls) == 1  # one encode for the whole request
    assert "outside the 256x192 image" in results[3]["error"] and "prompts[3]" in results[3]["error"]
    for i, r in enumerate(results):
        if i == 3:
            continue
        assert set(r) == {"mask", "polygons", "score", "bbox"}
        mask = assert_cvat_mask(r["mask"])
        assert r["bbox"] == r["mask"][-4:] and isinstance(r["score"], float)
        assert_polygons(r["polygons"])
        if r["polygons"]:  # every polygon vertex lies on or next to the mask
            pts = np.array(r["polygons"][0]).reshape(-1, 2)
            assert mask[pts[:, 1], pts[:, 0]].mean() > 0.5

    # Batched decoding gives the same masks as one prompt per request (same embedding, cache hit).
    for i in (0, 1, 2, 4, 5):
        status, single = fn.call({"image": image, "prompts": [prompts[i]]})
        assert status == 200
        a = decode_mask(results[i]["mask"], image_width=W, image_height=H)
        b = decode_mask(single["results"][0]["mask"], image_width=W, image_height=H)
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.99, i
        assert abs(single["results"][0]["score"] - results[i]["score"]) < 1e-3
    assert len(encoder_calls) == 1


def test_batch_groups_prompts_by_shape_and_chunks_decoder_calls(fn, monkeypatch) -> None:
    model = fn.context.user_data.service.model
    assert model.decoder_batch == 4  # the CPU default
    calls = []
    original = model.predictor._predict

    def counting(coords, labels, boxes, *args, **kwargs):
        n = len(boxes) if boxes is not None else len(coords)
        calls.append((boxes is not None, 0 if coords is None else coords.shape[1], n))
        return original(coords, labels, boxes, *args, **kwargs)

    monkeypatch.setattr(model.predictor, "_predict", counting)
    monkeypatch.setattr(model, "decoder_batch", 2)
    prompts = [{"bbox": [10 + i, 10, 80, 90]} for i in range(3)] + [{"pos_points": [[50 + i, 60]]} for i in range(2)]
    status, body = fn.call({"image": IMAGE, "prompts": prompts})
    assert status == 200 and all("mask" in r for r in body["results"])
    assert sorted(calls) == [(False, 1, 2), (True, 0, 1), (True, 0, 2)]


def test_batch_multimask_picks_a_mask_per_prompt(fn) -> None:
    status, body = fn.call({"image": IMAGE, "prompts": [{"pos_points": [[90, 80]]}] * 3,
                            "multimask_output": True})
    assert status == 200 and len(body["results"]) == 3
    assert body["results"][0] == body["results"][1] == body["results"][2]


# ------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(("payload", "reason"), [
    ({"pos_points": [[1, 1]], "neg_points": []}, "'image' is missing"),
    (interactor(image="%%%"), "not valid base64"),
    (interactor(image=base64.b64encode(b"GIF89a but not really").decode()), "could not be decoded"),
    (interactor(pos=((W + 1, 5),)), "outside the 256x192 image"),
    (interactor(pos=(), box=[[-5, 0], [50, 50]]), "outside the 256x192 image"),
    ({"image": IMAGE, "pos_points": [[1, 1]]}, "'neg_points' is missing"),
    ({"image": IMAGE, "pos_points": {"x": 1}, "neg_points": []}, "list of [x, y] pairs"),
    ({"image": IMAGE, "prompts": []}, "'prompts' is empty"),
    ({"image": IMAGE, "prompts": {"bbox": [1, 2, 3, 4]}}, "'prompts' must be a list"),
    ({"image": IMAGE, "prompts": [{"bbox": "1,2,3,4"}]}, "prompts[0].bbox"),
    ([1, 2, 3], "must be a JSON object"),
])
def test_malformed_requests_are_400_with_a_reason(fn, payload, reason) -> None:
    status, body = fn.call(payload)
    assert status == 400
    assert reason in body["error"]


def test_non_json_body_is_400(fn) -> None:
    status, ctype, data = fn.call_raw(b"image=abc", content_type="application/x-www-form-urlencoded")
    assert status == 400 and ctype == "application/json"
    assert "not valid JSON" in json.loads(data)["error"]


def test_unexpected_failure_is_500_and_the_worker_survives(fn, monkeypatch) -> None:
    model = fn.context.user_data.service.model

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(model, "predict_many", boom)
    status, body = fn.call(interactor())
    assert status == 500 and body == {"error": "RuntimeError: CUDA out of memory (simulated)"}
    monkeypatch.undo()
    assert fn.call(interactor())[0] == 200


def test_configuration_errors_are_explicit(fn) -> None:
    build = fn.module.build_service
    with pytest.raises(ValueError, match="SAM2_CHECKPOINT is not set"):
        build({}, fn.context.logger)
    with pytest.raises(Exception, match="checkpoint not found"):
        build({"SAM2_CHECKPOINT": "/nonexistent/sam2.pt"}, fn.context.logger)
    with pytest.raises(Exception, match="device must be auto, cpu or cuda"):
        build({"SAM2_CHECKPOINT": "", "SAM2_DEVICE": "tpu"}, fn.context.logger)


# -------------------------------------------------------------------------------------------- HTTP

def test_over_http_in_thread(fn) -> None:
    with serve_in_thread(fn) as url:
        r = httpx.post(url, json=interactor(), timeout=60)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert_cvat_mask(r.json()["shapes"][0]["points"])
        r = httpx.post(url, json={"image": IMAGE, "prompts": [{"bbox": [60, 40, 130, 120]}]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 1
        r = httpx.post(url, json={"image": IMAGE}, timeout=60)
        assert r.status_code == 400 and "'pos_points' is missing" in r.json()["error"]


def test_over_http_in_a_subprocess_like_nuclio() -> None:
    env = {**ENV, "SAM2_WARMUP": "0"}
    with serve_function(FN_DIR, env, max_workers=1, startup_timeout=120) as url:
        r = httpx.post(url, json=interactor(pos=(), box=[[60, 40], [130, 120]]), timeout=120)
        assert r.status_code == 200, r.text
        assert_cvat_mask(r.json()["shapes"][0]["points"])
        r = httpx.post(url, content=b"{broken", headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_model_guards_and_embedding_size(fn) -> None:
    service = fn.context.user_data.service
    emb, _ = service.embedding(base64.b64decode(IMAGE))
    assert (emb.height, emb.width) == (H, W)
    assert emb.nbytes == 16 * 1024 * 1024  # hiera: 256x64² + 32x256² + 64x128² floats
    none = np.zeros((0, 2), np.float32)
    with pytest.raises(ValueError, match="neither points nor a box"):
        service.model.predict_many(emb, [(none, none, None)])
    with pytest.raises(ValueError, match="threshold"):
        service.model.predict(emb, np.array([[5.0, 5.0]]), none, None, threshold=1.0)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        service.model.embed(np.zeros((4, 4), np.uint8))

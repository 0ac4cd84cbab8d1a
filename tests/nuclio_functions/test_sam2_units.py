"""SAM 2 functions without the model: embedding cache, CVAT mask encoders, polygons, request checks.

Needs only numpy/OpenCV/cvat-sdk (no torch), so it runs outside the functions' runtime too.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sys
import threading
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import yaml
from cvat_sdk.masks import decode_mask, encode_mask

SAM2_DIR = Path(__file__).resolve().parents[2] / "nuclio_functions" / "sam2"


def _load(name: str) -> ModuleType:
    """Import a module of the function dir under a private name (no sys.path change)."""
    spec = importlib.util.spec_from_file_location(f"test_sam2_units_{name}", SAM2_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cache_mod = _load("cache")
protocol = _load("protocol")
RequestError = protocol.RequestError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


# ------------------------------------------------------------------------------------------- cache

def test_cache_counts_hits_and_misses() -> None:
    c = cache_mod.EmbeddingCache(max_bytes=100, ttl_s=60)
    assert c.get("a") is None
    assert c.put("a", "A", 10)
    assert c.get("a") == "A"
    assert c.get("a") == "A"
    s = c.stats()
    assert (s.hits, s.misses, s.entries, s.bytes) == (2, 1, 1, 10)


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    c = cache_mod.EmbeddingCache(max_bytes=30, ttl_s=60)
    for k in "abc":
        c.put(k, k.upper(), 10)
    assert c.get("a") == "A"  # a is now most recent; b is the LRU entry
    c.put("d", "D", 10)
    assert "b" not in c and all(k in c for k in "acd")
    c.put("e", "E", 20)  # needs two slots: c then a go (LRU order after the get of a)
    assert "c" not in c and "a" not in c and "d" in c and "e" in c
    s = c.stats()
    assert s.bytes == 30 and s.evictions == 3


def test_cache_expires_after_ttl() -> None:
    clock = FakeClock()
    c = cache_mod.EmbeddingCache(max_bytes=100, ttl_s=10, clock=clock)
    c.put("a", "A", 10)
    clock.now += 9.5
    assert c.get("a") == "A"
    clock.now += 1.0  # 10.5 s after it was stored: expired even though it was just read
    assert c.get("a") is None
    assert "a" not in c and c.stats().bytes == 0


def test_cache_put_drops_expired_entries_first() -> None:
    clock = FakeClock()
    c = cache_mod.EmbeddingCache(max_bytes=20, ttl_s=10, clock=clock)
    c.put("old", 1, 10)
    clock.now += 5
    c.put("mid", 2, 10)
    clock.now += 6  # "old" expired, "mid" not
    c.put("new", 3, 10)
    assert "old" not in c and "mid" in c and "new" in c


def test_cache_refuses_oversized_and_zero_budget() -> None:
    c = cache_mod.EmbeddingCache(max_bytes=10, ttl_s=10)
    assert not c.put("big", "X", 11)
    assert "big" not in c
    off = cache_mod.EmbeddingCache(max_bytes=0, ttl_s=10)
    value, hit = off.get_or_compute("k", lambda: "v", lambda v: 1)
    assert (value, hit) == ("v", False)
    assert off.get_or_compute("k", lambda: "w", lambda v: 1) == ("w", False)


def test_cache_get_or_compute_computes_once() -> None:
    c = cache_mod.EmbeddingCache(max_bytes=100, ttl_s=10)
    calls = []
    for _ in range(3):
        value, hit = c.get_or_compute("k", lambda: calls.append(1) or "v", lambda v: 5)
        assert value == "v"
    assert len(calls) == 1 and c.stats().hits == 2


def test_cache_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        cache_mod.EmbeddingCache(max_bytes=-1, ttl_s=10)
    with pytest.raises(ValueError, match="ttl_s"):
        cache_mod.EmbeddingCache(max_bytes=1, ttl_s=0)


def test_cache_is_consistent_under_threads() -> None:
    c = cache_mod.EmbeddingCache(max_bytes=50, ttl_s=60)

    def work(tid: int) -> None:
        for i in range(300):
            key = f"{(tid * 7 + i) % 13}"
            if c.get(key) is None:
                c.put(key, i, 1 + i % 7)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = c.stats()
    assert s.hits + s.misses == 1200
    assert 0 < s.bytes <= 50
    assert s.bytes == sum(n for _, n, _ in c._items.values())


def test_image_key_depends_on_bytes_and_model() -> None:
    k = cache_mod.image_key(b"img", "tiny|ckpt")
    assert k == cache_mod.image_key(b"img", "tiny|ckpt")
    assert k != cache_mod.image_key(b"img2", "tiny|ckpt")
    assert k != cache_mod.image_key(b"img", "large|ckpt")


# ----------------------------------------------------------------------------------- mask encoders

def test_rle_matches_the_contract_example() -> None:
    m = np.zeros((4, 6), bool)
    m[1:3, 2:5] = True
    assert protocol.encode_rle(m) == [0, 6, 2, 1, 4, 2]


@pytest.mark.parametrize("seed", range(20))
def test_rle_equals_cvat_sdk_and_round_trips(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, size=2)
    m = rng.random((h, w)) < rng.uniform(0.05, 0.95)
    if not m.any():
        m[rng.integers(h), rng.integers(w)] = True
    ours = protocol.encode_rle(m)
    assert ours == encode_mask(m)
    assert np.array_equal(decode_mask(ours, image_width=int(w), image_height=int(h)), m)
    left, top, right, bottom = ours[-4:]
    assert m[:, left].any() and m[:, right].any() and m[top].any() and m[bottom].any()  # inclusive, tight


def test_raw_crop_is_flat_zero_one_plus_inclusive_bbox() -> None:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    m[4, 3] = False
    raw = protocol.encode_raw_crop(m)
    xtl, ytl, xbr, ybr = raw[-4:]
    assert (xtl, ytl, xbr, ybr) == (3, 2, 8, 4)
    crop = np.array(raw[:-4], np.uint8).reshape(ybr - ytl + 1, xbr - xtl + 1)
    assert set(np.unique(crop)) <= {0, 1}
    rebuilt = np.zeros_like(m)
    rebuilt[ytl:ybr + 1, xtl:xbr + 1] = crop.astype(bool)
    assert np.array_equal(rebuilt, m)


def test_encoders_refuse_empty_masks() -> None:
    empty = np.zeros((5, 5), bool)
    with pytest.raises(ValueError, match="empty"):
        protocol.encode_rle(empty)
    with pytest.raises(ValueError, match="empty"):
        protocol.encode_raw_crop(empty)
    assert protocol.mask_bbox(empty) is None


def test_polygons_outer_contours_largest_first() -> None:
    m = np.zeros((100, 120), bool)
    m[10:60, 10:70] = True
    m[30:40, 30:40] = False  # a hole: only the outer contour is kept
    m[80:90, 90:100] = True
    m[5, 110] = True  # one pixel: zero area, dropped
    polys = protocol.mask_to_polygons(m, epsilon=1.0)
    assert len(polys) == 2
    big, small = (np.array(p).reshape(-1, 2) for p in polys)
    assert len(big) == 4 and len(small) == 4
    assert cv2.contourArea(big.astype(np.float32)) > cv2.contourArea(small.astype(np.float32))
    assert big[:, 0].min() == 10 and big[:, 0].max() == 69 and big[:, 1].min() == 10 and big[:, 1].max() == 59


def test_polygons_are_simplified_by_epsilon() -> None:
    m = np.zeros((200, 200), np.uint8)
    cv2.circle(m, (100, 100), 80, 1, -1)
    fine = protocol.mask_to_polygons(m.astype(bool), epsilon=0.5)[0]
    coarse = protocol.mask_to_polygons(m.astype(bool), epsilon=2.5)[0]
    assert 6 <= len(coarse) < len(fine)
    assert len(coarse) % 2 == 0


def test_batch_result_and_detector_item_shapes() -> None:
    m = np.zeros((30, 40), bool)
    m[5:20, 8:30] = True
    r = protocol.batch_result(m, 0.7, 2.5)
    assert r["bbox"] == [8, 5, 29, 19] and r["mask"][-4:] == r["bbox"] and r["score"] == 0.7
    assert np.array_equal(decode_mask(r["mask"], image_width=40, image_height=30), m)
    assert protocol.batch_result(np.zeros_like(m), 0.7, 2.5) == {
        "error": "empty mask: the model found no object for this prompt"}
    item = protocol.detector_item(m, 0.9, "object", 2.5)
    assert item["label"] == "object" and item["type"] == "mask" and item["confidence"] == 0.9
    assert item["points"] == r["polygons"][0] and item["mask"] == protocol.encode_raw_crop(m)
    assert protocol.detector_item(np.zeros_like(m), 0.9, "object", 2.5) is None
    shape = protocol.interactor_shape(m)
    assert shape == {"type": "mask", "points": protocol.encode_rle(m), "group": 0, "source": "semi-auto",
                     "attributes": [], "occluded": False, "rotation": 0}


# -------------------------------------------------------------------------------------- requests

IMG = np.zeros((20, 30, 3), np.uint8)
B64 = _png_b64(IMG)


def test_interactor_request_accepts_points_box_and_both() -> None:
    r = protocol.parse_interactor({"image": B64, "pos_points": [[1, 2]], "neg_points": [], "obj_bbox": None})
    assert r.prompt.pos.tolist() == [[1, 2]] and r.prompt.box is None and r.threshold == 0.5
    r = protocol.parse_interactor({"image": B64, "pos_points": [], "neg_points": [[3, 4]],
                                   "obj_bbox": [[10, 12], [2, 3]], "threshold": 0.7})
    assert r.prompt.box.tolist() == [2, 3, 10, 12] and r.prompt.neg.tolist() == [[3, 4]]
    assert r.threshold == 0.7
    assert protocol.decode_image(r.image).shape == (20, 30, 3)


@pytest.mark.parametrize("empty_box", [None, []])
def test_interactor_request_empty_parts_are_absent(empty_box) -> None:
    # CVAT 2.73's UI sends "obj_bbox": [] whenever no box is drawn; CVAT drops only None values
    r = protocol.parse_interactor({"image": B64, "pos_points": [[1, 2]], "neg_points": [], "obj_bbox": empty_box})
    assert r.prompt.box is None and r.prompt.pos.tolist() == [[1, 2]] and not r.prompt.is_empty
    # min_pos_points: 0 lets the UI send a lone negative click (or nothing): a valid, empty prompt
    for neg in ([[3, 4]], []):
        r = protocol.parse_interactor({"image": B64, "pos_points": [], "neg_points": neg, "obj_bbox": empty_box})
        assert r.prompt.is_empty and r.prompt.neg.tolist() == neg
    box = protocol.parse_interactor({"image": B64, "pos_points": [], "neg_points": [], "obj_bbox": [[1, 1], [5, 5]]})
    assert not box.prompt.is_empty


def test_batch_request_parses_prompts() -> None:
    r = protocol.parse_batch({"image": B64, "prompts": [{"bbox": [1, 2, 5, 6]}, {"pos_points": [[1, 1]]}],
                              "multimask_output": True}, max_prompts=10)
    assert len(r.prompts) == 2 and r.multimask and r.prompts[0].box.tolist() == [1, 2, 5, 6]
    assert len(r.prompts[1].neg) == 0


@pytest.mark.parametrize(("body", "reason"), [
    ({}, "'image' is missing"),
    ({"image": 5, "pos_points": [], "neg_points": []}, "base64 string"),
    ({"image": "not base64!!", "pos_points": [], "neg_points": []}, "not valid base64"),
    ({"image": B64, "neg_points": []}, "'pos_points' is missing"),
    ({"image": B64, "pos_points": [[1, 1]]}, "'neg_points' is missing"),
    ({"image": B64, "pos_points": "1,2", "neg_points": []}, "list of [x, y] pairs"),
    ({"image": B64, "pos_points": [[1]], "neg_points": []}, "pos_points[0]' must be an [x, y] pair"),
    ({"image": B64, "pos_points": [["a", 1]], "neg_points": []}, "finite number"),
    ({"image": B64, "pos_points": [[True, 1]], "neg_points": []}, "finite number"),
    ({"image": B64, "pos_points": [], "neg_points": [], "obj_bbox": [[1, 1], [1, 5]]}, "degenerate"),
    ({"image": B64, "pos_points": [], "neg_points": [], "obj_bbox": [[]]}, "obj_bbox"),
    ({"image": B64, "pos_points": [], "neg_points": [], "obj_bbox": {}}, "obj_bbox"),
    ({"image": B64, "pos_points": [], "neg_points": [], "obj_bbox": [1, 2, 3]}, "obj_bbox"),
    ({"image": B64, "pos_points": [[1, 1]], "neg_points": [], "threshold": 1.5},
     "'threshold' must be in (0, 1)"),
])
def test_interactor_request_errors(body: dict, reason: str) -> None:
    with pytest.raises(RequestError) as err:
        protocol.parse_interactor(body)
    assert reason in str(err.value)


@pytest.mark.parametrize(("body", "reason"), [
    ({"image": B64}, "'prompts' must be a list"),
    ({"image": B64, "prompts": []}, "'prompts' is empty"),
    ({"image": B64, "prompts": [{"bbox": [1, 1, 5, 5]}] * 3}, "too many prompts: 3 > 2"),
    ({"image": B64, "prompts": ["box"]}, "'prompts[0]' must be an object"),
    ({"image": B64, "prompts": [{"box": [1, 1, 5, 5]}]}, "unknown keys ['box']"),
    ({"image": B64, "prompts": [{"bbox": None, "pos_points": []}]}, "at least one positive point or a box"),
    ({"image": B64, "prompts": [{"bbox": [], "neg_points": [[1, 1]]}]}, "at least one positive point or a box"),
    ({"image": B64, "prompts": [{"bbox": [1, 1, 5, 5]}], "multimask_output": "yes"}, "'multimask_output'"),
])
def test_batch_request_errors(body: dict, reason: str) -> None:
    with pytest.raises(RequestError) as err:
        protocol.parse_batch(body, max_prompts=2)
    assert reason in str(err.value)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty request body"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_body_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(RequestError, match=None) as err:
        protocol.parse_body(raw)
    assert reason in str(err.value)


def test_undecodable_image_is_a_request_error() -> None:
    with pytest.raises(RequestError, match="could not be decoded"):
        protocol.decode_image(b"definitely not an image")


def test_detector_threshold_range() -> None:
    assert protocol.parse_detector({"image": B64}).threshold == 0.0
    assert protocol.parse_detector({"image": B64, "threshold": 0.4}).threshold == 0.4
    with pytest.raises(RequestError, match="threshold"):
        protocol.parse_detector({"image": B64, "threshold": -0.1})


def test_check_prompt_bounds() -> None:
    p = protocol.Prompt(np.array([[30.0, 20.0]]), np.zeros((0, 2)), np.array([0, 0, 30, 20], np.float32))
    protocol.check_prompt(p, width=30, height=20)  # the far edge itself is inside
    with pytest.raises(RequestError, match=r"pos_points\[0\] = \[31, 20\] is outside the 30x20 image"):
        protocol.check_prompt(p._replace(pos=np.array([[31.0, 20.0]])), width=30, height=20)
    with pytest.raises(RequestError, match="neg_points"):
        protocol.check_prompt(p._replace(neg=np.array([[-1.0, 2.0]])), width=30, height=20)
    with pytest.raises(RequestError, match="box"):
        protocol.check_prompt(p._replace(box=np.array([0, 0, 31, 20], np.float32)), width=30, height=20)


# ---------------------------------------------------------------------------- function.yaml files

FUNCTIONS_DIR = SAM2_DIR.parent
YAMLS = [("sam2", "function.yaml"), ("sam2", "function-gpu.yaml"),
         ("sam2_auto", "function.yaml"), ("sam2_auto", "function-gpu.yaml")]


@pytest.mark.parametrize(("folder", "file"), YAMLS)
def test_function_yaml_is_what_cvat_and_nuclio_expect(folder: str, file: str) -> None:
    doc = yaml.safe_load((FUNCTIONS_DIR / folder / file).read_text())
    meta, spec = doc["metadata"], doc["spec"]
    ann = meta["annotations"]
    gpu = file == "function-gpu.yaml"
    assert meta["namespace"] == "cvat"
    assert spec["handler"] == "main:handler" and spec["runtime"] == "python:3.10"
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["SAM2_CONFIG"].startswith("configs/sam2.1/sam2.1_hiera_") and env["SAM2_CHECKPOINT"]
    assert env["SAM2_DEVICE"] == ("cuda" if gpu else "cpu")
    trigger = spec["triggers"]["myHttpTrigger"]
    assert trigger["kind"] == "http" and trigger["maxWorkers"] == (1 if gpu else 2)
    assert trigger["workerAvailabilityTimeoutMilliseconds"] == 10000
    assert trigger["attributes"]["maxRequestBodySize"] == 33554432
    assert spec["platform"]["attributes"]["network"] == "cvat_cvat"
    assert (spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1) == gpu
    directives = " ".join(d["value"] for d in spec["build"]["directives"]["preCopy"])
    size = env["SAM2_CONFIG"].rsplit("_", 1)[1].removesuffix(".yaml")  # t / s / b+ / l
    ckpt = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}[size]
    assert f"dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{ckpt}.pt" in directives
    assert "--no-build-isolation sam2==1.1.0" in directives and env["SAM2_CHECKPOINT"] in directives
    if folder == "sam2":
        assert meta["name"] == "pth-sam2" and ann["type"] == "interactor" and int(ann["version"]) == 2
        # box-only and points-only: no positive point needed, a box may start the interaction
        assert int(ann["min_pos_points"]) == 0 and int(ann["min_neg_points"]) == 0
        assert ann["startswith_box_optional"] and "startswith_box" not in ann
        assert json.loads(ann["spec"]) == []
        assert spec["eventTimeout"] == ("30s" if gpu else "120s")
    else:
        assert meta["name"] == "pth-sam2-auto" and ann["type"] == "detector"
        labels = json.loads(ann["spec"])
        assert [lb["name"] for lb in labels] == [env["SAM2_AUTO_LABEL"]] and labels[0]["type"] == "mask"


def test_auto_deploy_script_copies_every_shared_module() -> None:
    main = (FUNCTIONS_DIR / "sam2_auto" / "main.py").read_text()
    loaded = set(re.findall(r'load_shared\("(\w+)"\)', main))
    script = (FUNCTIONS_DIR / "sam2_auto" / "deploy.sh").read_text()
    copied = set(re.findall(r"\.\./sam2/(\w+)\.py", script))
    assert loaded == copied == {"model", "protocol"}
    for name in loaded:  # the shared modules must stay loadable alone (no sibling imports)
        text = (SAM2_DIR / f"{name}.py").read_text()
        assert not re.search(r"^(from|import) (cache|model|protocol|service)\b", text, re.M), name


def test_decode_image_gives_rgb_and_converts_grey() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR order
    rgb = protocol.decode_image(base64.b64decode(_png_b64(bgr)))
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 200]
    grey = protocol.decode_image(base64.b64decode(_png_b64(np.full((3, 2), 7, np.uint8))))
    assert grey.shape == (3, 2, 3) and grey[0, 0].tolist() == [7, 7, 7]


def test_decode_image_applies_exif_orientation() -> None:
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the EXIF test image")
    buf = io.BytesIO()
    exif = pil.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    pil.new("RGB", (40, 20), (255, 0, 0)).save(buf, format="JPEG", exif=exif)
    assert protocol.decode_image(buf.getvalue()).shape == (40, 20, 3)  # shown (and annotated) upright

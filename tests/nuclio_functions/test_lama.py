"""The ``pth-lama`` Nuclio function with small TorchScript inpainters built here.

A deterministic "mean fill" inpainter (it also insists on inputs padded to a multiple of 8) lets the
tests assert exactly which pixels change; a random conv net checks shapes and odd sizes.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.functions

torch = pytest.importorskip("torch", reason="the functions' runtime (torch) is not installed")
cv2 = pytest.importorskip("cv2")
httpx = pytest.importorskip("httpx")

from tests.doubles.function_server import load_function, serve_in_thread  # noqa: E402

LAMA = Path(__file__).resolve().parents[2] / "nuclio_functions" / "lama"
BACKGROUND = (40, 150, 210)  # BGR
LINE = (255, 0, 255)


class MeanFill(torch.nn.Module):
    """Fills the hole with the per-channel mean of the known pixels; refuses unpadded inputs."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if image.shape[2] % 8 != 0 or image.shape[3] % 8 != 0:
            raise RuntimeError("input not padded to a multiple of 8")
        if mask.shape[1] != 1 or image.shape[1] != 3:
            raise RuntimeError("expected image [1,3,H,W] and mask [1,1,H,W]")
        known = 1.0 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True)
        return image * known + mean * mask


class TinyNet(torch.nn.Module):
    """A random two-layer conv net with LaMa's signature."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Sigmoid())

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image * (1 - mask), mask], dim=1))


class WrongShape(torch.nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image[:, :, :8, :8]


def script(module: torch.nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lama_models")
    return {"mean": script(MeanFill(), d / "mean.pt"), "tiny": script(TinyNet(), d / "tiny.pt"),
            "wrong": script(WrongShape(), d / "wrong.pt")}


def load(model: Path, **env: str):
    saved = dict(os.environ)
    os.environ.pop("LINE_WIDTH", None)
    try:
        return load_function(LAMA, {"MODEL_PATH": str(model), "DEVICE": "cpu", **env})
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def mean_fn(models):
    return load(models["mean"])


def b64_png(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def decode_png(b64: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)


def import_module_from(directory: Path, name: str):
    before = set(sys.modules)
    sys.path.insert(0, str(directory))
    try:
        unique = f"_test_{directory.name}_{name}"
        spec = importlib.util.spec_from_file_location(unique, directory / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(directory))
        for mod in set(sys.modules) - before:
            if (getattr(sys.modules[mod], "__file__", None) or "").startswith(str(directory)):
                del sys.modules[mod]


def lattice_keypoints(width: int, height: int) -> list[list[float] | None]:
    layout = import_module_from(LAMA, "grid_layout")
    return [[x * (width - 1), y * (height - 1)] for x, y in layout.lattice_template()]


# --------------------------------------------------------------------------------- mask mode

def test_mask_mode_fills_only_the_masked_pixels(mean_fn):
    height, width = 61, 83  # neither a multiple of 8
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    rng = np.random.default_rng(0)
    hole = np.zeros((height, width), np.uint8)
    hole[20:35, 30:60] = 255
    image[hole > 0] = rng.integers(0, 256, (int((hole > 0).sum()), 3), dtype=np.uint8)  # noise to remove
    status, out = mean_fn.call({"image": b64_png(image), "mask": b64_png(hole)})
    assert status == 200, out
    assert (out["width"], out["height"], out["masked_pixels"]) == (width, height, 15 * 30)
    result = decode_png(out["image"])
    assert result.shape == image.shape
    inside = hole > 0
    assert np.array_equal(result[~inside], image[~inside])  # composited: untouched outside the mask
    assert np.abs(result[inside].astype(int) - BACKGROUND).max() <= 1  # filled from the known pixels


def test_mask_png_variants_are_accepted(mean_fn):
    image = np.full((16, 24, 3), 100, np.uint8)
    image[4:8, 4:8] = 0
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as "fill"
    rgba[4:8, 4:8, :3] = 255
    status, out = mean_fn.call({"image": b64_png(image), "mask": b64_png(rgba)})
    assert status == 200 and out["masked_pixels"] == 16
    assert (decode_png(out["image"]) == 100).all()
    empty = np.zeros((16, 24), np.uint8)
    status, out = mean_fn.call({"image": b64_png(image), "mask": b64_png(empty)})
    assert status == 200 and out["masked_pixels"] == 0
    assert np.array_equal(decode_png(out["image"]), image)


def test_random_convnet_keeps_the_size_of_odd_images(models):
    fn = load(models["tiny"], WARMUP="false")
    image = (np.random.default_rng(1).random((45, 37, 3)) * 255).astype(np.uint8)
    mask = np.zeros((45, 37), np.uint8)
    mask[10:20, 5:30] = 1
    status, out = fn.call({"image": b64_png(image), "mask": b64_png(mask)})
    assert status == 200, out
    result = decode_png(out["image"])
    assert result.shape == image.shape
    assert np.array_equal(result[mask == 0], image[mask == 0])
    assert not np.array_equal(result[mask > 0], image[mask > 0])


# ---------------------------------------------------------------------------- keypoints mode

def test_keypoints_mode_removes_a_drawn_grid(mean_fn):
    width, height = 200, 160
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    layout = import_module_from(LAMA, "grid_layout")
    for i in range(11):  # thin grid lines along every lattice row and column, edges included
        x, y = round(i * (width - 1) / 10), round(i * (height - 1) / 10)
        cv2.line(image, (x, 0), (x, height - 1), LINE, 2)
        cv2.line(image, (0, y), (width - 1, y), LINE, 2)
    keypoints: list = lattice_keypoints(width, height)
    for missing in (layout.point_id(5, 5), layout.point_id(0, 3), layout.point_id(7, 10)):
        keypoints[missing - 1] = None  # the line must still run through the gap
    keypoints[layout.point_id(2, 2) - 1] += [0]  # [x, y, v=0]: not labelled, treated as missing
    status, out = mean_fn.call({"image": b64_png(image), "keypoints": keypoints, "line_width": 7})
    assert status == 200, out
    result = decode_png(out["image"])
    is_line = np.all(result == LINE, axis=2)
    assert not is_line.any(), f"{is_line.sum()} grid pixels left"
    assert np.abs(result.astype(int) - BACKGROUND).max() <= 1
    # a thicker line masks more pixels; the default width comes from LINE_WIDTH (30)
    status, thick = mean_fn.call({"image": b64_png(image), "keypoints": keypoints})
    assert status == 200 and thick["masked_pixels"] > out["masked_pixels"]


def test_grid_mask_geometry():
    gm = import_module_from(LAMA, "grid_mask")
    width, height = 110, 90
    points = gm.parse_keypoints(lattice_keypoints(width, height))
    mask = gm.grid_mask(points, width, height, 3)
    assert mask.shape == (height, width)
    assert mask[0, 55] and mask[45, 0] and mask[89, 55] and mask[45, 109]  # frame edges
    assert mask[44, 54]  # centre crossing (row 5, col 5)
    cell_centres = [(round((r + 0.5) * 8.9), round((c + 0.5) * 10.9)) for r in range(10) for c in range(10)]
    assert not any(mask[y, x] for y, x in cell_centres)
    # with no keypoints only the frame remains (its corners are the image corners)
    frame = gm.grid_mask([None] * 117, width, height, 3)
    assert frame[0, 55] and frame[89, 55] and frame[45, 0] and frame[45, 109] and not frame[45, 55]
    with pytest.raises(ValueError, match="117"):
        gm.parse_keypoints([[1, 2]] * 116)
    with pytest.raises(ValueError, match="keypoint 3"):
        gm.parse_keypoints([[1, 2]] * 2 + [["a", 2]] + [[1, 2]] * 114)
    with pytest.raises(ValueError, match="non-finite"):
        gm.parse_keypoints([[1, 2]] * 116 + [[float("nan"), 2]])
    with pytest.raises(ValueError):
        gm.grid_mask(points, width, height, 0)


# ------------------------------------------------------------------------------ bad requests

def test_malformed_requests_get_400_with_a_reason(mean_fn):
    image = np.zeros((32, 48, 3), np.uint8)
    good = b64_png(image)
    mask = b64_png(np.ones((32, 48), np.uint8))
    kps = lattice_keypoints(48, 32)
    cases = [
        ({"mask": mask}, "missing 'image'"),
        ({"image": good}, "missing 'mask'"),
        ({"image": "@@@", "mask": mask}, "not valid base64"),
        ({"image": base64.b64encode(b"GIF89a-broken").decode(), "mask": mask}, "could not be decoded"),
        ({"image": good, "mask": b64_png(np.ones((31, 48), np.uint8))},
         "mask is 48x31 but the image is 48x32"),
        ({"image": good, "mask": 7}, "'mask' must be a base64 string"),
        ({"image": good, "mask": mask, "keypoints": kps}, "not both"),
        ({"image": good, "keypoints": kps[:-1]}, "117"),
        ({"image": good, "keypoints": "all of them"}, "117"),
        ({"image": good, "keypoints": [[1, 2, 3, 4]] * 117}, "keypoint 1"),
        ({"image": good, "keypoints": kps, "line_width": 0}, "line_width"),
        ({"image": good, "keypoints": kps, "line_width": 2.5}, "integer"),
        ({"image": good, "keypoints": kps, "line_width": "30"}, "line_width"),
    ]
    for body, reason in cases:
        status, out = mean_fn.call(body)
        assert status == 400, (body.keys(), out)
        assert reason in out["error"], (reason, out)
    status, _, data = mean_fn.call_raw(b"PNG, not json")
    assert status == 400 and b"not valid JSON" in data


def test_model_failure_is_a_500_with_the_reason(models):
    fn = load(models["wrong"], WARMUP="false")
    image = np.zeros((16, 16, 3), np.uint8)
    status, out = fn.call({"image": b64_png(image), "mask": b64_png(np.ones((16, 16), np.uint8))})
    assert status == 500 and "expected (1, 3, 16, 16)" in out["error"]
    with pytest.raises(RuntimeError):  # the same model fails the start-up warm-up
        load(models["wrong"])


def test_settings_are_checked(models, tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "none.pt")
    with pytest.raises(RuntimeError, match="LINE_WIDTH"):
        load(models["mean"], LINE_WIDTH="wide")


def test_over_http(mean_fn):
    image = np.full((40, 40, 3), 90, np.uint8)
    image[10:20, 10:20] = 255
    mask = np.zeros((40, 40), np.uint8)
    mask[10:20, 10:20] = 1
    with serve_in_thread(mean_fn) as url:
        resp = httpx.post(url, json={"image": b64_png(image), "mask": b64_png(mask)}, timeout=60)
        assert resp.status_code == 200
        assert (decode_png(resp.json()["image"]) == 90).all()
        bad = httpx.post(url, content=b"[]", headers={"Content-Type": "application/json"}, timeout=60)
        assert bad.status_code == 400 and "JSON object" in bad.json()["error"]


# ---------------------------------------------------------------------------------- metadata

def test_lama_function_yaml():
    for file, gpu in (("function.yaml", False), ("function-gpu.yaml", True)):
        conf = yaml.safe_load((LAMA / file).read_text())
        meta, spec = conf["metadata"], conf["spec"]
        assert meta["name"] == "pth-lama" and meta["namespace"] == "cvat"
        # no 'type': CVAT (2.x) skips functions of unknown type, so the bridge-only LaMa stays unlisted
        assert "type" not in meta["annotations"]
        assert json.loads(meta["annotations"].get("spec", "[]")) == []
        assert spec["handler"] == "main:handler" and spec["runtime"] == "python:3.10"
        env = {e["name"]: e["value"] for e in spec["env"]}
        assert env["MODEL_PATH"].endswith("big-lama.pt") and env["LINE_WIDTH"] == "30"
        trigger = spec["triggers"]["myHttpTrigger"]
        assert trigger["maxWorkers"] == (1 if gpu else 2)
        assert trigger["attributes"]["maxRequestBodySize"] == 33554432
        assert trigger["workerAvailabilityTimeoutMilliseconds"] == 10000
        assert spec["platform"]["attributes"]["network"] == "cvat_cvat"
        assert (spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1) == gpu
        pre_copy = spec["build"]["directives"]["preCopy"]
        assert any(d["value"].startswith("WEIGHTS_URL=https://") for d in pre_copy)

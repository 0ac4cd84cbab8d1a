"""``sam2_tracker`` without the model: request parsing, the compact state, CVAT's signing of it,
the function metadata CVAT reads, and where ``deploy.sh`` puts each function.

Needs only numpy/OpenCV/cvat-sdk/PyYAML (no torch).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml
from cvat_sdk.masks import encode_mask

from tests.nuclio_functions import cvat_lambda

FUNCTIONS = Path(__file__).resolve().parents[2] / "nuclio_functions"
TRACKER = FUNCTIONS / "sam2_tracker"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wire = _load(TRACKER / "wire.py", "test_tracker_wire_wire")
protocol = _load(FUNCTIONS / "sam2" / "protocol.py", "test_tracker_wire_protocol")
RequestError = wire.RequestError
W, H = 64, 48


def make_state(**kw) -> object:
    base = dict(type="rectangle", width=W, height=H, box=np.array([5, 6, 30, 40], np.float32),
                velocity=np.array([1.5, -0.5], np.float32),
                logits=np.linspace(-31, 31, wire.GRID * wire.GRID, dtype=np.float32).reshape(wire.GRID, wire.GRID),
                template=wire.unit(np.random.default_rng(0).normal(size=256).astype(np.float32)))
    base.update(kw)
    return wire.ObjectState(**base)


# ------------------------------------------------------------------------------------ requests

def test_start_request_takes_typed_shapes_and_legacy_point_lists() -> None:
    body = {"image": "x", "shapes": [
        {"type": "rectangle", "points": [10, 20, 5, 8], "rotation": 0, "occluded": False, "z_order": 3},
        {"type": "polygon", "points": [1, 1, 20, 1, 20, 20]},
        {"type": "mask", "points": [0, 4, 1, 1, 2, 2]},
        [1, 2, 30, 40]]}
    req = wire.parse_request(body, wire.SHAPE_TYPES, max_objects=8)
    assert [o.index for o in req.objects] == [0, 1, 2, 3] and all(o.state is None for o in req.objects)
    kinds = [(o.shape.type, o.shape.legacy) for o in req.objects]
    assert kinds == [("rectangle", False), ("polygon", False), ("mask", False), ("rectangle", True)]
    assert req.objects[0].shape.echo() == {"type": "rectangle", "points": [10.0, 20.0, 5.0, 8.0]}
    assert req.objects[3].shape.echo() == [1.0, 2.0, 30.0, 40.0]  # answered in the form it came in
    assert req.threshold == wire.DEFAULT_MASK_THRESHOLD


def test_continue_request_as_cvat_builds_it_pads_shapes_with_nulls() -> None:
    state = make_state().to_json()
    req = wire.parse_request({"image": "x", "shapes": [None, None], "states": [state, state], "threshold": 0.7},
                             wire.SHAPE_TYPES, 8)
    assert all(o.shape is None and o.state is not None for o in req.objects) and req.threshold == 0.7
    # an old UI sends both: a state wins; a null state with a shape starts that object
    req = wire.parse_request({"shapes": [[1, 2, 9, 9], [1, 2, 9, 9]], "states": [state, None]}, wire.SHAPE_TYPES, 8)
    assert req.objects[0].state is not None and req.objects[1].shape is not None


@pytest.mark.parametrize(("body", "reason"), [
    ({}, "nothing to track"),
    ({"shapes": [], "states": []}, "nothing to track"),
    ({"shapes": {"type": "rectangle"}}, "'shapes' must be a list"),
    ({"states": "abc"}, "'states' must be a list"),
    ({"shapes": [None]}, "object 0 has neither a shape nor a state"),
    ({"shapes": [{"type": "ellipse", "points": [1, 2, 3, 4]}]}, "'ellipse' is not supported"),
    ({"shapes": [{"type": "rectangle", "points": [1, 2, 3]}]}, "[x1, y1, x2, y2]"),
    ({"shapes": [{"type": "rectangle", "points": [1, 2, 3, "4"]}]}, "shapes[0].points[3] must be a finite number"),
    ({"shapes": [{"type": "polygon", "points": [1, 2, 3, 4]}]}, "at least 3 x, y pairs"),
    ({"shapes": [{"type": "mask", "points": [1, 2]}]}, "CVAT RLE"),
    ({"shapes": [{"type": "rectangle", "points": [1, 2, 3, 4], "rotation": "a"}]}, "rotation"),
    ({"shapes": [[1, 2, 3, 4]] * 9}, "too many objects: 9 > 8"),
    ({"shapes": [[1, 2, 3, 4]], "threshold": 1.0}, "'threshold' must be a number in (0, 1)"),
    ({"states": [{"v": 99}]}, "not a state of this tracker"),
    ({"states": ["a signed string"]}, "states[0] must be a state object"),
])
def test_bad_requests_name_the_problem(body: dict, reason: str) -> None:
    with pytest.raises(RequestError) as err:
        wire.parse_request(body, wire.SHAPE_TYPES, max_objects=8)
    assert reason in str(err.value)


def test_only_rectangles_when_configured_so() -> None:
    with pytest.raises(RequestError, match="'polygon' is not supported; this tracker supports rectangle"):
        wire.parse_request({"shapes": [{"type": "polygon", "points": [1, 1, 5, 1, 5, 5]}]}, ("rectangle",), 8)


# --------------------------------------------------------------------------------------- state

def test_state_round_trips_through_json_and_cvat_signing() -> None:
    state = make_state(lost=2, frames=17, legacy=True)
    signer = cvat_lambda.TimestampSigner("django-secret", "cvat-tracker-state:pth-sam2-tracker")
    signed = signer.sign(json.dumps(state.to_json(), separators=(",", ":")))  # what CVAT hands the UI
    back = wire.ObjectState.from_json(json.loads(signer.unsign(signed, max_age=8 * 3600)), "states[0]")
    assert (back.type, back.width, back.height, back.lost, back.frames, back.legacy) == ("rectangle", W, H, 2, 17, True)
    np.testing.assert_allclose(back.box, state.box, atol=0.05)
    np.testing.assert_allclose(back.velocity, state.velocity, atol=0.005)
    np.testing.assert_allclose(back.logits, state.logits, atol=0.5 / wire.LOGIT_SCALE)  # int8 quantisation
    assert float(back.template @ state.template) > 0.999  # direction kept
    assert back.to_json() == json.loads(json.dumps(back.to_json()))  # stable: decoding twice changes nothing
    assert wire.ObjectState.from_json(back.to_json(), "s").to_json() == back.to_json()


def test_state_size_is_bounded_whatever_the_image_or_track_length() -> None:
    # largest numbers and a 256-d template (SAM 2's embedding width for every hiera size)
    worst = make_state(type="polygon", width=100000, height=100000, box=np.array([0, 0, 99999.94, 99999.94]),
                       velocity=np.array([-9999.99, -9999.99]), template=np.full(256, -0.0625, np.float32),
                       lost=10**9, frames=10**12, legacy=True)
    assert len(json.dumps(worst.to_json(), separators=(",", ":"))) <= wire.MAX_STATE_BYTES
    signed = cvat_lambda.TimestampSigner("k", "salt").sign(json.dumps(worst.to_json(), separators=(",", ":")))
    assert len(signed) <= wire.MAX_STATE_BYTES + 64  # CVAT's signature adds a timestamp and 43 characters


@pytest.mark.parametrize(("patch", "reason"), [
    ({"t": "ellipse"}, ".t must be one of"),
    ({"wh": [0, 5]}, ".wh must be two positive integers"),
    ({"wh": [1.5, 5]}, ".wh must be two positive integers"),
    ({"box": [5, 5, 5, 9]}, "x2 > x1"),
    ({"box": [5, 5, 9]}, ".box must be a list of 4 numbers"),
    ({"vel": [1, "x"]}, ".vel[1] must be a finite number"),
    ({"lg": "%%%"}, ".lg is not valid base64"),
    ({"lg": base64.b64encode(b"short").decode()}, f".lg must hold {wire.GRID * wire.GRID} bytes"),
    ({"tpl": ""}, ".tpl must hold 1..1024 bytes"),
    ({"lost": -1}, ".lost must be a non-negative integer"),
    ({"n": True}, ".n must be a non-negative integer"),
])
def test_malformed_states_are_request_errors(patch: dict, reason: str) -> None:
    value = {**make_state().to_json(), **patch}
    with pytest.raises(RequestError) as err:
        wire.ObjectState.from_json(value, "states[3]")
    assert "states[3]" in str(err.value) and reason in str(err.value)


def test_state_follows_a_frame_of_another_size() -> None:
    st = make_state().rescaled(W * 2, H // 2)
    assert (st.width, st.height) == (W * 2, H // 2)
    np.testing.assert_allclose(st.box, [10, 3, 60, 20])
    np.testing.assert_allclose(st.velocity, [3, -0.25])
    same = make_state()
    assert same.rescaled(W, H) is same


# ------------------------------------------------------------------------------------ geometry

def test_rle_decoding_inverts_the_cvat_encoders() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = rng.random((H, W)) > rng.uniform(0.3, 0.95)
        mask[rng.integers(H), rng.integers(W)] = True
        for points in (protocol.encode_rle(mask), encode_mask(mask)):
            assert np.array_equal(wire.decode_rle(points, W, H, "m"), mask)
    with pytest.raises(RequestError, match="does not fit the 64x48 image"):
        wire.decode_rle([0, 4, 60, 0, 65, 1], W, H, "shapes[0]")
    with pytest.raises(RequestError, match="runs cover 5 pixels, its bbox 4"):
        wire.decode_rle([0, 5, 0, 0, 1, 1], W, H, "shapes[0]")
    with pytest.raises(RequestError, match="non-negative integers"):
        wire.decode_rle([0, 2.5, 0, 0, 1, 1], W, H, "shapes[0]")


def test_shapes_become_masks_and_boxes() -> None:
    poly = wire.Shape("polygon", [10, 10, 30, 10, 30, 20, 10, 20])
    mask = wire.shape_mask(poly, W, H, "s")
    assert wire.mask_box(mask).tolist() == [10, 10, 31, 21]  # CVAT fills the vertices' pixels too
    rle = wire.Shape("mask", [float(v) for v in protocol.encode_rle(mask)])
    assert np.array_equal(wire.shape_mask(rle, W, H, "s"), mask)
    with pytest.raises(RequestError, match="covers no pixel"):
        wire.shape_mask(wire.Shape("polygon", [-50, -50, -40, -50, -40, -40]), W, H, "shapes[1]")
    box = wire.rectangle_box(wire.Shape("rectangle", [40, 30, 10, 5]), W, H, "s")
    assert box.tolist() == [10, 5, 40, 30]  # corners in any order
    np.testing.assert_allclose(wire.rectangle_box(wire.Shape("rectangle", [10, 10, 30, 20], rotation=90), W, H, "s"),
                               [15, 5, 25, 25], atol=1e-4)  # the hull of the rotated rectangle
    assert wire.rectangle_box(wire.Shape("rectangle", [-10, -10, 100, 100]), W, H, "s").tolist() == [0, 0, W, H]
    with pytest.raises(RequestError, match="not inside the 64x48 image"):
        wire.rectangle_box(wire.Shape("rectangle", [70, 10, 90, 20]), W, H, "shapes[2]")
    assert wire.mask_box(np.zeros((3, 3), bool)) is None


# ------------------------------------------------------------------------------ CVAT's signing

def test_signer_is_djangos_timestamp_signer() -> None:
    clock = [1_700_000_000.0]
    signer = cvat_lambda.TimestampSigner("secret", "cvat-tracker-state:pth-sam2-tracker", clock=lambda: clock[0])
    signed = signer.sign('{"a":1}')
    value, stamp, sig = signed.rsplit(":", 2)
    assert value == '{"a":1}' and cvat_lambda.b62_decode(stamp) == 1_700_000_000 and len(sig) == 43
    assert signer.unsign(signed, max_age=10) == '{"a":1}'
    clock[0] += 11
    with pytest.raises(cvat_lambda.BadSignature, match="age"):
        signer.unsign(signed, max_age=10)
    with pytest.raises(cvat_lambda.BadSignature, match="does not match"):
        signer.unsign(signed.replace('{"a":1}', '{"a":2}'))
    other = cvat_lambda.TimestampSigner("secret", "cvat-tracker-state:another-function", clock=lambda: clock[0])
    with pytest.raises(cvat_lambda.BadSignature):
        other.unsign(signed)  # a state is only good for the function that made it
    for n in (0, 1, 61, 62, 10**10, -5):
        assert cvat_lambda.b62_decode(cvat_lambda.b62_encode(n)) == n


def test_signer_matches_django_when_installed() -> None:
    signing = pytest.importorskip("django.core.signing")
    from django.conf import settings

    if not settings.configured:
        settings.configure(SECRET_KEY="k" * 50)
    salt = "cvat-tracker-state:pth-sam2-tracker"
    ours = cvat_lambda.TimestampSigner(settings.SECRET_KEY, salt)
    theirs = signing.TimestampSigner(salt=salt)
    assert theirs.unsign(ours.sign("[1,2]"), max_age=60) == "[1,2]"
    assert ours.unsign(theirs.sign("[1,2]"), max_age=60) == "[1,2]"


# -------------------------------------------------------------- metadata CVAT reads, deployment

def _configs() -> list[tuple[str, str, dict]]:
    """Every whole Nuclio config (function.yaml, function-gpu.yaml; not the kube overlays)."""
    return [(d.name, f.name, yaml.safe_load(f.read_text())) for d in sorted(FUNCTIONS.iterdir()) if d.is_dir()
            for f in (d / "function.yaml", d / "function-gpu.yaml") if f.is_file()]


def _dry_run_projects(*args: str) -> dict[str, str]:
    """Function directory -> the Nuclio project ``deploy.sh`` deploys it into."""
    out = subprocess.run(["bash", str(FUNCTIONS / "deploy.sh"), "--dry-run", *args], capture_output=True,
                         text=True, check=True, env={**os.environ, "NUCTL": "nuctl"}).stdout
    projects = {}
    for line in out.splitlines():
        m = re.match(r"nuctl deploy --project-name (\S+) --path (\S+) ", line)
        if m:
            projects[Path(m.group(2)).name.removeprefix("stage-")] = m.group(1)
    return projects


def test_every_function_cvat_lists_has_metadata_cvat_accepts() -> None:
    projects = _dry_run_projects()
    assert set(projects) == {d for d, f, _ in _configs() if f == "function.yaml"}
    for folder, file, config in _configs():
        if projects[folder] == "cvat":
            meta = cvat_lambda.function_metadata(config)  # raises what CVAT would log on every listing
            assert meta["id"] == config["metadata"]["name"], (folder, file)
        else:  # deployed elsewhere precisely because CVAT would refuse it
            with pytest.raises(cvat_lambda.InvalidFunctionMetadataError, match="unknown type: None"):
                cvat_lambda.function_metadata(config)
    assert projects["lama"] == "cvat-bridge"
    assert {f for f, p in projects.items() if p == "cvat"} == {
        "coralseg", "gridcorners", "gridpose", "sam2", "sam2_auto", "sam2_tracker"}


def test_tracker_function_yaml_is_what_cvat_and_nuclio_expect() -> None:
    for file, gpu in (("function.yaml", False), ("function-gpu.yaml", True)):
        config = yaml.safe_load((TRACKER / file).read_text())
        meta = cvat_lambda.function_metadata(config)
        assert meta["kind"] == "tracker" and meta["id"] == "pth-sam2-tracker" and meta["labels_v2"] == []
        assert meta["supported_shape_types"] == list(wire.SHAPE_TYPES) == ["rectangle", "polygon", "mask"]
        ann = config["metadata"]["annotations"]
        assert isinstance(ann["supported_shape_types"], str)  # CVAT splits a string on commas
        spec = config["spec"]
        assert config["metadata"]["namespace"] == "cvat" and spec["handler"] == "main:handler"
        env = {e["name"]: e["value"] for e in spec["env"]}
        assert env["SAM2_DEVICE"] == ("cuda" if gpu else "cpu")
        assert env["SAM2_CHECKPOINT"] == "/opt/nuclio/model/sam2.pt"
        assert env["SAM2_CONFIG"] == "configs/sam2.1/sam2.1_hiera_t.yaml"
        trigger = spec["triggers"]["myHttpTrigger"]
        assert trigger["maxWorkers"] == (1 if gpu else 2) and trigger["workerAvailabilityTimeoutMilliseconds"] == 10000
        assert trigger["attributes"]["maxRequestBodySize"] == 33554432
        assert spec["platform"]["attributes"]["network"] == "cvat_cvat"
        assert (spec.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1) == gpu
        directives = " ".join(d["value"] for d in spec["build"]["directives"]["preCopy"])
        assert "WEIGHTS_URL=https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in directives
        assert "--no-build-isolation sam2==1.1.0" in directives
        post = " ".join(d["value"] for d in spec["build"]["directives"]["postCopy"])
        assert "test -s /opt/nuclio/model/sam2.pt" in post


def test_shared_modules_are_staged_for_deployment(tmp_path: Path) -> None:
    nuctl = tmp_path / "nuctl"
    nuctl.write_text('#!/usr/bin/env bash\nif [[ "$1" == "deploy" ]]; then\n'
                     '  while [[ $# -gt 0 ]]; do [[ "$1" == "--path" ]] && ls "$2" >> "$NUCTL_LOG"; shift; done\nfi\n'
                     'if [[ "$1 $2" == "get project" ]]; then exit 1; fi\nexit 0\n')
    nuctl.chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "NUCTL": str(nuctl), "NUCTL_LOG": str(log),
           "WEIGHTS_URL_SAM2_TRACKER": "https://example.org/tracker.pt"}
    subprocess.run(["bash", str(FUNCTIONS / "deploy.sh"), "sam2_tracker", "sam2_auto"], env=env, check=True,
                   capture_output=True)
    listed = log.read_text().split()
    for name in ("main.py", "wire.py", "tracker.py", "shared.py", "model.py", "protocol.py", "cache.py"):
        assert name in listed, name
    assert listed.count("model.py") == 2 and listed.count("cache.py") == 1  # sam2_auto needs model + protocol
    for folder in ("sam2_tracker", "sam2_auto"):
        shared = (FUNCTIONS / folder / "shared-modules.txt").read_text().split()
        main = (FUNCTIONS / folder / ("shared.py" if folder == "sam2_tracker" else "main.py")).read_text()
        assert {Path(s).stem for s in shared} == set(re.findall(r'load_shared\("(\w+)"\)', main)), folder

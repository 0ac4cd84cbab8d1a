"""The real client against test functions served over HTTP like Nuclio."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from bridge.errors import FunctionFailed, FunctionUnavailable
from bridge.nuclio import images, scaling
from tests.doubles.function_server import free_port, serve_function
from tests.nuclio.conftest import FUNCTIONS, make_client, served

W, H = 1600, 1200
BOX = (400, 300, 799, 599)  # inclusive bright rectangle


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def frame(w: int = W, h: int = H) -> np.ndarray:
    """Dark noise (hard to compress, stays < 127 after JPEG) with a white rectangle at BOX."""
    img = np.random.default_rng(1).integers(0, 100, (h, w, 3), dtype=np.uint8)
    left, top, right, bottom = BOX
    img[top:bottom + 1, left:right + 1] = 255
    return img


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return _png(frame())


def _attrs(items: list[dict]) -> dict[str, str]:
    tag = next(i for i in items if i["label"] == "seen")
    return {a["name"]: a["value"] for a in tag["attributes"]}


def _by_label(items: list[dict]) -> dict[str, dict]:
    return {i["label"]: i for i in items}


def test_detect_round_trip_in_a_subprocess():
    img = np.full((100, 200, 3), 30, np.uint8)
    img[20:40, 50:90] = 255
    with serve_function(FUNCTIONS / "echo_detector") as url, make_client(url) as client:
        assert client.ping("echo_detector")
        items = client.detect("echo_detector", _png(img), threshold=0.5)
    assert _attrs(items) == {"width": "200", "height": "100", "jpeg": "False", "threshold": "0.5",
                             "keys": "image,threshold"}
    got = _by_label(items)
    assert got["frame"] == {"label": "frame", "type": "rectangle", "points": [0, 0, 200, 100],
                            "confidence": "90"}
    assert got["bright"]["mask"] == [1] * (40 * 20) + [50, 20, 89, 39]
    assert got["bright"]["points"] == [50, 20, 90, 20, 90, 40, 50, 40]


def test_detect_downscales_to_the_budget_and_maps_results_back_exactly(big_png):
    with served("echo_detector") as (_, url), make_client(url, max_body_bytes=300_000) as client:
        items = client.detect("echo_detector", big_png)
    seen = _attrs(items)
    w, h = int(seen["width"]), int(seen["height"])
    assert seen["jpeg"] == "True" and w < W and abs(w / h - W / H) < 0.01
    got = _by_label(items)
    assert got["frame"]["points"] == [0, 0, W, H]
    assert got["center"]["points"] == pytest.approx([W / 2, H / 2])
    assert got["tri"]["points"] == [0, 0, W, 0, 0, H]
    assert got["oval"]["points"] == pytest.approx([W / 2, H / 2, W * 3 / 4, H / 4])
    assert [e["points"] for e in got["corners"]["elements"]] == [[0, 0], [W, H]]
    # One-pixel mask on the last sent pixel → the block of original pixels it covers, all set.
    corner = got["corner"]["mask"]
    left, top = (w - 1) * W // w, (h - 1) * H // h
    assert corner[-4:] == [left, top, W - 1, H - 1]
    assert corner[:-4] == [1] * ((W - left) * (H - top))
    assert got["corner"]["points"] == pytest.approx([(w - 1) * W / w, (h - 1) * H / h, W,
                                                     (h - 1) * H / h, W, H])
    # The bright rectangle comes back at full resolution, within one sent pixel.
    bright = got["bright"]["mask"]
    bl, bt, br, bb = bright[-4:]
    step = -(-W // w)
    for got_v, want in zip((bl, bt, br, bb), BOX, strict=True):
        assert abs(got_v - want) <= step + 1
    crop = np.array(bright[:-4]).reshape(bb - bt + 1, br - bl + 1)
    assert crop.mean() > 0.95


@pytest.mark.parametrize("server_workers", [2, 8])
def test_concurrency_limit_is_honoured_and_measured_in_the_function(server_workers, counting):
    with served("sleeper", max_workers=server_workers) as (fn, url), \
            make_client(url, function_concurrency={"sleeper": 2}, transport=counting) as client:
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.invoke("sleeper", {"sleep": 0.15}), range(8)))
        elapsed = time.monotonic() - start
        assert client.concurrency_for("sleeper") == 2
    assert fn.context.user_data.calls == 8
    assert fn.context.user_data.max_in_flight == 2
    assert max(a["max_in_flight"] for a in answers) == 2
    assert elapsed >= 4 * 0.15
    assert counting.statuses() == [200] * 8  # never a 503: the client waited its turn


def test_without_a_client_limit_the_function_sees_more_in_flight():
    """Control for the test above: the measurement does detect overlap."""
    with served("sleeper", max_workers=8) as (fn, url), make_client(url, concurrency=8) as client:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: client.invoke("sleeper", {"sleep": 0.3}), range(8)))
    assert fn.context.user_data.max_in_flight > 2


def test_busy_function_503_is_retried_then_succeeds(counting):
    # One Nuclio worker that frees up after 0.3 s; the server gives up waiting for it after 50 ms.
    with served("sleeper", max_workers=1, worker_timeout=0.05) as (fn, url), \
            make_client(url, concurrency=2, retries=10, transport=counting) as client:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: client.invoke("sleeper", {"sleep": 0.3}), range(2)))
    assert len(answers) == 2 and fn.context.user_data.calls == 2
    statuses = counting.statuses()
    assert 503 in statuses and statuses.count(200) == 2


def test_busy_is_bounded_and_explained(counting):
    with served("failer") as (fn, url), make_client(url, retries=2, transport=counting) as client:
        with pytest.raises(FunctionUnavailable) as err:
            client.invoke("failer", {"mode": "busy_first", "n": 5})
        assert client.invoke("failer", {"mode": "busy_first", "n": 5}) == {"ok": True, "calls": 6}
    msg = str(err.value)
    assert "stayed busy: busy (503, no free worker): no available worker after 3 attempt(s)" in msg
    assert "at or below its maxWorkers" in msg
    assert counting.statuses() == [503, 503, 503, 503, 503, 200]


def test_connection_refused_is_retried_a_bounded_number_of_times(counting):
    url = f"http://127.0.0.1:{free_port()}"
    with make_client(url, retries=2, transport=counting) as client:
        assert not client.ping("pth-gone")
        with pytest.raises(FunctionUnavailable) as err:
            client.invoke("pth-gone", {"x": 1})
    msg = str(err.value)
    assert f"function 'pth-gone' not reachable at {url}/" in msg
    assert "is it deployed and on the cvat_cvat network? name is case-sensitive" in msg
    assert "ConnectError" in msg and "3 attempt(s)" in msg
    assert counting.statuses() == ["ConnectError"] * 3


@pytest.mark.parametrize(("payload", "match"), [
    ({"mode": "raise"}, r"HTTP 500: handler raised: RuntimeError\('boom on demand'\)"),
    ({"mode": "status", "code": 422, "message": "bad threshold"},
     r"HTTP 422: \{\"error\": \"bad threshold\"\}"),
    ({"mode": "text"}, r"invalid JSON \(application/json\): <html>not json</html>"),
])
def test_function_errors_fail_at_once(counting, payload, match):
    with served("failer") as (fn, url), make_client(url, transport=counting) as client:
        with pytest.raises(FunctionFailed, match=match):
            client.invoke("failer", payload)
    assert fn.context.user_data.calls == 1 and len(counting.statuses()) == 1


def test_wrong_top_level_type_fails(big_png):
    with served("failer") as (_, url), make_client(url) as client:
        with pytest.raises(FunctionFailed, match="must answer a JSON list of shapes, got dict"):
            client.detect("failer", big_png, extra={"mode": "value", "value": {"not": "a list"}})
        with pytest.raises(FunctionFailed, match="HTTP 400: unknown mode None"):
            client.interact("failer", big_png, pos_points=[[1, 1]])


def test_413_shrinks_once_then_succeeds(counting, big_png):
    # The function keeps Nuclio's default 4 MiB limit; the client believes 32 MiB: the ~6.7 MB PNG body
    # is refused (413) and the retry, within min(half that body, 4 MiB), passes as a full-size JPEG.
    with served("echo_detector", max_body=4 * 1024 * 1024) as (_, url), \
            make_client(url, transport=counting) as client:
        items = client.detect("echo_detector", big_png)
    seen = _attrs(items)
    assert (seen["width"], seen["jpeg"]) == (str(W), "True")
    assert _by_label(items)["frame"]["points"] == [0, 0, W, H]
    assert counting.statuses() == [413, 200]


def test_413_twice_or_without_an_image_is_body_too_large(counting, big_png):
    with served("echo_detector", max_body=2_000) as (_, url), \
            make_client(url, transport=counting) as client:
        with pytest.raises(FunctionFailed, match="body too large: .* even after shrinking"):
            client.detect("echo_detector", big_png)
        assert counting.statuses() == [413, 413]
        with pytest.raises(FunctionFailed, match="body too large: function 'echo_detector' refused"):
            client.invoke("echo_detector", {"blob": "x" * 5000})


def test_interact_scales_prompts_down_and_the_mask_back_up(big_png):
    with served("box_segmenter") as (_, url), make_client(url, max_body_bytes=300_000) as client:
        out = client.interact("box_segmenter", big_png, pos_points=[[600, 450]], neg_points=[[10, 10]],
                              obj_bbox=[[400, 300], [799, 599]])
    w, h = out["seen"]
    assert w < W
    sent = out["received"]
    assert sent["obj_bbox"] == [[round(400 * w / W, 2), round(300 * h / H, 2)],
                                [round(799 * w / W, 2), round(599 * h / H, 2)]]
    assert sent["pos_points"] == [[round(600 * w / W, 2), round(450 * h / H, 2)]]
    (shape,) = out["shapes"]
    mask = decode_mask(shape["points"], image_width=W, image_height=H)
    # The function filled the sent pixels round(x1)..round(x2); the client maps them to the original
    # pixels those cover.
    x1, y1 = round(400 * w / W), round(300 * h / H)
    x2, y2 = round(799 * w / W), round(599 * h / H)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), ys.min()) == (x1 * W // w, y1 * H // h)
    assert (xs.max(), ys.max()) == (-(-(x2 + 1) * W // w) - 1, -(-(y2 + 1) * H // h) - 1)
    assert mask.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)


def test_interact_without_downscale_is_exact():
    img = _png(frame(320, 240))
    with served("box_segmenter") as (_, url), make_client(url) as client:
        out = client.interact("box_segmenter", img, pos_points=[[5, 6]], obj_bbox=[[10, 20], [29, 49]])
    mask = decode_mask(out["shapes"][0]["points"], image_width=320, image_height=240)
    expected = np.zeros((240, 320), bool)
    expected[20:50, 10:30] = True
    assert (mask == expected).all()
    assert out["received"] == {"pos_points": [[5, 6]], "neg_points": [], "obj_bbox": [[10, 20], [29, 49]]}


def test_segment_prompts_batch_keeps_order_errors_and_scale(big_png):
    prompts = [{"bbox": [400, 300, 799, 599], "pos_points": [], "neg_points": []},
               {"bbox": None, "pos_points": [[800, 600]]},
               {"bbox": None, "pos_points": [], "neg_points": [[1, 1]]}]
    with served("box_segmenter") as (_, url), make_client(url, max_body_bytes=300_000) as client:
        results = client.segment_prompts("box_segmenter", big_png, prompts)
    assert len(results) == 3
    assert results[2] == {"error": "empty prompt: give a bbox or positive points"}
    assert results[0]["score"] == 0.9
    (poly,) = results[0]["polygons"]
    assert poly == pytest.approx([400, 300, 799, 300, 799, 599, 400, 599], abs=0.01 * W)
    _, box = scaling.decode_rle(results[0]["mask"])
    assert all(abs(a - b) <= 2 * (-(-W // 500)) for a, b in zip(box, BOX, strict=True))
    _, point_box = scaling.decode_rle(results[1]["mask"])
    # One sent pixel (about 3x3 original pixels here) around the rounded, downscaled point.
    assert point_box[2] - point_box[0] <= 4 and point_box[3] - point_box[1] <= 4
    assert abs(point_box[0] - 800) <= 4 and abs(point_box[1] - 600) <= 4


def test_segment_prompts_rejects_malformed_prompts():
    with make_client("http://127.0.0.1:1") as client:
        with pytest.raises(ValueError, match=r"prompt 1: bbox must be \[x1, y1, x2, y2\]"):
            client.segment_prompts("x", b"img", [{"bbox": [1, 2, 3, 4]}, {"bbox": [1, 2]}])


def test_inpaint_downscaled_comes_back_full_size_and_untouched_outside_the_mask(big_png):
    mask = np.zeros((H, W), np.uint8)
    mask[:, 700:730] = 255
    mask[500:530, :] = 255
    with served("fill_inpainter") as (fn, url), make_client(url, max_body_bytes=300_000) as client:
        out = client.inpaint("fill_inpainter", big_png, _png(mask))
    assert fn.context.user_data.seen[0] < W
    result = images.decode_image(out)
    original = frame()
    assert result.shape == original.shape
    assert (result[mask == 0] == original[mask == 0]).all()
    inside = result[mask > 0]
    assert (inside[:, 1] > 200).mean() > 0.99 and (inside[:, 0] < 50).mean() > 0.99


def test_inpaint_that_fits_returns_the_function_png_as_is():
    img = _png(frame(64, 48))
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 10:20] = 1
    with served("fill_inpainter") as (fn, url), make_client(url) as client:
        out = client.inpaint("fill_inpainter", img, _png(mask))
    assert fn.context.user_data.seen == (64, 48)
    result = images.decode_image(out)
    assert (result[10:20, 10:20] == (0, 255, 0)).all()
    assert (result[mask == 0] == frame(64, 48)[mask == 0]).all()


def test_client_is_shared_by_threads_across_functions():
    with served("sleeper", max_workers=8) as (sleeper, url1), served("echo_detector") as (_, url2):
        # The URL template's {name} is the port here, so two functions share one client.
        slow, fast = url1.rsplit(":", 1)[1], url2.rsplit(":", 1)[1]
        client = make_client("http://127.0.0.1:{name}", function_concurrency={slow: 1})
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                if i % 2:
                    client.invoke(slow, {"sleep": 0.05})
                else:
                    assert client.detect(fast, _png(frame(40, 30)))[1]["points"] == [0, 0, 40, 30]
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
    assert not errors, errors
    assert sleeper.context.user_data.calls == 4
    assert sleeper.context.user_data.max_in_flight == 1

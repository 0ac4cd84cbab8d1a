"""Request bodies carrying images: the base64 is spliced into the JSON (never through ``json.dumps``) and
sent as parts with a Content-Length; what the function receives is byte for byte the JSON it was before."""

from __future__ import annotations

import base64
import json
import threading

import cv2
import httpx
import numpy as np
import pytest

from bridge.nuclio.client import Body
from tests.nuclio.conftest import make_client, served


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_body_is_the_same_json_as_dumping_the_strings():
    image, mask = bytes(range(256)) * 50, b"\x89PNG" + bytes(1000)
    payload = {"mask": "@@m@@", "pos_points": [[1.5, 2]], "image": "@@i@@", "note": "ü \"quoted\" \\ /"}
    body = Body(payload, {"@@i@@": _b64(image), "@@m@@": _b64(mask)})  # the mask comes first in the text
    expected = json.dumps({**payload, "image": _b64(image).decode(), "mask": _b64(mask).decode()},
                          separators=(",", ":")).encode()
    assert bytes(body) == expected and len(body) == len(expected)
    assert json.loads(bytes(body))["image"] == _b64(image).decode()
    assert max(len(p) for p in body.parts) == len(_b64(image))  # the image is a part of its own, not copied


def test_a_payload_without_its_image_is_refused():
    with pytest.raises(ValueError, match="does not carry the image"):
        Body({"image": "something else"}, {"@@i@@": b"AAAA"})


class RecordingTransport(httpx.HTTPTransport):
    """A real transport that keeps the headers and the body bytes of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[httpx.Headers, bytes]] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join(request.stream)  # type: ignore[arg-type]  # parts in a list: iterable again
        with self._lock:
            self.sent.append((request.headers, body))
        return super().handle_request(request)


def test_the_function_gets_a_plain_content_length_body_with_the_exact_image():
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 5:40] = 255
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    transport = RecordingTransport()
    with served("echo_detector") as (fn, url), make_client(url, transport=transport) as client:
        items = client.detect("echo_detector", jpeg, threshold=0.25)
    seen = {a["name"]: a["value"] for a in items[0]["attributes"]}
    assert (seen["width"], seen["height"], seen["jpeg"], seen["threshold"]) == ("64", "48", "True", "0.25")
    posts = [(h, b) for h, b in transport.sent if b]
    headers, body = posts[-1]
    assert headers["content-length"] == str(len(body)) and "transfer-encoding" not in headers
    assert json.loads(body) == {"image": base64.b64encode(jpeg).decode(), "threshold": 0.25}
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()

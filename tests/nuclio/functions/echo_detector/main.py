"""Test detector: answers shapes of every type placed at fixed fractions of the image it received.

A ``tag`` item ``seen`` reports what arrived (width, height, JPEG or not, threshold, body keys).
A ``mask`` item ``bright`` covers the pixels brighter than 127 (raw crop + inclusive bbox), and
``corner`` is a one-pixel mask on the bottom-right pixel.
"""

import base64

import cv2
import numpy as np


def init_context(context):
    context.user_data.calls = 0


def handler(context, event):
    context.user_data.calls += 1
    data = base64.b64decode(event.body["image"])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return context.Response(body='{"error": "cannot decode image"}', status_code=400,
                                content_type="application/json")
    h, w = img.shape
    items = [
        {"label": "seen", "type": "tag", "attributes": [
            {"name": "width", "value": str(w)}, {"name": "height", "value": str(h)},
            {"name": "jpeg", "value": str(data[:3] == b"\xff\xd8\xff")},
            {"name": "threshold", "value": str(event.body.get("threshold"))},
            {"name": "keys", "value": ",".join(sorted(event.body))}]},
        {"label": "frame", "type": "rectangle", "points": [0, 0, w, h], "confidence": "90"},
        {"label": "center", "type": "points", "points": [w / 2, h / 2]},
        {"label": "tri", "type": "polygon", "points": [0, 0, w, 0, 0, h]},
        {"label": "oval", "type": "ellipse", "points": [w / 2, h / 2, w * 3 / 4, h / 4]},
        {"label": "corners", "type": "skeleton", "elements": [
            {"label": "tl", "type": "points", "points": [0, 0], "outside": 0},
            {"label": "br", "type": "points", "points": [w, h], "outside": 0}]},
        {"label": "corner", "type": "mask", "mask": [1, w - 1, h - 1, w - 1, h - 1],
         "points": [w - 1, h - 1, w, h - 1, w, h]},
    ]
    ys, xs = np.nonzero(img > 127)
    if len(xs):
        left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        crop = (img[top:bottom + 1, left:right + 1] > 127).astype(int).ravel().tolist()
        items.append({"label": "bright", "type": "mask", "mask": crop + [left, top, right, bottom],
                      "points": [left, top, right + 1, top, right + 1, bottom + 1, left, bottom + 1]})
    return items

"""E2E test detector: finds the bright blobs of a frame and answers them as CVAT detector items.

Each blob becomes a ``coral`` mask (raw crop + inclusive bbox, with polygon ``points``) and a
``box`` rectangle with its confidence; the frame gets a ``quadrat_corner`` skeleton (4 image corners,
element "4" omitted so it must come out ``outside``) and a ``ghost`` item whose label no project has.
A frame that is almost entirely white makes the handler raise (HTTP 500): the "bad frame".
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
    if img.mean() > 250:
        raise RuntimeError("model crashed on an all-white frame")
    h, w = img.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats((img > 127).astype(np.uint8))
    items = []
    for i in range(1, count):
        x, y, bw, bh, _area = stats[i]
        crop = (labels[y:y + bh, x:x + bw] == i).astype(int).ravel().tolist()
        contour = cv2.findContours((labels == i).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0][0]
        points = contour.reshape(-1, 2).astype(float).ravel().tolist()
        items.append({"label": "coral", "type": "mask", "confidence": "0.8",
                      "mask": crop + [int(x), int(y), int(x + bw - 1), int(y + bh - 1)], "points": points})
        items.append({"label": "box", "type": "rectangle", "confidence": "0.55",
                      "points": [float(x), float(y), float(x + bw), float(y + bh)]})
    items.append({"label": "quadrat_corner", "type": "skeleton", "elements": [
        {"label": "1", "type": "points", "points": [0, 0]},
        {"label": "2", "type": "points", "points": [w - 1, 0]},
        {"label": "3", "type": "points", "points": [w - 1, h - 1]}]})
    items.append({"label": "ghost", "type": "rectangle", "points": [0, 0, 2, 2]})
    return items

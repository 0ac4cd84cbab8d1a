"""E2E test tracker speaking CVAT's tracker protocol: follows the bright blob a rectangle was drawn on.

Start (``shapes``): the state is the rectangle. Continue (``states``): the bright connected component
overlapping the previous box most (or nearest to it) is the object; none → ``null`` (lost), the state
kept. Answers ``{"shapes": [...], "states": [...]}`` index-aligned, as CVAT expects.
"""

import base64
import json

import cv2
import numpy as np


def init_context(context):
    context.user_data.calls = 0


def _components(img):
    count, _labels, stats, _ = cv2.connectedComponentsWithStats((img > 127).astype(np.uint8))
    return [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h, _a in stats[1:count]]


def _follow(box, boxes):
    def overlap(b):
        w = min(box[2], b[2]) - max(box[0], b[0])
        h = min(box[3], b[3]) - max(box[1], b[1])
        return max(w, 0) * max(h, 0)

    def dist(b):
        return abs((b[0] + b[2]) - (box[0] + box[2])) + abs((b[1] + b[3]) - (box[1] + box[3]))

    near = [b for b in boxes if dist(b) < 4 * max(box[2] - box[0], box[3] - box[1])]
    return max(near, key=lambda b: (overlap(b), -dist(b))) if near else None


def handler(context, event):
    context.user_data.calls += 1
    body = event.body if isinstance(event.body, dict) else json.loads(event.body)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(body["image"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    shapes = body.get("shapes") or []
    states = body.get("states") or []
    n = max(len(shapes), len(states))
    boxes = _components(img)
    out_shapes, out_states = [], []
    for i in range(n):
        state = states[i] if i < len(states) else None
        shape = shapes[i] if i < len(shapes) else None
        if state is None:
            if shape is None or shape.get("type") != "rectangle":
                return context.Response(body=json.dumps({"error": f"index {i}: a rectangle to start"}),
                                        status_code=400, content_type="application/json")
            out_shapes.append({"type": "rectangle", "points": shape["points"]})
            out_states.append({"box": shape["points"]})
            continue
        found = _follow(state["box"], boxes)
        out_shapes.append(None if found is None else {"type": "rectangle", "points": found})
        out_states.append({"box": found or state["box"]})
    return {"shapes": out_shapes, "states": out_states}

"""Test interactor and SAM 2 batch function: masks are the prompt boxes, in CVAT RLE.

Interactor body (``pos_points``/``neg_points``/``obj_bbox``) → ``{"shapes": [mask], "seen": [w, h]}``:
the mask fills ``obj_bbox`` (inclusive pixels), else the pixel under the first positive point.
SAM 2 body (``prompts``) → ``{"results": [...], "seen": [w, h], "prompts": <as received>}``:
per prompt a box mask + its polygon + score, a point mask, or ``{"error"}`` for an empty prompt.
"""

import base64

import cv2
import numpy as np


def _rle(mask):
    """Full-image bool mask → CVAT RLE over its tight bbox + [l, t, r, b]."""
    ys, xs = np.nonzero(mask)
    left, top, right, bottom = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = mask[top:bottom + 1, left:right + 1].ravel()
    runs, current, count = [], False, 0
    for value in flat:
        if bool(value) == current:
            count += 1
        else:
            runs.append(count)
            current, count = bool(value), 1
    runs.append(count)
    return runs + [left, top, right, bottom]


def _box_mask(w, h, x1, y1, x2, y2):
    mask = np.zeros((h, w), bool)
    mask[int(round(y1)):int(round(y2)) + 1, int(round(x1)):int(round(x2)) + 1] = True
    return mask


def init_context(context):
    context.user_data.calls = 0


def handler(context, event):
    context.user_data.calls += 1
    body = event.body
    data = base64.b64decode(body["image"])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    if "prompts" in body:
        results = []
        for prompt in body["prompts"]:
            if prompt.get("bbox"):
                x1, y1, x2, y2 = prompt["bbox"]
                results.append({"mask": _rle(_box_mask(w, h, x1, y1, x2, y2)),
                                "polygons": [[x1, y1, x2, y1, x2, y2, x1, y2]], "score": 0.9})
            elif prompt.get("pos_points"):
                x, y = prompt["pos_points"][0]
                results.append({"mask": _rle(_box_mask(w, h, x, y, x, y)), "polygons": [], "score": 0.5})
            else:
                results.append({"error": "empty prompt: give a bbox or positive points"})
        return {"results": results, "seen": [w, h], "prompts": body["prompts"]}
    if body.get("obj_bbox"):
        (x1, y1), (x2, y2) = body["obj_bbox"]
    else:
        x1, y1 = x2, y2 = body["pos_points"][0]
    shape = {"type": "mask", "points": _rle(_box_mask(w, h, x1, y1, x2, y2)), "group": 0,
             "source": "semi-auto", "attributes": [], "occluded": False, "rotation": 0}
    return {"shapes": [shape], "seen": [w, h], "received": {k: body[k] for k in body if k != "image"}}

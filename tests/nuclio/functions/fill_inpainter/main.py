"""Test LaMa stand-in: paints the mask's nonzero pixels pure green; answers PNG + size.

``user_data.seen`` records the (width, height) of the last image received.
"""

import base64

import cv2
import numpy as np


def init_context(context):
    context.user_data.seen = None


def handler(context, event):
    image = cv2.imdecode(np.frombuffer(base64.b64decode(event.body["image"]), np.uint8), cv2.IMREAD_COLOR)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(event.body["mask"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask.shape != image.shape[:2]:
        return context.Response(body='{"error": "mask and image sizes differ"}', status_code=400,
                                content_type="application/json")
    h, w = mask.shape
    context.user_data.seen = (w, h)
    image[mask > 0] = (0, 255, 0)
    ok, png = cv2.imencode(".png", image)
    return {"image": base64.b64encode(png.tobytes()).decode(), "width": w, "height": h}

"""SAM 2 tracking one frame at a time with a compact state (no Nuclio, no environment).

Per request: the image is encoded once (or found in the embedding cache) and every object is
handled on that embedding.

* Start (a shape, no state): the object's mask is the polygon or mask given, or for a rectangle the
  best of SAM 2's masks for that box. The state keeps the box, the mask logits inside it (SAM's own
  for a rectangle, derived from the drawn mask otherwise) and an appearance template (the image
  embedding averaged over the mask). The answer echoes the shape.
* Continue (a state): the box is moved by the object's velocity; SAM 2 decodes masks for that box,
  prompted also with the stored logits pasted at the new place; the best candidate by predicted IoU
  plus template similarity wins. The object is lost (answer ``null``, as CVAT's tracking functions
  do) when SAM 2's object-presence logit is negative, the mask is empty, the similarity is below
  ``min_similarity`` or the box changed size by more than ``max_scale_change`` in one frame; a lost
  object keeps coasting on its velocity and is looked for again on the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import wire
from shared import cache as cache_mod
from shared import model as model_mod
from shared import protocol

BACKGROUND_LOGIT = -16.0  # stored logits pasted on this background to make a whole-image mask prompt
DRAWN_MASK_LOGIT = 8.0  # logit magnitude given to a drawn polygon/mask (inside +, outside -)
VELOCITY_SMOOTHING = 0.5  # weight of the newest displacement in the velocity
TEMPLATE_MOMENTUM = 0.9  # weight of the old template when a new view is averaged in
LOST_VELOCITY_DECAY = 0.5


@dataclass(frozen=True)
class TrackerConfig:
    supported: tuple[str, ...] = wire.SHAPE_TYPES
    max_objects: int = 64
    mask_prompt: bool = True  # prompt with the stored logits as well as the box
    similarity_weight: float = 1.0  # candidate score = predicted IoU + weight x template similarity
    min_similarity: float = -1.0  # below this cosine similarity the object is lost (-1: never)
    max_scale_change: float = 2.0  # width or height ratio between frames beyond which a mask is refused
    polygon_epsilon: float = 1.0


@dataclass(frozen=True)
class Outcome:
    shape: Any  # the answer for this object (None: lost)
    state: wire.ObjectState


class Sam2Tracker:
    """One SAM 2 model, one embedding cache; answers CVAT tracker requests."""

    def __init__(self, model: model_mod.Sam2Model, cache: cache_mod.EmbeddingCache, config: TrackerConfig):
        if config.max_scale_change <= 1:
            raise ValueError(f"max_scale_change must be > 1, got {config.max_scale_change}")
        self.model = model
        self.cache = cache
        self.config = config

    # ------------------------------------------------------------------------------ request
    def embedding(self, image: bytes) -> model_mod.Embedding:
        emb, _ = self.cache.get_or_compute(cache_mod.image_key(image, self.model.model_id),
                                           lambda: self.model.embed(protocol.decode_image(image)),
                                           lambda e: e.nbytes)
        return emb

    def track(self, image: bytes, req: wire.TrackRequest) -> dict[str, Any]:
        """``{"shapes": [...], "states": [...]}``, index-aligned with the request's objects."""
        emb = self.embedding(image)
        outcomes = []
        for obj in req.objects:
            if obj.state is not None:
                outcomes.append(self.follow(emb, obj.state, req.threshold))
            else:
                assert obj.shape is not None
                outcomes.append(self.start(emb, obj.shape, req.threshold, f"shapes[{obj.index}]"))
        return {"shapes": [o.shape for o in outcomes], "states": [o.state.to_json() for o in outcomes]}

    # ------------------------------------------------------------------------------- start
    def start(self, emb: model_mod.Embedding, shape: wire.Shape, threshold: float, where: str) -> Outcome:
        width, height = emb.width, emb.height
        if shape.type == "rectangle":
            box = wire.rectangle_box(shape, width, height, where)
            cands = self.model.candidates(emb, box, None, multimask=True, threshold=threshold)
            best = int(np.argmax(cands.scores))
            mask, low_res = cands.masks[best], cands.low_res[best]
            region = mask if mask.any() else box_mask(box, width, height)
        else:
            mask = wire.shape_mask(shape, width, height, where)
            box = wire.mask_box(mask)
            assert box is not None
            side = self.model.low_res_size
            frac = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
            low_res = (frac * 2 - 1) * DRAWN_MASK_LOGIT
            region = mask
        state = wire.ObjectState(shape.type, width, height, box, np.zeros(2, np.float32),
                                 crop_logits(low_res, box, width, height), self.template(emb, region),
                                 legacy=shape.legacy)
        return Outcome(shape.echo(), state)

    # ------------------------------------------------------------------------------ follow
    def follow(self, emb: model_mod.Embedding, state: wire.ObjectState, threshold: float) -> Outcome:
        width, height = emb.width, emb.height
        st = state.rescaled(width, height)
        moved = st.box + np.concatenate([st.velocity, st.velocity])
        box = wire.clip_box(moved, width, height)
        if box is None:  # coasted out of the image
            return self._lost(st, moved)
        prompt = paste_logits(st.logits, box, width, height, self.model.low_res_size) \
            if self.config.mask_prompt else None
        cands = self.model.candidates(emb, box, prompt, multimask=True, threshold=threshold)
        best, best_score, best_sim = -1, -np.inf, 0.0
        for k, mask in enumerate(cands.masks):
            if not mask.any():
                continue
            sim = 0.0 if st.template is None else float(st.template @ self.template(emb, mask))
            score = float(cands.scores[k]) + self.config.similarity_weight * sim
            if score > best_score:
                best, best_score, best_sim = k, score, sim
        if best < 0 or cands.object_logit <= 0 or best_sim < self.config.min_similarity:
            return self._lost(st, moved)
        mask = cands.masks[best]
        new_box = wire.mask_box(mask)
        assert new_box is not None
        if not self._plausible(st.box, new_box):
            return self._lost(st, moved)
        answer = self.answer(st, mask, new_box)
        if answer is None:
            return self._lost(st, moved)
        shift = centre(new_box) - centre(st.box)
        velocity = (1 - VELOCITY_SMOOTHING) * st.velocity + VELOCITY_SMOOTHING * shift
        view = self.template(emb, mask)
        template = view if st.template is None else \
            wire.unit(TEMPLATE_MOMENTUM * st.template + (1 - TEMPLATE_MOMENTUM) * view)
        new_state = replace(st, box=new_box, velocity=velocity.astype(np.float32),
                            logits=crop_logits(cands.low_res[best], new_box, width, height),
                            template=template, lost=0, frames=st.frames + 1)
        return Outcome(answer, new_state)

    def _lost(self, st: wire.ObjectState, moved: np.ndarray) -> Outcome:
        box = wire.clip_box(moved, st.width, st.height)
        return Outcome(None, replace(st, box=st.box if box is None else box,
                                     velocity=(st.velocity * LOST_VELOCITY_DECAY).astype(np.float32),
                                     lost=st.lost + 1, frames=st.frames + 1))

    def _plausible(self, old: np.ndarray, new: np.ndarray) -> bool:
        limit = self.config.max_scale_change
        for a, b in ((old[2] - old[0], new[2] - new[0]), (old[3] - old[1], new[3] - new[1])):
            if not 1 / limit <= b / a <= limit:
                return False
        return True

    def answer(self, st: wire.ObjectState, mask: np.ndarray, box: np.ndarray) -> Any:
        """The tracked shape in the type it started as (None when a polygon has no 3-vertex outline)."""
        if st.type == "rectangle":
            points = [float(v) for v in box]
            return points if st.legacy else {"type": "rectangle", "points": points}
        if st.type == "polygon":
            polys = protocol.mask_to_polygons(mask, self.config.polygon_epsilon)
            return {"type": "polygon", "points": [float(v) for v in polys[0]]} if polys else None
        return {"type": "mask", "points": protocol.encode_rle(mask)}

    def template(self, emb: model_mod.Embedding, region: np.ndarray) -> np.ndarray:
        """Unit appearance vector of a region (bool H x W): the image embedding averaged over it."""
        side = self.model.embedding_size
        weights = cv2.resize(region.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
        if weights.sum() <= 0:  # thinner than one embedding cell: take the cell under its centre
            ys, xs = np.nonzero(region)
            weights[int(ys.mean() * side / region.shape[0]), int(xs.mean() * side / region.shape[1])] = 1
        return wire.unit(self.model.pooled_features(emb, weights))


# --------------------------------------------------------------------------------- geometry

def centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


def box_mask(box: np.ndarray, width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    mask[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)] = True
    return mask


def _window(box: np.ndarray, width: int, height: int, side: int) -> tuple[int, int, int, int]:
    """The box in low-resolution cells (x1, y1, x2, y2; at least one cell), unclipped."""
    sx, sy = side / width, side / height
    x1, y1 = int(np.floor(box[0] * sx)), int(np.floor(box[1] * sy))
    x2, y2 = int(np.ceil(box[2] * sx)), int(np.ceil(box[3] * sy))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def crop_logits(low_res: np.ndarray, box: np.ndarray, width: int, height: int) -> np.ndarray:
    """The logits (L x L over the whole image) inside ``box``, resampled to GRID x GRID."""
    side = low_res.shape[0]
    x1, y1, x2, y2 = _window(box, width, height, side)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(side, x2), min(side, y2)
    crop = np.ascontiguousarray(low_res[y1:y2, x1:x2], np.float32)
    return cv2.resize(crop, (wire.GRID, wire.GRID), interpolation=cv2.INTER_LINEAR)


def paste_logits(logits: np.ndarray, box: np.ndarray, width: int, height: int, side: int) -> np.ndarray:
    """Stored GRID x GRID logits stretched over ``box`` on a ``side`` x ``side`` background."""
    canvas = np.full((side, side), BACKGROUND_LOGIT, np.float32)
    x1, y1, x2, y2 = _window(box, width, height, side)
    patch = cv2.resize(logits, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR).reshape(y2 - y1, x2 - x1)
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(side, x2), min(side, y2)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1:cy2, cx1:cx2] = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
    return canvas

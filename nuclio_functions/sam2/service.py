"""The interactor's request logic: cached embedding, prompts, CVAT-shaped answer (no Nuclio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache import EmbeddingCache, image_key
from model import Embedding, Sam2Model
from protocol import (
    BatchRequest,
    InteractorRequest,
    RequestError,
    batch_result,
    check_prompt,
    decode_image,
    interactor_shape,
)


@dataclass(frozen=True)
class ServiceConfig:
    multimask: str = "always"  # interactor: always | auto (only for a single click) | never
    polygon_epsilon: float = 2.5
    max_prompts: int = 256


class Sam2Service:
    """One model + one embedding cache; answers interactor and batch requests."""

    def __init__(self, model: Sam2Model, cache: EmbeddingCache[Embedding], config: ServiceConfig):
        if config.multimask not in ("always", "auto", "never"):
            raise ValueError(f"multimask must be always, auto or never, not {config.multimask!r}")
        self.model = model
        self.cache = cache
        self.config = config

    def embedding(self, image: bytes) -> tuple[Embedding, bool]:
        """(embedding, cache hit); the image is decoded and encoded only on a miss."""
        return self.cache.get_or_compute(image_key(image, self.model.model_id),
                                         lambda: self.model.embed(decode_image(image)), lambda e: e.nbytes)

    def interact(self, req: InteractorRequest) -> dict[str, Any]:
        """CVAT interactor answer: ``{"shapes": [mask]}``, or ``{"shapes": []}`` for an empty mask
        and for a prompt without a positive point or a box (checked, but the model is not run)."""
        if req.prompt.is_empty:
            height, width = decode_image(req.image).shape[:2]
            check_prompt(req.prompt, width, height)
            return {"shapes": []}
        emb, _ = self.embedding(req.image)
        check_prompt(req.prompt, emb.width, emb.height)
        pos, neg, box = req.prompt
        single_click = len(pos) + len(neg) == 1 and box is None
        multimask = self.config.multimask == "always" or (self.config.multimask == "auto" and single_click)
        pred = self.model.predict(emb, pos, neg, box, multimask=multimask, threshold=req.threshold)
        if not pred.mask.any():
            return {"shapes": []}
        return {"shapes": [interactor_shape(pred.mask)]}

    def batch(self, req: BatchRequest) -> dict[str, Any]:
        """``{"results": [...]}``, one per prompt in order; one encode for the whole request."""
        emb, _ = self.embedding(req.image)
        results: list[dict[str, Any] | None] = [None] * len(req.prompts)
        valid: list[int] = []
        for i, prompt in enumerate(req.prompts):
            try:
                check_prompt(prompt, emb.width, emb.height, where=f"prompts[{i}]")
                valid.append(i)
            except RequestError as exc:
                results[i] = {"error": str(exc)}
        preds = self.model.predict_many(emb, [req.prompts[i] for i in valid], multimask=req.multimask,
                                        threshold=req.threshold) if valid else []
        for i, pred in zip(valid, preds, strict=True):
            results[i] = batch_result(pred.mask, pred.score, self.config.polygon_epsilon)
        return {"results": results}


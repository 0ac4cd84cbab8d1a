"""SAM 2 model wrapper: one image encode (``embed``), many cheap prompt decodes (``predict``).

Pure: images and prompts in, numpy masks and scores out; no Nuclio, no JSON, no environment.
Shared by ``sam2`` (interactor), ``sam2_auto`` (detector) and ``sam2_tracker`` (``candidates``,
``pooled_features``); it imports no sibling module, so the others load it from a copied file
(``shared-modules.txt``, ``../deploy.sh``).

The per-image state of ``SAM2ImagePredictor`` (``_features``, ``_orig_hw``) is captured into an
``Embedding`` value after ``set_image``; ``predict`` puts it back under a lock and runs only the
prompt encoder and mask decoder, so an ``Embedding`` can live in a cache and be reused.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# Upper bound on the float mask logits one decoder call may upsample (prompts x masks x H x W x 4 B);
# larger batches are split into chunks so a 20 MP frame does not allocate gigabytes at once.
DECODER_CHUNK_BYTES = 512 * 1024 * 1024
# Prompts per decoder call by device. Measured on a 2-core CPU (hiera-t, 1024x768, 16 boxes):
# batches of 2-4 were fastest (696-760 ms) and 16 the slowest (1139 ms); a GPU gains from large ones.
DEFAULT_DECODER_BATCH = {"cpu": 4, "cuda": 64}

PromptTuple = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


class ModelLoadError(RuntimeError):
    """The configured SAM 2 config/checkpoint/device cannot be loaded."""


@dataclass(frozen=True)
class Embedding:
    """Encoder output for one image: the predictor's ``_features`` and the original size."""

    features: dict[str, Any]
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        tensors = [self.features["image_embed"], *self.features["high_res_feats"]]
        return int(sum(t.numel() * t.element_size() for t in tensors))


@dataclass(frozen=True)
class Candidates:
    """Decoder output for one box prompt: ``masks`` (C x H x W bool, image size), ``scores`` (C,
    predicted IoU), ``low_res`` (C x L x L logits over the whole image), ``object_logit`` (SAM 2's
    object-presence logit: > 0 means the object is there)."""

    masks: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray
    object_logit: float


@dataclass(frozen=True)
class Prediction:
    """Best mask of one prompt (bool H x W) and its predicted IoU score."""

    mask: np.ndarray
    score: float


def pick_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ModelLoadError(f"device must be auto, cpu or cuda, not {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but torch sees no CUDA device")
    return requested


def load_sam2(config: str, checkpoint: str | None, device: str, image_size: int | None = None) -> SAM2Base:
    """Build SAM 2 from its hydra config name; ``checkpoint=None`` means random weights (tests only).

    ``image_size`` overrides the square input the encoder runs at (the configs say 1024; a multiple of
    64, e.g. 512, costs ~4x less on a CPU; quality with trained weights at other sizes not measured)."""
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise ModelLoadError(f"SAM 2 checkpoint not found: {checkpoint!r}")
    if image_size is not None and (image_size < 256 or image_size % 64):
        raise ModelLoadError(f"image size must be a multiple of 64 and at least 256, got {image_size}")
    if checkpoint is None:
        log.warning("SAM 2 built with RANDOM weights from %s: test-only mode, masks are meaningless", config)
    if device == "cuda" and torch.cuda.get_device_properties(0).major >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        extra = [f"++model.image_size={image_size}"] if image_size else []
        return build_sam2(config, ckpt_path=checkpoint, device=device, hydra_overrides_extra=extra)
    except Exception as exc:  # hydra/torch raise many types; report them as one load failure
        raise ModelLoadError(
            f"cannot build SAM 2 from config {config!r}, checkpoint {checkpoint!r}: {exc}") from exc


def logit(probability: float) -> float:
    """Mask threshold as a logit: the decoder's masks are logits, CVAT's threshold a probability."""
    return math.log(probability / (1.0 - probability))


class Sam2Model:
    """One SAM 2 network and its image predictor; thread-safe (calls are serialised)."""

    def __init__(self, sam_model: SAM2Base, model_id: str, decoder_batch: int = 0):
        """``decoder_batch``: most prompts per decoder call; 0 = the device's default."""
        if decoder_batch < 0:
            raise ValueError(f"decoder_batch must be >= 0, got {decoder_batch}")
        self.sam_model = sam_model
        self.model_id = model_id
        self.predictor = SAM2ImagePredictor(sam_model)
        # The predictor hard-codes the backbone feature sizes of a 1024² input; follow the model's.
        size = int(sam_model.image_size)
        self.predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        self.device = str(sam_model.device)
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        self.decoder_batch = decoder_batch or DEFAULT_DECODER_BATCH[kind]
        self._lock = threading.Lock()

    @classmethod
    def load(cls, config: str = DEFAULT_CONFIG, checkpoint: str | None = None,
             device: str = "auto", decoder_batch: int = 0, image_size: int | None = None) -> Sam2Model:
        dev = pick_device(device)
        model_id = f"{config}|{checkpoint or 'random'}" + (f"|{image_size}" if image_size else "")
        return cls(load_sam2(config, checkpoint, dev, image_size), model_id=model_id, decoder_batch=decoder_batch)

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for a 1024² input)."""
        return int(self.sam_model.sam_image_embedding_size)

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (4 x the embedding grid: 256 for 1024²)."""
        return 4 * self.embedding_size

    def _inference(self) -> contextlib.AbstractContextManager[None]:
        return inference_context(self.device)

    def embed(self, image_rgb: np.ndarray) -> Embedding:
        """Run the image encoder once (input resized to the model's 1024² inside)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
        with self._lock, self._inference():
            self.predictor.set_image(image_rgb)
            emb = Embedding(self.predictor._features, int(image_rgb.shape[0]), int(image_rgb.shape[1]))
            self.predictor.reset_predictor()
        return emb

    def predict(self, embedding: Embedding, pos: np.ndarray, neg: np.ndarray, box: np.ndarray | None,
                multimask: bool = True, threshold: float = 0.5) -> Prediction:
        """One prompt; with ``multimask`` the best of SAM's three masks by predicted IoU."""
        return self.predict_many(embedding, [(pos, neg, box)], multimask, threshold)[0]

    def predict_many(self, embedding: Embedding, prompts: Sequence[PromptTuple], multimask: bool = False,
                     threshold: float = 0.5) -> list[Prediction]:
        """Several prompts on one embedding, in order; prompts of the same shape (box or not,
        number of points) go through the decoder as one batch.

        Each prompt is ``(pos (N,2), neg (M,2), box (4,) x1,y1,x2,y2 or None)`` in image pixels;
        it needs at least one point or a box. ``threshold`` is a mask probability in (0, 1).
        """
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        groups: dict[tuple[bool, int], list[int]] = {}
        for i, (pos, neg, box) in enumerate(prompts):
            n = len(pos) + len(neg)
            if n == 0 and box is None:
                raise ValueError(f"prompt {i} has neither points nor a box")
            groups.setdefault((box is not None, n), []).append(i)
        out: list[Prediction | None] = [None] * len(prompts)
        n_masks = 3 if multimask else 1
        per_prompt = n_masks * embedding.height * embedding.width * 4
        chunk = max(1, min(self.decoder_batch, DECODER_CHUNK_BYTES // per_prompt))
        with self._lock, self._inference():
            self._load_state(embedding)
            try:
                for (has_box, n_points), idx in groups.items():
                    for start in range(0, len(idx), chunk):
                        part = idx[start:start + chunk]
                        preds = self._decode([prompts[i] for i in part], has_box, n_points, multimask,
                                             logit(threshold))
                        for i, p in zip(part, preds, strict=True):
                            out[i] = p
            finally:
                self.predictor.reset_predictor()
        return [p for p in out if p is not None]

    def _load_state(self, embedding: Embedding) -> None:
        p = self.predictor
        p._features = embedding.features
        p._orig_hw = [(embedding.height, embedding.width)]
        p._is_image_set = True
        p._is_batch = False

    def _decode(self, prompts: list[PromptTuple], has_box: bool, n_points: int, multimask: bool,
                mask_logit: float) -> list[Prediction]:
        p = self.predictor
        hw = p._orig_hw[0]
        dev = p.device
        coords = labels = boxes = None
        if n_points:
            pts = np.stack([np.concatenate([np.asarray(pos, np.float32).reshape(-1, 2),
                                            np.asarray(neg, np.float32).reshape(-1, 2)])
                            for pos, neg, _ in prompts])
            lab = np.stack([np.concatenate([np.ones(len(pos), np.int32), np.zeros(len(neg), np.int32)])
                            for pos, neg, _ in prompts])
            coords = p._transforms.transform_coords(torch.as_tensor(pts, device=dev), normalize=True,
                                                    orig_hw=hw)
            labels = torch.as_tensor(lab, device=dev)
        if has_box:
            bx = np.stack([np.asarray(box, np.float32).reshape(4) for _, _, box in prompts])
            boxes = p._transforms.transform_boxes(torch.as_tensor(bx, device=dev), normalize=True, orig_hw=hw)
        masks, scores, _ = p._predict(coords, labels, boxes, None, multimask_output=multimask,
                                      return_logits=True)
        scores = scores.float()
        best = scores.argmax(dim=1)
        rows = torch.arange(len(prompts), device=best.device)
        chosen = (masks[rows, best] > mask_logit).cpu().numpy()
        best_scores = scores[rows, best].cpu().numpy()
        return [Prediction(chosen[k], float(best_scores[k])) for k in range(len(prompts))]

    def candidates(self, embedding: Embedding, box: np.ndarray, mask_input: np.ndarray | None = None,
                   multimask: bool = True, threshold: float = 0.5) -> Candidates:
        """All masks the decoder proposes for one box (x1,y1,x2,y2 in image pixels) and an optional
        low-resolution mask prompt (L x L logits over the whole image, ``L = low_res_size``), with
        their predicted IoU, their low-resolution logits and SAM 2's object-presence logit."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        side = self.low_res_size
        if mask_input is not None and mask_input.shape != (side, side):
            raise ValueError(f"mask_input must be {side} x {side}, got {mask_input.shape}")
        with self._lock, self._inference():
            self._load_state(embedding)
            try:
                p = self.predictor
                hw = p._orig_hw[0]
                bx = torch.as_tensor(np.asarray(box, np.float32).reshape(1, 4), device=p.device)
                coords = p._transforms.transform_boxes(bx, normalize=True, orig_hw=hw).reshape(1, 2, 2)
                labels = torch.tensor([[2, 3]], dtype=torch.int, device=p.device)
                dense_in = None if mask_input is None else torch.as_tensor(
                    mask_input, dtype=torch.float, device=p.device)[None, None]
                sparse, dense = self.sam_model.sam_prompt_encoder(points=(coords, labels), boxes=None,
                                                                  masks=dense_in)
                low_res, iou, _, object_logit = self.sam_model.sam_mask_decoder(
                    image_embeddings=p._features["image_embed"][0:1],
                    image_pe=self.sam_model.sam_prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                    multimask_output=multimask, repeat_image=False,
                    high_res_features=[f[0:1] for f in p._features["high_res_feats"]])
                masks = p._transforms.postprocess_masks(low_res, hw)[0] > logit(threshold)
                return Candidates(masks.cpu().numpy(), iou[0].float().cpu().numpy(),
                                  torch.clamp(low_res[0], -32.0, 32.0).float().cpu().numpy(),
                                  float(object_logit.float().reshape(-1)[0]))
            finally:
                self.predictor.reset_predictor()

    def pooled_features(self, embedding: Embedding, weights: np.ndarray) -> np.ndarray:
        """The image embedding (C x E x E) averaged with ``weights`` (E x E, >= 0, not all zero):
        an appearance descriptor of one region, (C,) float32."""
        side = self.embedding_size
        if weights.shape != (side, side) or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(f"weights must be {side} x {side}, non-negative and not all zero")
        feats = embedding.features["image_embed"][0].float().cpu().numpy()  # C x E x E
        w = weights.astype(np.float32)
        return np.tensordot(feats, w, axes=([1, 2], [0, 1])) / float(w.sum())

    def warm_up(self) -> None:
        """One encode and one decode on a dummy image, so the first real click is not a cold start."""
        img = np.full((64, 64, 3), 127, np.uint8)
        emb = self.embed(img)
        self.predict(emb, np.array([[32.0, 32.0]]), np.zeros((0, 2)), None)


@contextlib.contextmanager
def inference_context(device: str) -> Iterator[None]:
    """bf16 autocast on CUDA, plain fp32 on CPU; always without autograd (``Sam2Model`` and the generator)."""
    cuda = device.startswith("cuda")
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        yield


class AutoMaskModel:
    """``SAM2AutomaticMaskGenerator`` over a built model: a prompt grid, all masks of one image."""

    def __init__(self, sam_model: SAM2Base, params: dict[str, Any]):
        try:
            self.generator = SAM2AutomaticMaskGenerator(sam_model, output_mode="binary_mask", **params)
        except TypeError as exc:
            raise ModelLoadError(f"bad automatic mask generator parameters {params}: {exc}") from exc
        self.device = str(sam_model.device)
        self._lock = threading.Lock()

    def generate(self, image_rgb: np.ndarray) -> list[Prediction]:
        """Masks of the image, best predicted IoU first."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"image must be H x W x 3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
        with self._lock, inference_context(self.device):
            records = self.generator.generate(image_rgb)
        preds = [Prediction(np.asarray(r["segmentation"], bool), float(r["predicted_iou"])) for r in records]
        return sorted(preds, key=lambda p: p.score, reverse=True)

    def warm_up(self) -> None:
        self.generate(np.full((64, 64, 3), 127, np.uint8))

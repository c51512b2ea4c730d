"""A test-only engine (samgis.engine.protocol.Engine) that segments the flat colour region under a click.

On scene tiles (tests/support/scene.py) every shape is one exact colour, so the mask of a click on
a shape is exactly the shape's pixels: what comes back from the service can be compared with the
shape's known lng/lat polygon.

Rules, per query (one per box, or one for the points alone):
- seed: the first include point (label 1) — for a box, the first include point inside the box,
  else the box centre. The seed pixel is the one whose centre is nearest: (row, col) =
  floor((y, x) + 0.5) in image px, SAM convention (integer values are pixel centres).
- mask: the 4-connected region of exactly the seed pixel's colour that holds the seed pixel,
  intersected with the box (pixels whose centres lie in [x0, x1] x [y0, y1]).
- an exclude point (label 0) whose pixel is in that mask empties the mask; a seed off the image,
  or points with no include point and no box, give an empty mask.
- multimask: 3 masks (the mask, the mask eroded by 2 px, dilated by 2 px), scores 0.9, 0.8, 0.7;
  otherwise 1 mask, score 0.95. `Prompts.mask_input` is ignored.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from scipy import ndimage

from samgis.engine.amg import generate_with_point_batches
from samgis.engine.protocol import AmgOptions, Capabilities, DecodeResult, Embedding, ModelCard, Prompts

SINGLE_SCORE = 0.95
MULTI_SCORES = (0.9, 0.8, 0.7)
LOGIT = 10.0
LOW_RES = 256
MODEL_SIDE = 1024


def sam_input_size(h: int, w: int, side: int = MODEL_SIDE) -> tuple[int, int]:
    """(h, w) after SAM's resize of the longest side to `side` (before padding).

    >>> sam_input_size(1024, 1024), sam_input_size(600, 300)
    ((1024, 1024), (1024, 512))
    """
    scale = side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def pixel_under(x: float, y: float, shape: tuple[int, int]) -> tuple[int, int] | None:
    """(row, col) of the pixel whose centre is nearest (x, y) image px (SAM convention), None when off the image.

    >>> pixel_under(3.0, 1.49, (4, 4)), pixel_under(3.51, 0.0, (4, 4))
    ((1, 3), None)
    """
    row, col = int(np.floor(y + 0.5)), int(np.floor(x + 0.5))
    if 0 <= row < shape[0] and 0 <= col < shape[1]:
        return row, col
    return None


def colour_region(image: np.ndarray, row: int, col: int) -> np.ndarray:
    """(H, W) bool: the 4-connected region of pixels of exactly image[row, col]'s colour holding (row, col).

    `image`: (H, W, 3) uint8 RGB, image px (row, col).
    """
    same = np.all(image == image[row, col], axis=-1)
    labels, _ = ndimage.label(same)  # default structure: 4-connectivity
    return labels == labels[row, col]


def box_mask(box: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels whose centres lie in the box.

    `box`: (4,) float (x0, y0, x1, y1) image px, SAM convention (integer values are pixel centres);
    corners may come in any order.
    """
    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    rows = np.arange(shape[0])
    cols = np.arange(shape[1])
    return ((rows >= y0) & (rows <= y1))[:, None] & ((cols >= x0) & (cols <= x1))[None, :]


def in_box(x: float, y: float, box: np.ndarray) -> bool:
    """Whether (x, y) image px lies in the box (x0, y0, x1, y1), edges included."""
    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    return x0 <= x <= x1 and y0 <= y <= y1


def low_res_logits(mask: np.ndarray) -> np.ndarray:
    """(256, 256) float32 logits (+10 inside, -10 outside) in SAM's low-res frame for an (H, W) bool mask.

    SAM's frame: the image scaled so its longest side is 1024, padded bottom/right to 1024 x 1024,
    then / 4. Each low-res pixel takes the mask value at its centre (nearest neighbour); padding is
    outside.
    """
    h, w = mask.shape
    centres = np.floor((np.arange(LOW_RES) + 0.5) * max(h, w) / LOW_RES).astype(np.int64)
    rows, cols = centres[centres < h], centres[centres < w]
    out = np.full((LOW_RES, LOW_RES), -LOGIT, np.float32)
    out[: len(rows), : len(cols)] = np.where(mask[np.ix_(rows, cols)], LOGIT, -LOGIT)
    return out


def seed_point(prompts: Prompts, box: np.ndarray | None) -> tuple[float, float] | None:
    """(x, y) image px the query segments from: first include point (inside the box), else the box centre."""
    include = prompts.points[prompts.labels == 1]
    for x, y in include:
        if box is None or in_box(x, y, box):
            return float(x), float(y)
    if box is not None:
        return (float(box[0] + box[2]) / 2.0, float(box[1] + box[3]) / 2.0)
    return None


def query_mask(image: np.ndarray, prompts: Prompts, box: np.ndarray | None) -> np.ndarray:
    """(H, W) bool mask of one query on an (H, W, 3) uint8 image (module docstring has the rules)."""
    shape = image.shape[:2]
    empty = np.zeros(shape, bool)
    seed = seed_point(prompts, box)
    pixel = pixel_under(*seed, shape) if seed is not None else None
    if pixel is None:
        return empty
    mask = colour_region(image, *pixel)
    if box is not None:
        mask &= box_mask(box, shape)
    for x, y in prompts.points[prompts.labels == 0]:
        p = pixel_under(float(x), float(y), shape)
        if p is not None and mask[p]:
            return empty
    return mask


class ColourRegionEngine:
    """Engine protocol implementation for tests; thread-safe, no model, no torch.

    `embed_calls`: how many times `embed` ran. `embed_delay_s`: seconds `embed` sleeps, to act
    like a slow encoder (settable at any time). `capabilities`: what `describe()` claims (tests of
    requests a model cannot serve).
    """

    def __init__(self, model_id: str = "test-colour", embed_delay_s: float = 0.0,
                 capabilities: Capabilities = Capabilities(automatic=True)):
        self.model_id = model_id
        self.capabilities = capabilities
        self.embed_delay_s = embed_delay_s
        self._lock = threading.Lock()
        self._embed_calls = 0

    @property
    def embed_calls(self) -> int:
        with self._lock:
            return self._embed_calls

    def embed(self, image: np.ndarray) -> Embedding:
        """Keep a read-only copy of `image`: (H, W, 3) uint8 RGB, image px (row, col)."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {img.shape} {img.dtype}")
        with self._lock:
            self._embed_calls += 1
        if self.embed_delay_s:
            time.sleep(self.embed_delay_s)
        features = img.copy()
        features.flags.writeable = False
        h, w = img.shape[:2]
        return Embedding(features=features, original_size=(h, w), input_size=sam_input_size(h, w),
                         model_id=self.model_id, nbytes=features.nbytes)

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """Masks (Q, M, H, W) bool, scores (Q, M) float32, logits (Q, M, 256, 256) float32; prompts in image px."""
        image = embedding.features
        boxes = list(prompts.boxes) if len(prompts.boxes) else [None]
        masks = []
        for box in boxes:
            m = query_mask(image, prompts, box)
            if multimask:
                masks.append([m, ndimage.binary_erosion(m, iterations=2), ndimage.binary_dilation(m, iterations=2)])
            else:
                masks.append([m])
        masks_arr = np.array(masks, dtype=bool)
        n_q, n_m = masks_arr.shape[:2]
        scores = np.tile(np.array(MULTI_SCORES if multimask else (SINGLE_SCORE,), np.float32), (n_q, 1))
        logits = np.stack([np.stack([low_res_logits(m) for m in q]) for q in masks_arr]).astype(np.float32)
        return DecodeResult(masks=masks_arr, scores=scores, logits=logits.reshape(n_q, n_m, LOW_RES, LOW_RES))

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        return await asyncio.to_thread(self.decode, embedding, prompts, multimask)

    def generate(self, embedding: Embedding, options: AmgOptions, image: np.ndarray | None = None) -> list[dict]:
        """Meta's generator over `decode`, one query per grid point (records as `Engine.generate`)."""
        return generate_with_point_batches(self, embedding, options, image)

    def describe(self) -> ModelCard:
        return ModelCard(model_id=self.model_id, backend="test-colour-region", device="cpu", dtype="uint8",
                         input_size=MODEL_SIDE, embedding_version="colour-1",
                         capabilities=self.capabilities, extra={"test_double": True})


class BrokenDecodeEngine(ColourRegionEngine):
    """`ColourRegionEngine` whose decode fails with an exception whose text holds internals (a file path), to
    check that answers never echo them."""

    SECRET = "/srv/secret/weights.pth: decoder exploded"

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        raise RuntimeError(self.SECRET)

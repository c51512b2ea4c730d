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

Concept prompts (`find`, when built with `Capabilities(text=True, exemplars=True)`): a colour name finds
every colour region of that colour family. A region's family is the name in `COLOUR_FAMILIES` whose
reference RGB is nearest (Euclidean) its exact colour, so shapes of distinct colours can share a family
("red" finds (200, 30, 30) and (220, 60, 40)). A positive exemplar box adds the family of the pixel under
its centre; a negative one removes that family. Score: 1 - distance to the family's reference / 442,
instances ordered by score, then by first pixel. `text` may also be "#rrggbb" (that exact colour only).

Automatic masks (`generate`): `automatic="grid"` (default) runs Meta's generator over per-point decodes;
`automatic="regions"` returns every 4-connected colour region of the window as one mask record
(`colour_regions`), so stitching of automatic masks across windows can be checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from scipy import ndimage

from samgis.engine.amg import generate_with_point_batches
from samgis.engine.protocol import (AmgOptions, Capabilities, ConceptPrompt, DecodeResult, Embedding,
                                    FoundInstances, ModelCard, Prompts, require)

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


REGION_SCORE = 0.95
"""`predicted_iou` of every record of `colour_regions` (`stability_score` is 1.0)."""

#: Colour families of concept prompts: name -> reference RGB (see the module docstring).
COLOUR_FAMILIES = {
    "red": (220, 30, 30), "green": (40, 170, 40), "blue": (30, 60, 220), "yellow": (230, 220, 40),
    "orange": (240, 140, 20), "purple": (140, 40, 170), "cyan": (40, 200, 210), "magenta": (220, 40, 200),
    "brown": (130, 80, 40), "white": (250, 250, 250), "black": (10, 10, 10), "grey": (128, 128, 128),
    "beige": (235, 235, 220),
}
_FAMILY_NAMES = tuple(COLOUR_FAMILIES)
_FAMILY_RGB = np.array([COLOUR_FAMILIES[n] for n in _FAMILY_NAMES], np.float64)
_MAX_DIST = 442.0  # just over the RGB cube's diagonal, sqrt(3) * 255


def colour_family(rgb) -> tuple[str, float]:
    """(family name, distance to its reference) of one RGB colour (3 ints 0..255)."""
    d = np.linalg.norm(_FAMILY_RGB - np.asarray(rgb, np.float64), axis=1)
    i = int(np.argmin(d))
    return _FAMILY_NAMES[i], float(d[i])


def _parse_hex(text: str) -> tuple[int, int, int] | None:
    t = text.strip().lower()
    if len(t) == 7 and t[0] == "#":
        try:
            return int(t[1:3], 16), int(t[3:5], 16), int(t[5:7], 16)
        except ValueError:
            return None
    return None


def find_colour_instances(image: np.ndarray, concept: ConceptPrompt, score_threshold: float) -> FoundInstances:
    """Every colour region of `image` ((H, W, 3) uint8 RGB, image px) matching `concept` (module docstring).

    Returns `FoundInstances`: masks (N, H, W) bool, scores (N,) float32, boxes (N, 4) float32 (x0, y0, x1, y1)
    image px SAM convention (outer pixel centres of each region). An unknown colour name finds nothing.
    """
    h, w = image.shape[:2]
    wanted_families, wanted_exact, unwanted = set(), set(), set()
    if concept.text:
        exact = _parse_hex(concept.text)
        if exact is not None:
            wanted_exact.add(exact)
        elif concept.text.lower() in COLOUR_FAMILIES:
            wanted_families.add(concept.text.lower())
    for box, label in zip(concept.boxes, concept.labels):
        pixel = pixel_under((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, (h, w))
        if pixel is not None:
            family = colour_family(image[pixel])[0]
            (wanted_families if label == 1 else unwanted).add(family)
    found = []
    for rec in colour_regions(image):
        seg = rec["segmentation"]
        rgb = tuple(int(v) for v in image[np.unravel_index(int(np.flatnonzero(seg)[0]), (h, w))])
        family, dist = colour_family(rgb)
        if family in unwanted or not (rgb in wanted_exact or family in wanted_families):
            continue
        score = 1.0 if rgb in wanted_exact else 1.0 - dist / _MAX_DIST
        if score < score_threshold:
            continue
        x, y, bw, bh = rec["bbox"]
        found.append((score, seg, (x, y, x + bw - 1, y + bh - 1)))
    found.sort(key=lambda t: -t[0])  # stable: ties keep first-pixel order
    if not found:
        return FoundInstances(masks=np.zeros((0, h, w), bool), scores=np.zeros((0,), np.float32),
                              boxes=np.zeros((0, 4), np.float32))
    return FoundInstances(masks=np.stack([f[1] for f in found]), scores=np.array([f[0] for f in found], np.float32),
                          boxes=np.array([f[2] for f in found], np.float32))


def colour_regions(image: np.ndarray, min_area: int = 0) -> list[dict]:
    """One automatic-mask record per 4-connected region of one exact colour in `image`.

    `image`: (H, W, 3) uint8 RGB, image px (row, col). Records are `Engine.generate`'s: `segmentation`
    (H, W) bool, `bbox` [x, y, w, h] px, `area` px, `predicted_iou` (REGION_SCORE), `stability_score` 1.0,
    `point_coords` [[x, y]] (the region's first pixel in row-major order, SAM convention: its centre),
    `crop_box` [0, 0, W, H]. Ordered by that first pixel; regions under `min_area` px are left out.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    key = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    found = []
    for colour in np.unique(key):
        labels, n = ndimage.label(key == colour)  # default structure: 4-connectivity
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            region = labels[sl] == k
            area = int(region.sum())
            if area < max(1, min_area):
                continue
            seg = np.zeros((h, w), bool)
            seg[sl] = region
            first = int(np.flatnonzero(seg)[0])
            found.append((first, seg, sl, area))
    records = []
    for first, seg, sl, area in sorted(found, key=lambda t: t[0]):
        r, c = divmod(first, w)
        records.append({"segmentation": seg,
                        "bbox": [sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start],
                        "area": area, "predicted_iou": REGION_SCORE, "stability_score": 1.0,
                        "point_coords": [[float(c), float(r)]], "crop_box": [0, 0, w, h]})
    return records


class ColourRegionEngine:
    """Engine protocol implementation for tests; thread-safe, no model, no torch.

    `embed_calls`: how many times `embed` ran. `embed_delay_s`: seconds `embed` sleeps, to act
    like a slow encoder (settable at any time). `capabilities`: what `describe()` claims (tests of
    requests a model cannot serve). `automatic`: "grid" (Meta's generator over decodes) or "regions" (every
    colour region is a mask), see the module docstring.
    """

    AUTOMATIC = ("grid", "regions")

    def __init__(self, model_id: str = "test-colour", embed_delay_s: float = 0.0,
                 capabilities: Capabilities = Capabilities(automatic=True), automatic: str = "grid"):
        if automatic not in self.AUTOMATIC:
            raise ValueError(f"automatic must be one of {self.AUTOMATIC}, not {automatic!r}")
        self.automatic = automatic
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
        """Records as `Engine.generate`: Meta's generator over `decode`, one query per grid point ("grid"), or
        every colour region of the embedded image ("regions", `options.min_mask_region_area` drops small ones)."""
        if self.automatic == "regions":
            return colour_regions(embedding.features, options.min_mask_region_area)
        return generate_with_point_batches(self, embedding, options, image)

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Every colour region matching `concept` (module docstring); refuses (422) without the capabilities."""
        require(self.describe(), concept.needs())
        return find_colour_instances(embedding.features, concept, score_threshold)

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


class InterruptedColourEngine(ColourRegionEngine):
    """`ColourRegionEngine` in "regions" mode whose `generate` raises KeyboardInterrupt on its call number
    `stop_at` (1-based): a job killed part-way through an item, for resume tests."""

    def __init__(self, stop_at: int, **kwargs):
        super().__init__(automatic="regions", **kwargs)
        self.stop_at = stop_at
        self.generate_calls = 0

    def generate(self, embedding: Embedding, options: AmgOptions, image: np.ndarray | None = None) -> list[dict]:
        self.generate_calls += 1
        if self.generate_calls >= self.stop_at:
            raise KeyboardInterrupt(f"killed at window {self.generate_calls}")
        return super().generate(embedding, options, image)

"""The engine protocol: `embed`, `decode`, `describe`.

Coordinate frame of prompts ("image px, SAM convention"): (x, y) = (column, row) in pixels of the
*original* image handed to `embed`, where integer values are pixel centres, exactly as
`segment_anything.SamPredictor.predict` takes them. A point given in rasterio's continuous pixel
frame (pixel i spans [i, i+1), centre i + 0.5) converts with `xy - 0.5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Embedding:
    """Per-image state produced by `Engine.embed`; immutable and safe to share between requests.

    `features`: backend-specific (for SAM a torch tensor (1, 256, 64, 64) on the model device).
    `original_size`: (H, W) of the image that was embedded.
    `input_size`: (h, w) of the image after resizing to the model's input frame, before padding.
    `nbytes`: memory held by `features` and `aux`, used to bound the embedding cache.
    `aux`: optional backend state derived from `features` once, to make decodes cheaper.
    """

    features: Any
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_id: str
    nbytes: int
    aux: Any = None


@dataclass(frozen=True)
class Prompts:
    """Prompts for one image, in image px, SAM convention (see module docstring).

    `points`: (N, 2) float32 (x, y); `labels`: (N,) int32, 1 = include, 0 = exclude.
    `boxes`: (B, 4) float32 (x0, y0, x1, y1). Each box decodes to its own mask(s), together with
    all the points; with no boxes the points decode once.
    `mask_input`: optional (1, 256, 256) float32 low-res logits from a previous decode.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    mask_input: np.ndarray | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, np.float32).reshape(-1, 2)
        lbl = np.asarray(self.labels, np.int32).reshape(-1)
        box = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        if len(pts) != len(lbl):
            raise ValueError(f"{len(pts)} points but {len(lbl)} labels")
        if len(pts) == 0 and len(box) == 0:
            raise ValueError("at least one point or box is needed")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "labels", lbl)
        object.__setattr__(self, "boxes", box)

    @property
    def n_queries(self) -> int:
        """Number of independent decodes: one per box, or one when there are only points."""
        return max(1, len(self.boxes))


@dataclass(frozen=True)
class DecodeResult:
    """Output of `Engine.decode` for Q = `Prompts.n_queries` queries and M masks per query.

    `masks`: (Q, M, H, W) bool in the original image frame (H, W = `Embedding.original_size`).
    `scores`: (Q, M) float32 predicted IoU. `logits`: (Q, M, 256, 256) float32 low-res logits.
    M is 3 with multimask, else 1.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


@dataclass(frozen=True)
class ModelCard:
    """What `describe()` returns: enough for /v1/models and the response metadata."""

    model_id: str
    backend: str
    device: str
    dtype: str
    image_size: int
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A segmentation model. Implementations must be safe to call from several threads."""

    model_id: str

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one image: (H, W, 3) uint8 RGB, H, W ≥ 1."""
        ...

    def decode(
        self, embedding: Embedding, prompts: Prompts, multimask: bool = False
    ) -> DecodeResult:
        """Decode prompts against an embedding. Pure: no state is kept between calls."""
        ...

    def describe(self) -> ModelCard:
        ...

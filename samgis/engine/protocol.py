"""The engine protocol: `embed`, `decode`, `generate`, `find`, `describe`.

Coordinate frame of prompts ("image px, SAM convention"): (x, y) = (column, row) in pixels of the
*original* image handed to `embed`, where integer values are pixel centres, exactly as
`segment_anything.SamPredictor.predict` takes them. A point given in rasterio's continuous pixel
frame (pixel i spans [i, i+1), centre i + 0.5) converts with `xy - 0.5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from samgis.errors import MissingCapability


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

    def features_for(self, model_id: str, kind: type) -> Any:
        """`features`, checked to come from engine `model_id` and to be a `kind`; ValueError otherwise (an
        embedding handed to the wrong engine)."""
        if self.model_id != model_id or not isinstance(self.features, kind):
            raise ValueError(f"embedding of {self.model_id!r} given to engine {model_id!r}")
        return self.features


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
class ConceptPrompt:
    """What to find with `Engine.find`: every instance of a noun phrase and/or of exemplar boxes (SAM 3's
    "promptable concept segmentation").

    `text`: a short noun phrase ("greenhouse", "swimming pool"), or None for exemplars only.
    `boxes`: (E, 4) float32 exemplar boxes (x0, y0, x1, y1) in image px, SAM convention.
    `labels`: (E,) int32, 1 = positive exemplar ("more like this"), 0 = negative ("not this").
    """

    text: str | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))

    def __post_init__(self) -> None:
        text = self.text.strip() if isinstance(self.text, str) else None
        box = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        lbl = np.asarray(self.labels, np.int32).reshape(-1)
        if len(box) != len(lbl):
            raise ValueError(f"{len(box)} exemplar boxes but {len(lbl)} labels")
        if not text and len(box) == 0:
            raise ValueError("a concept needs a text phrase or at least one exemplar box")
        object.__setattr__(self, "text", text or None)
        object.__setattr__(self, "boxes", box)
        object.__setattr__(self, "labels", lbl)

    def needs(self) -> list[str]:
        """The capabilities finding this concept needs."""
        return (["text"] if self.text else []) + (["exemplars"] if len(self.boxes) else [])


@dataclass(frozen=True)
class FoundInstances:
    """Output of `Engine.find`: N instances of one concept, best score first.

    `masks`: (N, H, W) bool in the original image frame (H, W = `Embedding.original_size`).
    `scores`: (N,) float32 in [0, 1], each ≥ the `score_threshold` asked for.
    `boxes`: (N, 4) float32 (x0, y0, x1, y1) image px, SAM convention: each instance's box as the model
    predicted it.
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class AmgOptions:
    """Automatic-mask parameters (the names of `SamAutomaticMaskGenerator`'s), with CPU-sane defaults
    (16 × 16 points, one crop). Every backend's `generate` takes them."""

    points_per_side: int = 16
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0

    def grid_points(self) -> int:
        """Point prompts decoded over all crop layers: layer i has 4**i crops of
        (points_per_side // downscale**i)² points each."""
        return sum(4**i * (self.points_per_side // self.crop_n_points_downscale_factor**i) ** 2
                   for i in range(self.crop_n_layers + 1))


@dataclass(frozen=True)
class Capabilities:
    """What a model can be asked. A request that needs a capability the model lacks is refused (422)."""

    points: bool = True
    boxes: bool = True
    mask_input: bool = True
    multimask: bool = True
    automatic: bool = True
    text: bool = False
    exemplars: bool = False

    NAMES = ("points", "boxes", "mask_input", "multimask", "automatic", "text", "exemplars")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.NAMES}

    def missing(self, *needed: str) -> list[str]:
        """The names in `needed` this model lacks."""
        return [n for n in needed if not getattr(self, n)]


def required_capabilities(prompts: "Prompts | None", multimask: bool = False) -> list[str]:
    """The capabilities decoding `prompts` needs (None: automatic masks)."""
    if prompts is None:
        return ["automatic"]
    needed = ["points"] if len(prompts.points) else []
    needed += ["boxes"] if len(prompts.boxes) else []
    needed += ["mask_input"] if prompts.mask_input is not None else []
    return needed + (["multimask"] if multimask else [])


def require(card: "ModelCard", needed: list[str], field: str = "prompts") -> None:
    """Raise `MissingCapability` (422) naming what `card`'s model lacks of `needed`."""
    missing = card.capabilities.missing(*needed)
    if missing:
        raise MissingCapability(field, f"model {card.model_id!r} does not support {', '.join(missing)} "
                                       f"(its capabilities: {', '.join(k for k, v in card.capabilities.as_dict().items() if v)})")


@dataclass(frozen=True)
class ModelCard:
    """What `describe()` returns: enough for /v1/models, cache keys and the response metadata.

    `embedding_version`: changes whenever the same image would embed differently (preprocessing, model
    files); part of every embedding cache key. `input_size`: side of the model's square input frame.
    `resize`: how an image reaches it: "longest-side" (SAM 1: scale the longest side to `input_size`,
    keep aspect, pad bottom/right) or "square" (SAM 2: stretch to `input_size`², aspect not kept).
    `low_res_size`: side of the low-res logits (`DecodeResult.logits`, `Prompts.mask_input`).
    """

    model_id: str
    backend: str
    device: str
    dtype: str
    input_size: int
    embedding_version: str
    capabilities: Capabilities = field(default_factory=Capabilities)
    resize: str = "longest-side"
    low_res_size: int = 256
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Alias of `input_size` (the name `segment_anything` uses)."""
        return self.input_size

    def public(self) -> dict:
        """JSON for /v1/models and metadata: no local paths."""
        return {"model_id": self.model_id, "backend": self.backend, "device": self.device, "dtype": self.dtype,
                "input_size": self.input_size, "resize": self.resize, "low_res_size": self.low_res_size,
                "embedding_version": self.embedding_version, "capabilities": self.capabilities.as_dict(),
                **self.extra}


@runtime_checkable
class Engine(Protocol):
    """A segmentation model. Implementations must be safe to call from several threads; each owns its
    pre- and post-processing and its threads policy (callers never pick threads for it)."""

    model_id: str

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode one image: (H, W, 3) uint8 RGB, H, W ≥ 1. Blocks; call from a worker thread."""
        ...

    def decode(
        self, embedding: Embedding, prompts: Prompts, multimask: bool = False
    ) -> DecodeResult:
        """Decode prompts against an embedding. Pure: no state is kept between calls. Blocks."""
        ...

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """`decode` awaited from an event loop, on whatever thread the backend decodes on."""
        ...

    def generate(self, embedding: Embedding, options: AmgOptions,
                 image: np.ndarray | None = None) -> list[dict]:
        """Automatic masks of the embedded image. Each record: `segmentation` (H, W) bool in image px,
        `bbox` and `crop_box` [x, y, w, h] (px), `area` (px), `predicted_iou`, `stability_score`,
        `point_coords` [[x, y]] (image px, SAM convention). `image` (H, W, 3) uint8 is needed only for
        crops (`options.crop_n_layers > 0`). Blocks."""
        ...

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Every instance of `concept` in the embedded image scoring ≥ `score_threshold`. Only models whose
        capabilities include "text" / "exemplars" implement it; callers check with `require` first
        (`concept.needs()`). Blocks."""
        ...

    def describe(self) -> ModelCard:
        ...

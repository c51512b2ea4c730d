"""Automatic masks through the `sam2` package's own `SAM2AutomaticMaskGenerator`, for engines whose point
decoder is SAM 2's (the `sam2` backend, and SAM 3's instance-interactive predictor in the `sam3` backend, a copy of
`SAM2ImagePredictor`: sam3/model/sam1_task_predictor.py). The generator's image predictor is replaced by a
stand-in (`EmbeddingPredictor`) that decodes on the engine from a given embedding.

The generator's grid, filters, NMS, crop handling and records are the package's; what the stand-in does is
`SAM2ImagePredictor._predict`'s math: point batches already in the model's square input frame through the
engine's prompt encoder and mask decoder, masks = bilinear resize of the low-res logits straight to the image's
(H, W) thresholded at 0, the low-res logits handed back clamped to ±32. What each engine brings is the
`ModelFrameDecoder` protocol (its own decoder, upscaling and encoder). Two choices of ours:

- `min_mask_region_area`: SAM 2's generator hands it to its predictor as `max_hole_area` /
  `max_sprinkle_area`, applied on the low-res logits through the package's CUDA extension (which our
  install does not build: `SAM2_BUILD_CUDA=0`; the package then warns and skips it). We apply it as SAM 1's
  generator does instead: the generator class's own `postprocess_small_regions` (OpenCV) on the final masks,
  then NMS at max(box_nms_thresh, crop_nms_thresh). With 0 (the default) the records are exactly the
  package generator's.
- Records are SAM 1's form (`SamAutomaticMaskGenerator`, output_mode "binary_mask"): `segmentation` (H, W)
  bool, `area` px, `bbox` and `crop_box` [x, y, w, h] int px, `predicted_iou`, `point_coords` [[x, y]]
  (image px, SAM convention), `stability_score`. SAM 2's `MaskData.to_numpy` turns every tensor to float, so
  its generator gives `bbox` / `crop_box` as floats (whole numbers); they are handed back as ints, as SAM 1's.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from samgis.engine.protocol import Embedding, ModelCard
from samgis.engine.threads import in_fresh_thread

MASK_THRESHOLD = 0.0
"""`SAM2ImagePredictor`'s default `mask_threshold` (the generator's too)."""
LOW_RES_CLAMP = 32.0
"""`SAM2ImagePredictor._predict` clamps the low-res logits it returns to ±32."""
DECODE_BYTES = 256 << 20
"""Default bound on the full-resolution float32 logits (B, 3, H, W) one generator batch holds."""

# The options `generate` reads (the fields of `samgis.engine.protocol.AmgOptions`, SAM 1's generator parameters).
OPTION_FIELDS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                 "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
                 "crop_n_points_downscale_factor", "min_mask_region_area")


@runtime_checkable
class ModelFrameDecoder(Protocol):
    """What `EmbeddingPredictor` uses of an engine (`Sam2Engine`, `Sam3Engine`).

    - `describe().input_size`: the side n of the model's square input frame (the image is stretched to n², aspect
      not kept, as `SAM2Transforms` does).
    - `_embed(image (h, w, 3) uint8 RGB)` → `Embedding`, on the calling thread (the generator already runs on a
      thread of its own).
    - `_point_rows(embedding, points (B, N, 2) float32 (x, y) in the n² frame, labels (B, N) int, multimask, *,
      to_model_frame=False, mask=None | (B, 1, L, L) float32 logits)` → unclamped low-res logits (B, M, L, L) and
      predicted IoU (B, M), float32 CPU tensors; M = 3 with `multimask`, else 1. Row b is
      `SAM2ImagePredictor._predict` of row b alone, up to the decoder.
    - `_upscale(low (B, M, L, L) float32, original_size (H, W))` → (B, M, H, W) float32 logits, bilinear,
      `align_corners=False` (`SAM2Transforms.postprocess_masks` without hole filling).
    """

    def describe(self) -> ModelCard:
        ...

    def _embed(self, image: np.ndarray) -> Embedding:
        ...

    def _point_rows(self, embedding: Embedding, points, labels, multimask: bool, *, to_model_frame: bool,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def _upscale(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        ...


@functools.lru_cache(maxsize=4)
def _transforms(resolution: int):
    """The package's `SAM2Transforms` at `resolution` with the predictor's defaults (threshold 0, no hole or
    sprinkle removal); the generator calls its `transform_coords(normalize=True)`: (x, y) · n / (W, H)."""
    from sam2.utils.transforms import SAM2Transforms

    return SAM2Transforms(resolution=resolution, mask_threshold=MASK_THRESHOLD, max_hole_area=0.0,
                          max_sprinkle_area=0.0)


class EmbeddingPredictor:
    """What `SAM2AutomaticMaskGenerator` uses of `SAM2ImagePredictor` (`_transforms`, `device`, `set_image`,
    `reset_predictor`, `_predict`), decoding on `engine`. The whole image's `embedding` is reused; any other
    image handed to `set_image` (a crop) is embedded. Prompts are built on the CPU (the engine's `_point_rows`
    moves them to its device); masks come back on the CPU."""

    device = torch.device("cpu")

    def __init__(self, engine: ModelFrameDecoder, embedding: Embedding):
        self.engine = engine
        self.resolution = int(engine.describe().input_size)
        self._transforms = _transforms(self.resolution)
        self._given = embedding
        self.embedding: Embedding | None = None
        self.embeds = 0

    def set_image(self, image: np.ndarray) -> None:
        """`image`: (h, w, 3) uint8 RGB, the whole image or one crop of it."""
        if tuple(image.shape[:2]) == tuple(self._given.original_size):
            self.embedding = self._given
        else:
            self.embedding = self.engine._embed(np.ascontiguousarray(image))  # already on a fresh thread
            self.embeds += 1

    def reset_predictor(self) -> None:
        self.embedding = None

    def _predict(self, point_coords: torch.Tensor, point_labels: torch.Tensor, boxes=None, mask_input=None,
                 multimask_output: bool = True, return_logits: bool = False, img_idx: int = -1):
        """`SAM2ImagePredictor._predict` for point batches: `point_coords` (B, N, 2) float32 in the model's
        n² input frame, `point_labels` (B, N); `mask_input` optional (B, 1, L, L) logits. Returns masks
        (B, M, h, w) (logits with `return_logits`, else bool) in the current image's px, scores (B, M) and
        low-res logits (B, M, L, L) clamped to ±32."""
        if boxes is not None:
            raise NotImplementedError("the automatic mask generator sends point batches only")
        emb = self.embedding
        low, scores = self.engine._point_rows(emb, point_coords, point_labels, multimask_output,
                                              to_model_frame=False, mask=mask_input)
        masks = self.engine._upscale(low, emb.original_size)
        if not return_logits:
            masks = masks > MASK_THRESHOLD
        return masks, scores, low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)


def _generator_class():
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    class Generator(SAM2AutomaticMaskGenerator):
        """The package's generator, plus SAM 1's small-region post-processing (see the module docstring)."""

        def __init__(self, predictor: EmbeddingPredictor, min_region_area: int, **kwargs):
            # The package builds a `SAM2ImagePredictor(model)`, reading only `model.image_size`; ours replaces it.
            super().__init__(SimpleNamespace(image_size=predictor.resolution), min_mask_region_area=0, **kwargs)
            self.predictor = predictor
            self.min_region_area = min_region_area

        def _generate_masks(self, image: np.ndarray):
            data = super()._generate_masks(image)
            if self.min_region_area > 0:
                data = self.postprocess_small_regions(data, self.min_region_area,
                                                      max(self.box_nms_thresh, self.crop_nms_thresh))
            return data

    return Generator


def generate(engine: ModelFrameDecoder, embedding: Embedding, options, image: np.ndarray | None = None,
             decode_bytes: int = DECODE_BYTES) -> list[dict]:
    """Automatic masks of the image `embedding` was made from, as records of SAM 1's form (module docstring).

    `options`: any object with the attributes `OPTION_FIELDS` (e.g. `samgis.engine.protocol.AmgOptions`). Without
    crops (`crop_n_layers == 0`) no pixels are needed; with crops `image` (H, W, 3) uint8 RGB, the embedded
    image, must be given (each crop is embedded). Points per decoder batch are chosen so that a batch's
    full-size logits (B, 3, H, W) float32 fit in `decode_bytes`. Runs on a thread of its own; its decoder
    passes queue on the torch thread like clicks do. ValueError for missing options or a wrong `image`.
    """
    missing = [f for f in OPTION_FIELDS if not hasattr(options, f)]
    if missing:
        raise ValueError(f"automatic-mask options lack {missing}")
    h, w = embedding.original_size
    if options.crop_n_layers != 0:
        if image is None:
            raise ValueError("crops need the image's pixels: pass image")
        if tuple(image.shape[:2]) != (h, w) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be the embedded (H, W, 3) = ({h}, {w}, 3) uint8 image, "
                             f"got {image.shape} {image.dtype}")
    if options.min_mask_region_area > 0:
        import importlib.util
        if importlib.util.find_spec("cv2") is None:
            raise ValueError("min_mask_region_area needs OpenCV (opencv-python-headless)")
    predictor = EmbeddingPredictor(engine, embedding)
    batch = int(min(64, max(1, decode_bytes // (3 * 4 * h * w))))
    gen = _generator_class()(
        predictor, int(options.min_mask_region_area),
        points_per_side=options.points_per_side, points_per_batch=batch,
        pred_iou_thresh=options.pred_iou_thresh, stability_score_thresh=options.stability_score_thresh,
        stability_score_offset=options.stability_score_offset, box_nms_thresh=options.box_nms_thresh,
        crop_n_layers=options.crop_n_layers, crop_nms_thresh=options.crop_nms_thresh,
        crop_overlap_ratio=options.crop_overlap_ratio,
        crop_n_points_downscale_factor=options.crop_n_points_downscale_factor,
        output_mode="binary_mask",
    )
    if image is None:  # the generator reads only the shape of a whole-image crop: a zero-stride placeholder
        image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))
    records = in_fresh_thread(gen.generate, image)  # see `samgis.engine.threads`
    if options.crop_n_layers == 0 and predictor.embeds:
        raise RuntimeError("the mask generator embedded its image instead of reusing the embedding")
    for rec in records:  # whole pixel numbers, as SAM 1 gives them (see the module docstring)
        rec["bbox"] = [int(round(v)) for v in rec["bbox"]]
        rec["crop_box"] = [int(round(v)) for v in rec["crop_box"]]
    return records

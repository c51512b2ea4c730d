"""Automatic masks over any engine that decodes batches of point queries (`PointBatchDecoder`).

Meta's `SamAutomaticMaskGenerator` does the grid, crops, filtering and NMS; `EnginePredictor` stands in
for its `SamPredictor`: it reuses an embedding, decodes each grid point as its own query through the
engine (batched when the engine is a `PointBatchDecoder`) and upscales logits with the engine's own
`upscale_logits`. Backends whose masks come out of SAM-style low-res logits (sam1, onnx) use it for
their `Engine.generate`; others bring their own generator.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator

from samgis.engine.protocol import AmgOptions, Embedding, Engine, Prompts
from samgis.engine.threads import in_fresh_thread, on_torch_thread
from samgis.errors import InvalidRequest

MASK_THRESHOLD = 0.0
"""Logit above which a pixel is foreground (`Sam.mask_threshold`)."""
DECODE_BYTES = 256 << 20
"""Default bound on the full-resolution float32 logits one generator batch holds."""


def longest_side_upscale(low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
                         image_size: int) -> torch.Tensor:
    """(B, M, 256, 256) low-res logits → (B, M, H, W) logits in the original image frame, SAM 1's rule
    (`Sam.postprocess_masks`): to the (image_size)² input frame, crop the unpadded `input_size` (h, w),
    resize to `original_size` (H, W), bilinear."""
    x = torch.nn.functional.interpolate(low_res, (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    if tuple(input_size) == tuple(original_size):  # the second resize would be the identity
        return x
    return torch.nn.functional.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)


class _Identity:
    """`ResizeLongestSide` stand-in: our engine takes prompts in the original frame and resizes itself."""

    @staticmethod
    def apply_coords(coords: np.ndarray, original_size) -> np.ndarray:
        return coords


@runtime_checkable
class PointBatchDecoder(Protocol):
    """What `EnginePredictor` uses beyond `Engine`: many point queries decoded at once, low-res outputs only,
    and the backend's own upscaling of low-res logits.

    `decode_point_batch(embedding, points (B, N, 2) float image px SAM convention, labels (B, N) int,
    multimask)` → `(logits (B, M, 256, 256) float32, scores (B, M) float32)`, torch or numpy; row b equals
    `decode(embedding, Prompts(points[b], labels[b]), multimask)`'s `logits[0]` / `scores[0]`.
    `upscale_logits(low_res (B, M, 256, 256) float32 torch, embedding)` → (B, M, H, W) float32 logits in the
    frame of the embedded image. See `SamEngine`.
    """

    def decode_point_batch(self, embedding: Embedding, points, labels, multimask: bool = True) -> tuple:
        ...

    def upscale_logits(self, low_res: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        ...


def square_upscale(low_res, original_size: tuple[int, int]) -> torch.Tensor:
    """Low-res logits (B, M, L, L) (torch or numpy) of a model that stretched the image to its square input
    without padding (SAM 2, SAM 3) → (B, M, H, W) float32 logits in the image's px, (H, W) = `original_size`,
    on the input's device (CPU for numpy): one bilinear resize, align_corners=False
    (`SAM2Transforms.postprocess_masks` without hole filling); there is nothing to crop."""
    x = torch.as_tensor(low_res, dtype=torch.float32)
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"low_res must be (B, M, L, L), got {tuple(x.shape)}")
    with torch.inference_mode():
        return F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)


def point_batch_arrays(points, labels) -> tuple[np.ndarray, np.ndarray]:
    """`decode_point_batch`'s inputs checked and as numpy: points (B, N ≥ 1, 2) float32 (x, y) image px,
    labels (B, N) as given; numpy or torch in. ValueError for other shapes."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    pts = np.asarray(points, np.float32)
    lab = np.asarray(labels)
    if pts.ndim != 3 or pts.shape[2] != 2 or pts.shape[1] < 1 or lab.shape != pts.shape[:2]:
        raise ValueError(f"points must be (B, N ≥ 1, 2) and labels (B, N), got {pts.shape} and {lab.shape}")
    return pts, lab


def point_rows(engine, embedding: Embedding, points, labels, multimask: bool, *, to_model_frame: bool,
               mask: torch.Tensor | None, low_res_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The SAM 2-style engines' (sam2, sam3) point-batch loop: unclamped low-res logits (B, M, low_res_size,
    low_res_size) and scores (B, M), float32 on the CPU, of B point queries. `points` (B, N, 2) float in image
    px, SAM convention (`to_model_frame`: mapped with `engine._to_model_frame`) or already in the model frame;
    `labels` (B, N) int; `mask` optional (B, 1, low_res_size, low_res_size) mask inputs, one per row. Each
    decoder pass of `engine.point_batch_rows` rows is one `engine._rows_pass` call on the torch thread, so
    clicks queued meanwhile wait for one pass only."""
    pts, lab = point_batch_arrays(points, labels)
    b, m = pts.shape[0], (3 if multimask else 1)
    if b == 0:
        return torch.zeros((0, m, low_res_size, low_res_size)), torch.zeros((0, m))
    if to_model_frame:
        coords = engine._to_model_frame(pts, embedding.original_size)
    else:
        coords = torch.as_tensor(pts, dtype=torch.float, device=engine.device)
    lab_t = torch.as_tensor(lab.astype(np.int32), dtype=torch.int, device=engine.device)
    step = engine.point_batch_rows
    parts = [on_torch_thread(engine._rows_pass, embedding, coords[i:i + step], lab_t[i:i + step],
                             None if mask is None else mask[i:i + step], multimask)
             for i in range(0, b, step)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class EnginePredictor:
    """The part of `SamPredictor` that `SamAutomaticMaskGenerator` uses, over any `Engine`.

    `set_image` embeds (or reuses `embedding` when the image is the one it was made from); `predict_torch`
    decodes each point of the batch as its own query (in one `decode_point_batch` call when the engine is a
    `PointBatchDecoder`, else one `decode` per point) and returns full-resolution logits.
    """

    transform = _Identity()
    device = torch.device("cpu")

    def __init__(self, engine: Engine, embedding: Embedding | None = None, skip_iou_at_most: float | None = None):
        self.engine = engine
        # The generator drops every mask whose predicted IoU is not above its `pred_iou_thresh` right after
        # `predict_torch`, before reading its logits: those are not upscaled (constant logits stand in).
        self.skip_iou_at_most = skip_iou_at_most
        self.image_size = engine.describe().image_size
        self.model = SimpleNamespace(mask_threshold=MASK_THRESHOLD,
                                     image_encoder=SimpleNamespace(img_size=self.image_size))
        self._given = embedding
        self.embedding: Embedding | None = None
        self.embeds = 0

    def upscale(self, low: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        """(B, M, 256, 256) → (B, M, H, W) float32 logits: the engine's `upscale_logits`, else SAM 1's rule."""
        own = getattr(self.engine, "upscale_logits", None)
        if callable(own):
            return own(low, embedding).float().cpu()
        return longest_side_upscale(low, embedding.input_size, embedding.original_size, self.image_size)

    def set_image(self, image: np.ndarray) -> None:
        """`image`: (h, w, 3) uint8 RGB, the whole image or one crop of it."""
        if self._given is not None and tuple(image.shape[:2]) == tuple(self._given.original_size):
            self.embedding = self._given
        else:
            self.embedding = self.engine.embed(np.ascontiguousarray(image))
            self.embeds += 1

    def reset_image(self) -> None:
        self.embedding = None

    def predict_torch(self, point_coords: torch.Tensor, point_labels: torch.Tensor, boxes=None, mask_input=None,
                      multimask_output: bool = True, return_logits: bool = False):
        """`point_coords` (B, N, 2) in the current image's px (SAM convention), `point_labels` (B, N).

        Returns masks (B, M, h, w) (logits when `return_logits`, else bool), scores (B, M), low-res logits
        (B, M, 256, 256), like `SamPredictor.predict_torch`.
        """
        if boxes is not None or mask_input is not None:
            raise NotImplementedError("only point batches are supported")
        emb = self.embedding
        coords = point_coords.detach().cpu().numpy()
        labels = point_labels.detach().cpu().numpy()
        decode_batch = getattr(self.engine, "decode_point_batch", None)  # a `PointBatchDecoder`?
        if callable(decode_batch):
            low, scores = decode_batch(emb, coords, labels, multimask_output)
            low = torch.as_tensor(low, dtype=torch.float32, device="cpu")
            scores = torch.as_tensor(scores, dtype=torch.float32, device="cpu")
        else:
            results = [self.engine.decode(emb, Prompts(points=c, labels=lab), multimask_output)
                       for c, lab in zip(coords, labels)]
            low = torch.from_numpy(np.concatenate([r.logits for r in results]))
            scores = torch.from_numpy(np.concatenate([r.scores for r in results]))
        if self.skip_iou_at_most is None:
            logits = self.upscale(low, emb)
        else:
            keep = scores > self.skip_iou_at_most                 # (B, M), the generator's own test
            b, m = scores.shape
            logits = torch.full((b, m, *emb.original_size), -1e4, dtype=torch.float32)
            if keep.any():
                up = self.upscale(low[keep][:, None], emb)
                logits[keep] = up[:, 0]
        return (logits if return_logits else logits > MASK_THRESHOLD), scores, low


def mask_generator(engine: Engine, options: AmgOptions = AmgOptions(), embedding: Embedding | None = None,
                   decode_bytes: int = DECODE_BYTES,
                   image_shape: tuple[int, int] | None = None) -> SamAutomaticMaskGenerator:
    """Meta's `SamAutomaticMaskGenerator` running on `engine` (binary masks out).

    `embedding` of the whole image is reused instead of embedding it again. Points per batch are chosen so
    that a batch's logits (B, 3, H, W) float32, and their pass through the model's input frame, fit in
    `decode_bytes` (`image_shape` = (H, W)).
    """
    if options.min_mask_region_area > 0 and importlib.util.find_spec("cv2") is None:
        raise InvalidRequest("min_mask_region_area", "needs OpenCV on the server (opencv-python-headless)")
    predictor = EnginePredictor(engine, embedding,
                                skip_iou_at_most=options.pred_iou_thresh if options.pred_iou_thresh > 0 else None)
    h, w = image_shape or (embedding.original_size if embedding is not None else (1024, 1024))
    n = predictor.image_size
    batch = int(min(64, max(1, decode_bytes // (3 * 4 * (n * n + h * w)))))
    gen = SamAutomaticMaskGenerator(
        predictor.model, points_per_side=options.points_per_side, points_per_batch=batch,
        pred_iou_thresh=options.pred_iou_thresh, stability_score_thresh=options.stability_score_thresh,
        stability_score_offset=options.stability_score_offset, box_nms_thresh=options.box_nms_thresh,
        crop_n_layers=options.crop_n_layers, crop_nms_thresh=options.crop_nms_thresh,
        crop_overlap_ratio=options.crop_overlap_ratio,
        crop_n_points_downscale_factor=options.crop_n_points_downscale_factor,
        min_mask_region_area=options.min_mask_region_area, output_mode="binary_mask",
    )
    gen.predictor = predictor  # the generator built a SamPredictor around the stub; ours replaces it
    return gen


def generate_with_point_batches(engine: Engine, embedding: Embedding, options: AmgOptions = AmgOptions(),
                                image: np.ndarray | None = None, decode_bytes: int = DECODE_BYTES) -> list[dict]:
    """Automatic masks of the embedded image: `SamAutomaticMaskGenerator.generate`'s records.

    Each record: `segmentation` (H, W) bool in the embedded image's px, `bbox` [x, y, w, h] and `crop_box`
    (XYWH, px), `area` (px), `predicted_iou`, `stability_score`, `point_coords` [[x, y]] (image px, SAM
    convention). `image`: (H, W, 3) uint8 RGB, needed only with crops (`options.crop_n_layers > 0`, each
    crop is embedded). Without crops the generator reads nothing of the image but its (H, W) =
    `embedding.original_size`, so it gets a zero-stride placeholder and the embedding is decoded as it is
    (a cached map-window embedding needs no tile fetch).
    """
    h, w = embedding.original_size
    if image is None and options.crop_n_layers != 0:
        raise InvalidRequest("crop_n_layers", "crops need the image's pixels")
    gen = mask_generator(engine, options, embedding, decode_bytes, (h, w))
    if image is None:
        image = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (h, w, 3))
        records = in_fresh_thread(gen.generate, image)  # its torch work must not stay on a long-lived thread
        if gen.predictor.embeds:  # the placeholder was embedded: would be masks of a black image
            raise RuntimeError("the mask generator embedded its image instead of reusing the embedding")
        return records
    return in_fresh_thread(gen.generate, image)

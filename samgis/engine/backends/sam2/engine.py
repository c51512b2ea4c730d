"""SAM 2.1 backend over Meta's `sam2` package: one shared `SAM2Base`, per-request state kept in `Embedding`.

The math is `sam2.sam2_image_predictor.SAM2ImagePredictor`'s (sam2 1.1.0 = facebookresearch/sam2 @ 2b90b9f),
without its per-image state:

- `set_image`: `SAM2Transforms` (ToTensor, resize to a `image_size`² square *without* keeping the aspect ratio,
  ImageNet normalisation), `forward_image`, `_prepare_backbone_features`, `+ no_mem_embed` on the lowest-res
  level, then image embedding (1, 256, 64, 64) + high-res features (1, 32, 256, 256), (1, 64, 128, 128).
- `_prep_prompts`: points and boxes in image px → ×(1024/W, 1024/H) (`transform_coords(normalize=True)`);
  a box is two points labelled 2 and 3, put *before* the click points, all through `sam_prompt_encoder`.
- `_predict`: `sam_mask_decoder` (its own dynamic single-mask fallback when `multimask` is off), object-score
  logits ignored (the predictor does not use them), masks = bilinear resize of the low-res logits straight to
  (H, W) (`postprocess_masks`: no padding to crop) thresholded at 0.0; the low-res logits handed back are
  clamped to [-32, 32]. The predictor's defaults `max_hole_area = max_sprinkle_area = 0` mean no hole filling.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samgis.engine.amg import point_rows, square_upscale
from samgis.engine.backends.sam1.decoder import nchw_from_s0, nchw_from_s1, tokens_layout_s0, tokens_layout_s1
from samgis.engine.backends.sam1.postprocess import postprocess_masks
from samgis.engine.backends.sam2 import decoder as fast
from samgis.engine.backends.sam2.encoder import encode
from samgis.engine.devices import autocast, load_state, pick_device, pick_precision
from samgis.engine.protocol import (Capabilities, ConceptPrompt, DecodeResult, Embedding, FoundInstances,
                                    ModelCard, Prompts, require)
from samgis.engine.threads import in_fresh_thread, on_torch_thread, set_torch_threads, to_torch_thread

BACKEND = "sam2"
EMBEDDING_VERSION = "sam2.1-sq1024-1"
"""Part of the embedding version: `SAM2Transforms` (stretch to 1024², ImageNet normalisation), + no_mem_embed."""
MASK_THRESHOLD = 0.0  # SAM2ImagePredictor's default
LOW_RES_CLAMP = 32.0  # SAM2ImagePredictor._predict clamps the low-res logits it returns to ±32
LOW_RES_SIZE = 256

_hydra_lock = threading.Lock()  # Hydra's compose reads global state: one model build at a time


@dataclass(frozen=True)
class Sam2Features:
    """`Embedding.features` of this backend, batch 1, on the model device, in the encoder's output dtype.

    `image_embed`: (1, 256, 64, 64), `no_mem_embed` added. The two high-resolution feature maps, already
    through the decoder's `conv_s0` / `conv_s1` (`SAM2Base.forward_image`), are kept in the token layout
    the fast decoder adds them in (`samgis.engine.backends.sam2.decoder`): `s0` (4·64², 4·32) and `s1`
    (64², 4·64), a pure permutation of (1, 32, 256, 256) and (1, 64, 128, 128); `high_res_feats` gives
    them back in NCHW (a copy, for the package's decoder when a mask input is given).
    """

    image_embed: torch.Tensor
    s0: torch.Tensor
    s1: torch.Tensor

    @classmethod
    def from_nchw(cls, image_embed: torch.Tensor, feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> "Sam2Features":
        """From the predictor's layout: (1, 256, H, W), (1, 32, 4H, 4W), (1, 64, 2H, 2W)."""
        return cls(image_embed=image_embed.contiguous(), s0=tokens_layout_s0(feat_s0),
                   s1=tokens_layout_s1(feat_s1))

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.image_embed.shape[-2]), int(self.image_embed.shape[-1])

    @property
    def high_res_feats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """((1, 32, 4H, 4W), (1, 64, 2H, 2W)) contiguous, as `SAM2ImagePredictor._features["high_res_feats"]`."""
        return nchw_from_s0(self.s0, self.grid), nchw_from_s1(self.s1, self.grid)

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.image_embed, self.s0, self.s1))


def build_model(config_name: str, device: str = "cpu") -> torch.nn.Module:
    """A randomly initialised `SAM2Base` of a package config, e.g. "configs/sam2.1/sam2.1_hiera_t.yaml".

    Built by the package's own `build_sam2` with no checkpoint (works offline), on `device`, eval mode,
    with the image predictor's post-processing overrides (`apply_postprocessing=True`, the default: the
    decoder's dynamic multimask fallback). Seed torch beforehand for reproducible weights.
    """
    from sam2.build_sam import build_sam2

    with _hydra_lock:
        return build_sam2(config_name, ckpt_path=None, device=device, mode="eval")


def load_model(model_id: str, config_name: str, checkpoint: Path) -> torch.nn.Module:
    """`config_name`'s model on the CPU with the weights of an official-format checkpoint (a dict whose
    "model" entry is the state dict, as `sam2.build_sam._load_checkpoint` reads it).

    Raises ValueError naming `checkpoint` when the file is not such a dict or its tensors do not fit.
    """
    checkpoint = Path(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled code
        raise ValueError(f"{checkpoint} is not a readable SAM 2 checkpoint: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict)):
        raise ValueError(f"{checkpoint} is not a SAM 2 checkpoint: expected a dict with a 'model' state dict")
    model = build_model(config_name, device="cpu")
    return load_state(model, state["model"], checkpoint, model_id)


def load_engine(model_id: str, config_name: str, checkpoint: Path, device: str = "auto",
                precision: str = "auto") -> "Sam2Engine":
    """A `Sam2Engine` of `config_name` with the weights in `checkpoint` (see `load_model`); loading runs on
    a thread of its own (`in_fresh_thread`)."""
    model = in_fresh_thread(load_model, model_id, config_name, checkpoint)
    return Sam2Engine(model, model_id, device=device, precision=precision, checkpoint=str(checkpoint))


def load(spec, weights: Path, device: str = "auto", precision: str = "auto") -> "Sam2Engine":
    """The backend entry point `samgis.engine.factory` calls: `spec` a registry `ModelSpec` whose `config`
    is the package config name (or None for one of `MODELS`), `weights` the official-format checkpoint."""
    from samgis.engine.backends.sam2.models import MODELS

    config = getattr(spec, "config", None)
    if not isinstance(config, str):
        if spec.model_id not in MODELS:
            raise ValueError(f"model {spec.model_id!r} names no sam2 config; known: {', '.join(MODELS)}")
        config = MODELS[spec.model_id].config
    return load_engine(spec.model_id, config, Path(weights), device=device, precision=precision)


class Sam2Engine:
    """The `Engine` protocol over a `sam2` `SAM2Base` model (image path only).

    Threads (see `samgis.engine.threads`): decoder passes run on the process's one torch thread; encoder
    passes, checkpoint loading and automatic masks on a thread of their own that ends with them; every
    method blocks its caller. Nothing about the current image lives on the engine.

    `precision`: "fp32", or "bf16"/"fp16" autocast for encoder and decoder. "auto": bf16 on CUDA (as Meta's
    examples run SAM 2), fp32 on CPU (exact parity with `SAM2ImagePredictor`).
    """

    backend = BACKEND

    def __init__(self, model: torch.nn.Module, model_id: str, device: str = "auto", precision: str = "auto",
                 checkpoint: str | None = None):
        from sam2.utils.transforms import SAM2Transforms

        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision, cuda_default="bf16")
        self.model = model.to(self.device).eval()
        self.model_id = model_id
        self.checkpoint = checkpoint
        self.image_size = int(model.image_size)
        # The predictor's transforms with its defaults: threshold 0, no hole / sprinkle removal.
        self.transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=MASK_THRESHOLD,
                                         max_hole_area=0.0, max_sprinkle_area=0.0)
        # Queries per decoder pass in `decode_point_batch` and the automatic masks. On CPU two rows per pass
        # measured fastest per query (bench/bench_sam2.py, 2 cores; 4 and more rows leave the cache).
        self.point_batch_rows = 16 if self.device.type == "cuda" else 2
        self._encoder_lock = threading.Lock()  # one encoder pass at a time: parallel ones only thrash
        self._encoder_cache: dict = {}  # the trunk's resized positional embedding (`encoder.encode`)
        # The cached-constant decoder (`decoder.py`) for fp32 decodes without a mask input; bf16 / fp16
        # autocast and other decoder layouts run the package's `MaskDecoder`.
        self._pos = on_torch_thread(fast.positional_consts, self.model) \
            if self.precision == "fp32" and fast.foldable(self.model) else None
        self.card_fields = {
            "capabilities": {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                             "automatic": True, "text": False, "exemplars": False},
            # bf16 / fp16 features differ from fp32 ones: the precision is part of the version
            "embedding_version": f"{EMBEDDING_VERSION}/{self.precision}",
            "low_res_size": LOW_RES_SIZE,
            "input_size": self.image_size,
            "resize": "square",  # to input_size × input_size, aspect ratio not kept, no padding
        }

    def set_threads(self, n: int) -> int:
        """Intra-op threads for this process's torch work (the torch thread included); returns the old count."""
        return set_torch_threads(n)

    # --- helpers ------------------------------------------------------------------------------------

    def _autocast(self):
        return autocast(self.device, self.precision)

    def _check(self, embedding: Embedding) -> Sam2Features:
        return embedding.features_for(self.model_id, Sam2Features)

    def _to_model_frame(self, xy: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
        """(..., 2) float (x, y) image px → float32 tensor in the model's square input frame, as
        `SAM2ImagePredictor._prep_prompts` computes it (float32, x·n/W, y·n/H)."""
        pts = torch.as_tensor(np.asarray(xy, np.float32), dtype=torch.float, device=self.device)
        return self.transforms.transform_coords(pts, normalize=True, orig_hw=tuple(original_size))

    # --- embed --------------------------------------------------------------------------------------

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode (H, W, 3) uint8 RGB → `Sam2Features` on the model device; `input_size` = (n, n)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or min(image.shape[:2]) < 1:
            raise ValueError(f"image must be (H, W, 3) uint8 with H, W ≥ 1, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
        return in_fresh_thread(self._embed, image)

    def _embed(self, image: np.ndarray) -> Embedding:
        # torchvision's to_tensor wraps the array with torch.from_numpy, which warns on read-only arrays (decoded
        # images often are); a writable copy costs ~3 MB, nothing beside the encoder
        image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
        x = self.transforms(image)[None].to(self.device)  # (1, 3, n, n) float32
        with self._encoder_lock, torch.inference_mode(), self._autocast():
            # forward_image + _prepare_backbone_features + no_mem_embed, without the unused outputs
            feats = encode(self.model, x, self._encoder_cache)
            features = Sam2Features.from_nchw(feats[2], feats[0], feats[1])
        consts = None if self._pos is None else fast.prepare(self.model, features.image_embed, self._pos)
        return Embedding(
            features=features,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=(self.image_size, self.image_size),
            model_id=self.model_id,
            nbytes=features.nbytes + (0 if consts is None else consts.nbytes),
            aux=consts,
        )

    # --- decode -------------------------------------------------------------------------------------

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """Decode Q = `prompts.n_queries` queries in one batch; see `DecodeResult` for shapes.

        Points are shared by every query; each box is its own query (the predictor's semantics when called
        once per box with the same points). `prompts.mask_input` (1, 256, 256) goes with every query.
        """
        self._check(embedding)
        return on_torch_thread(self._decode, embedding, prompts, multimask)

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """`decode` from an event loop: one hop to the torch thread."""
        self._check(embedding)
        return await to_torch_thread(self._decode, embedding, prompts, multimask)

    def _decode(self, embedding: Embedding, prompts: Prompts, multimask: bool) -> DecodeResult:
        size = embedding.original_size
        q = prompts.n_queries
        coords = labels = None
        if len(prompts.points):
            coords = self._to_model_frame(prompts.points, size)[None].expand(q, -1, -1)
            labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=self.device)[None].expand(q, -1)
        boxes = self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), size) if len(prompts.boxes) else None
        mask = None
        if prompts.mask_input is not None:
            m = np.asarray(prompts.mask_input, np.float32)
            if m.size != LOW_RES_SIZE * LOW_RES_SIZE:
                raise ValueError(f"mask_input must be (1, 256, 256), got {m.shape}")
            mask = torch.as_tensor(m, device=self.device).reshape(1, 1, LOW_RES_SIZE, LOW_RES_SIZE)
            mask = mask.expand(q, -1, -1, -1)
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            low_res, iou = self._decode_low_res(embedding, coords, labels, boxes, mask, multimask)
            if cuda:
                masks = (self._upscale(low_res, size) > MASK_THRESHOLD).cpu().numpy()
            low_res = low_res.float().cpu().numpy()
        if not cuda:  # OpenCV's bilinear resize: the same values, ~9× faster than torch's on CPU
            masks = postprocess_masks(low_res, None, size, self.image_size, MASK_THRESHOLD)
        return DecodeResult(masks=masks, scores=iou.float().cpu().numpy().astype(np.float32),
                            logits=np.clip(low_res, -LOW_RES_CLAMP, LOW_RES_CLAMP))

    def _decode_low_res(self, embedding: Embedding, coords: torch.Tensor | None, labels: torch.Tensor | None,
                        boxes: torch.Tensor | None, mask: torch.Tensor | None,
                        multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """`SAM2ImagePredictor._predict` up to the decoder: prompts in the model frame, `coords` (Q, N, 2)
        float32 with `labels` (Q, N) int32, `boxes` (Q, 2, 2), `mask` (Q, 1, 256, 256) logits. Returns the
        unclamped low-res logits (Q, M, 256, 256) and IoU predictions (Q, M). Call under inference mode.

        Without a mask input, on an embedding with cached constants (`aux`), the cached-constant decoder
        (`samgis.engine.backends.sam2.decoder`) runs; otherwise the package's `sam_mask_decoder`."""
        feats = embedding.features
        points = (coords, labels) if coords is not None else None
        if boxes is not None:
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(boxes.size(0), 1)
            if points is not None:  # boxes go first, then the clicks
                points = (torch.cat([boxes, points[0]], dim=1), torch.cat([box_labels, points[1]], dim=1))
            else:
                points = (boxes, box_labels)
        if mask is None and embedding.aux is not None and self._pos is not None:
            sparse, _ = self.model.sam_prompt_encoder(points=points, boxes=None, masks=None)
            return fast.decode_masks(self.model, embedding.aux, self._pos, feats.s0, feats.s1, sparse, multimask,
                                     feats.grid)
        with self._autocast():
            sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask)
            batched = points is not None and points[0].shape[0] > 1
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=feats.image_embed,
                image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=batched,
                high_res_features=list(feats.high_res_feats),
            )
        return low_res, iou

    def decode_point_batch(self, embedding: Embedding, points, labels,
                           multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B independent point queries, returning only low-res outputs.

        `points`: (B, N, 2) float (x, y) in image px, SAM convention, of the embedded image, numpy or torch;
        `labels`: (B, N) int, 1 = include, 0 = exclude. Row b decodes as `decode(embedding, Prompts(points[b],
        labels[b]), multimask)` would. Returns `(low_res_logits, scores)`: (B, M, 256, 256) float32 logits
        (clamped to ±32, as `DecodeResult.logits`) and (B, M) float32 predicted IoU, torch tensors on the CPU;
        M = 3 with `multimask`, else 1. Runs `point_batch_rows` queries per decoder pass.
        """
        self._check(embedding)
        low, scores = self._point_rows(embedding, points, labels, multimask, to_model_frame=True)
        return low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP), scores

    def _point_rows(self, embedding: Embedding, points, labels, multimask: bool, *, to_model_frame: bool,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unclamped low-res logits (B, M, 256, 256) and scores (B, M), float32 on the CPU, of B point
        queries; points in image px (`to_model_frame`) or already in the model frame. `mask`: optional
        (B, 1, 256, 256) mask inputs, one per row."""
        return point_rows(self, embedding, points, labels, multimask, to_model_frame=to_model_frame, mask=mask,
                          low_res_size=LOW_RES_SIZE)

    def _rows_pass(self, embedding: Embedding, coords: torch.Tensor, labels: torch.Tensor,
                   mask: torch.Tensor | None, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            mask = None if mask is None else mask.to(self.device, torch.float)
            low_res, iou = self._decode_low_res(embedding, coords, labels, None, mask, multimask)
            return low_res.float().cpu(), iou.float().cpu()

    # --- upscale ------------------------------------------------------------------------------------

    def upscale_logits(self, low_res, embedding: Embedding) -> torch.Tensor:
        """(B, M, 256, 256) low-res logits (torch or numpy) → (B, M, H, W) float32 logits in the embedded
        image's px, (H, W) = `embedding.original_size`, on the input's device (CPU for numpy).

        SAM 2 resizes the whole image to its square input without padding, so this is a single bilinear
        resize (`SAM2Transforms.postprocess_masks` without hole filling); there is nothing to crop.
        """
        return square_upscale(low_res, embedding.original_size)

    def _upscale(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return square_upscale(low_res, original_size)

    # --- automatic masks ----------------------------------------------------------------------------

    def generate(self, embedding: Embedding, options, image: np.ndarray | None = None,
                 decode_bytes: int = 256 << 20) -> list[dict]:
        """Automatic masks of the embedded image, `sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`
        on this engine (a `samgis.engine.sam2_amg.ModelFrameDecoder`); see `samgis.engine.sam2_amg.generate`."""
        from samgis.engine.sam2_amg import generate

        self._check(embedding)
        return generate(self, embedding, options, image=image, decode_bytes=decode_bytes)

    # --- card ---------------------------------------------------------------------------------------

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Concept prompts need a model with the "text"/"exemplars" capabilities: this one refuses (422)."""
        require(self.describe(), concept.needs())
        raise AssertionError("unreachable: this model has no concept capability")

    def describe(self) -> ModelCard:
        card = self.card_fields
        return ModelCard(
            model_id=self.model_id, backend=self.backend, device=str(self.device), dtype=self.precision,
            input_size=self.image_size, embedding_version=card["embedding_version"],
            capabilities=Capabilities(**card["capabilities"]), resize=card["resize"],
            low_res_size=card["low_res_size"], checkpoint=self.checkpoint,
        )

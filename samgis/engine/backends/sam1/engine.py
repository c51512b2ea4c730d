"""`segment-anything` backend: one shared `Sam` model, per-request state kept in `Embedding`.

Unlike `SamPredictor`, nothing about the current image lives on the engine, so concurrent requests can
never mix images. The math is the predictor's: `ResizeLongestSide` to the model's input frame,
`Sam.preprocess`, the image encoder; then prompt encoder + mask decoder + `postprocess_masks`.
"""

from __future__ import annotations

import contextlib
import threading
from functools import partial
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from samgis.engine.amg import generate_with_point_batches, point_batch_arrays
from samgis.engine.backends.sam1.decoder import decode_masks, positional_consts, prepare
from samgis.engine.backends.sam1.encoder import encode
from samgis.engine.backends.sam1.postprocess import postprocess_masks
from samgis.engine.protocol import (AmgOptions, Capabilities, ConceptPrompt, DecodeResult, Embedding,
                                    FoundInstances, ModelCard, Prompts, require)
from samgis.engine.devices import load_state, pick_device, pick_precision
from samgis.engine.registry import ModelSpec, SamArch
from samgis.engine.threads import in_fresh_thread, on_torch_thread, set_torch_threads, to_torch_thread

PREPROCESSING_VERSION = "sam-rls-1"
"""Part of the embedding version: `ResizeLongestSide` to 1024, `Sam.preprocess` (normalise, pad)."""


def build_sam(arch: SamArch) -> Sam:
    """A randomly initialised `Sam` of the given encoder architecture (decoder as in all SAM models)."""
    prompt_dim, patch = 256, 16
    grid = arch.image_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=patch, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes, window_size=arch.window_size, out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_sam(spec: ModelSpec, checkpoint: Path) -> Sam:
    """Build `spec`'s architecture and load a Meta-format state dict from `checkpoint` (CPU, eval mode)."""
    model = build_sam(spec.arch)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return load_state(model, state, checkpoint, spec.model_id)


class SamEngine:
    """The `Engine` protocol over a `segment_anything` `Sam` model.

    Threads (see `samgis.engine.threads`): decodes run on the process's one torch thread, encoder passes
    and checkpoint loading on a thread of their own that ends with them; every method blocks its caller.

    `precision`: "fp32", or "bf16"/"fp16" autocast for the image encoder (CUDA default: fp16 when the
    device is CUDA and precision is "auto"; CPU default fp32, which keeps exact parity with `SamPredictor`).
    """

    backend = "sam1"

    def __init__(self, model: Sam, model_id: str, device: str = "auto", precision: str = "auto",
                 checkpoint: str | None = None):
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision, cuda_default="fp16")
        self.model = model.to(self.device).eval()
        self.model_id = model_id
        self.checkpoint = checkpoint
        self.image_size = model.image_encoder.img_size
        self.transform = ResizeLongestSide(self.image_size)
        # Most queries `decode_point_batch` puts through the decoder at once (≈ 27 MB of float32 working
        # memory each). On CPU passes of more than two queries are slower per query (measured with 2 threads:
        # ~21 ms/query at 1-2 rows, ~30 at 4, ~48 at 8-16: the working set leaves the cache).
        self.point_batch_rows = 16 if self.device.type == "cuda" else 2
        self._encoder_lock = threading.Lock()  # one encoder pass at a time: parallel ones only thrash
        self._pos = on_torch_thread(positional_consts, self.model)

    @classmethod
    def from_spec(cls, spec: ModelSpec, checkpoint: Path, device: str = "auto",
                  precision: str = "auto") -> "SamEngine":
        model = in_fresh_thread(load_sam, spec, checkpoint)
        return cls(model, spec.model_id, device, precision, str(checkpoint))

    def set_threads(self, n: int) -> int:
        """Intra-op threads for this process's torch work (the torch thread included); returns the old count."""
        return set_torch_threads(n)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode (H, W, 3) uint8 RGB → features (1, 256, 64, 64) float32 on the model device."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return in_fresh_thread(self._embed, image)

    def _embed(self, image: np.ndarray) -> Embedding:
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        with self._encoder_lock, torch.inference_mode(), self._autocast():
            features = encode(self.model.image_encoder, self.model.preprocess(x)).float()
        consts = prepare(self.model, features, self._pos)
        return Embedding(
            features=features,
            original_size=(int(image.shape[0]), int(image.shape[1])),
            input_size=(int(resized.shape[0]), int(resized.shape[1])),
            model_id=self.model_id,
            nbytes=features.element_size() * features.nelement() + consts.nbytes,
            aux=consts,
        )

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """Decode Q = `prompts.n_queries` queries in one batch; see `DecodeResult` for shapes.

        Points are shared by every query; each box is its own query (the predictor's semantics when
        called once per box with the same points).
        """
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding of {embedding.model_id!r} given to engine {self.model_id!r}")
        return on_torch_thread(self._decode, embedding, prompts, multimask)

    def _decode(self, embedding: Embedding, prompts: Prompts, multimask: bool) -> DecodeResult:
        size = embedding.original_size
        q = prompts.n_queries
        dev = self.device
        point_arg = None
        if len(prompts.points):
            coords = self.transform.apply_coords(prompts.points.astype(np.float64), size)
            c = torch.as_tensor(coords, dtype=torch.float, device=dev)[None].expand(q, -1, -1)
            lab = torch.as_tensor(prompts.labels, dtype=torch.int, device=dev)[None].expand(q, -1)
            point_arg = (c, lab)
        box_arg = None
        if len(prompts.boxes):
            boxes = self.transform.apply_boxes(prompts.boxes.astype(np.float64), size)
            box_arg = torch.as_tensor(boxes, dtype=torch.float, device=dev)
        mask_arg = None
        if prompts.mask_input is not None:
            m = torch.as_tensor(prompts.mask_input, dtype=torch.float, device=dev).reshape(1, 1, 256, 256)
            mask_arg = m.expand(q, -1, -1, -1)
        with torch.inference_mode():
            low_res, iou = self._decode_low_res(embedding, point_arg, box_arg, mask_arg, multimask)
            if dev.type == "cuda":
                masks = (self._upscale(low_res, embedding.input_size, size) > self.model.mask_threshold).cpu().numpy()
            low_res = low_res.float().cpu().numpy()
        if dev.type != "cuda":  # OpenCV's bilinear resize: the same values, ~9× faster than torch's on CPU
            masks = postprocess_masks(low_res, embedding.input_size, size, self.image_size,
                                      self.model.mask_threshold)
        return DecodeResult(masks=masks, scores=iou.float().cpu().numpy().astype(np.float32), logits=low_res)

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """`decode` from an event loop: one hop to the torch thread."""
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding of {embedding.model_id!r} given to engine {self.model_id!r}")
        return await to_torch_thread(self._decode, embedding, prompts, multimask)

    def generate(self, embedding: Embedding, options: AmgOptions,
                 image: np.ndarray | None = None) -> list[dict]:
        """Automatic masks (see `Engine.generate`): Meta's generator over `decode_point_batch`."""
        return generate_with_point_batches(self, embedding, options, image)

    def decode_point_batch(self, embedding: Embedding, points, labels,
                           multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B independent point queries in one batch, returning only low-res outputs.

        Used by the automatic mask generator (`samgis.engine.amg.EnginePredictor`): it needs the low-res logits and scores of many single-point
        queries, and no full-resolution masks, so none are built.

        `points`: (B, N, 2) float (x, y) in image px, SAM convention, of the image `embedding` was made
        from (`embedding.original_size`), numpy or torch; `labels`: (B, N) int, 1 = include, 0 = exclude.
        Row b is its own query: its N points decode together, as `decode(embedding, Prompts(points[b],
        labels[b]), multimask)` would, and no row sees another's points.

        Returns `(low_res_logits, scores)`: (B, M, 256, 256) float32 logits in the model's padded input
        frame (as `DecodeResult.logits`) and (B, M) float32 predicted IoU, both torch tensors on the CPU;
        M = 3 with `multimask`, else 1. Equal to `decode`'s `logits` / `scores` row by row up to float
        rounding of the batched matrix products. Runs `point_batch_rows` queries per decoder pass.
        """
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding of {embedding.model_id!r} given to engine {self.model_id!r}")
        pts, lab = point_batch_arrays(points, labels)
        pts = pts.astype(np.float64)  # float32 prompts, as `Prompts` holds them
        b, m = pts.shape[0], (3 if multimask else 1)
        if b == 0:
            return torch.zeros((0, m, 256, 256)), torch.zeros((0, m))
        coords = self.transform.apply_coords(pts, embedding.original_size)  # float64, as in `decode`
        # One torch-thread call per decoder pass, so map clicks queued meanwhile wait for one pass only.
        parts = [on_torch_thread(self._decode_point_rows, embedding, coords[i:i + self.point_batch_rows],
                                 lab[i:i + self.point_batch_rows], multimask)
                 for i in range(0, b, self.point_batch_rows)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _decode_point_rows(self, embedding: Embedding, coords: np.ndarray, lab: np.ndarray,
                           multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder pass over (R, N, 2) float64 coords in the model's input frame and (R, N) labels."""
        point_arg = (torch.as_tensor(coords, dtype=torch.float, device=self.device),
                     torch.as_tensor(lab.astype(np.int32), dtype=torch.int, device=self.device))
        with torch.inference_mode():
            low_res, iou = self._decode_low_res(embedding, point_arg, None, None, multimask)
            return low_res.float().cpu(), iou.float().cpu()

    def _decode_low_res(self, embedding: Embedding, point_arg, box_arg, mask_arg,
                        multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder (the fast `decode_masks` when there is no mask input and the
        embedding has `aux`): low-res logits (Q, M, 256, 256) and IoU predictions (Q, M) on the device.
        Prompts already in the model's input frame. Call under `torch.inference_mode()`."""
        sparse, dense = self.model.prompt_encoder(points=point_arg, boxes=box_arg, masks=mask_arg)
        if mask_arg is None and embedding.aux is not None:
            return decode_masks(self.model, embedding.aux, self._pos, sparse, multimask,
                                tuple(embedding.features.shape[-2:]))
        return self.model.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )

    def upscale_logits(self, low_res: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        """(B, M, 256, 256) low-res logits (CPU or device) → (B, M, H, W) float32 logits in the frame of the
        embedded image (H, W = `embedding.original_size`), on the same device as `low_res`."""
        with torch.inference_mode():
            return self._upscale(low_res, embedding.input_size, embedding.original_size)

    def _upscale(self, low_res: torch.Tensor, input_size: tuple[int, int],
                 original_size: tuple[int, int]) -> torch.Tensor:
        """(Q, M, 256, 256) logits → (Q, M, H, W) logits in the original frame.

        Same as `Sam.postprocess_masks`, skipping the second resize when it would be the identity
        (the usual case for 1024 px map windows).
        """
        n = self.image_size
        x = torch.nn.functional.interpolate(low_res, (n, n), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        if tuple(input_size) != tuple(original_size):
            x = torch.nn.functional.interpolate(x, original_size, mode="bilinear", align_corners=False)
        return x

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Concept prompts need a model with the "text"/"exemplars" capabilities: this one refuses (422)."""
        require(self.describe(), concept.needs())
        raise AssertionError("unreachable: this model has no concept capability")

    def describe(self) -> ModelCard:
        return ModelCard(
            model_id=self.model_id,
            backend=self.backend,
            device=str(self.device),
            dtype=self.precision,
            input_size=self.image_size,
            embedding_version=f"{PREPROCESSING_VERSION}/{self.precision}",
            capabilities=Capabilities(points=True, boxes=True, mask_input=True, multimask=True, automatic=True),
            resize="longest-side",
            low_res_size=256,
            checkpoint=self.checkpoint,
        )

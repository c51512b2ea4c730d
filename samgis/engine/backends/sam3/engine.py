"""SAM 3 backend over Meta's `sam3` package (0.1.4 = facebookresearch/sam3 @ 99d02f2): one shared `Sam3Image`
with its instance-interactive predictor, per-request state kept in `Embedding`.

The math is the package's own image API, without its per-image state:

- `embed` = `Sam3Processor.set_image` (model/sam3_image_processor.py): torchvision v2 `Resize` of the uint8
  image to 1008² (aspect not kept), float in [0, 1], normalised with mean = std = 0.5, then
  `backbone.forward_image`: three concept feature maps (1, 256, 288|144|72, …) and, for clicks, the SAM-2-like
  neck whose two high-res levels go through the tracker decoder's `conv_s0` / `conv_s1`; then
  `Sam3Image.predict_inst`'s `_prepare_backbone_features` + `no_mem_embed`.
- `find` = `Sam3Processor.set_text_prompt` / `add_geometric_prompt` + `_forward_grounding`: the phrase (or
  "visual" when there are only exemplar boxes, as the processor does) through the text encoder, exemplar boxes
  as normalised (cx, cy, w, h) with a positive / negative label appended one by one to the dummy geometric
  prompt, `forward_grounding`; score = sigmoid(logit) · sigmoid(presence logit), kept when ≥ threshold; masks
  = bilinear resize of the kept mask logits to (H, W), sigmoid > 0.5; boxes (cx, cy, w, h) → (x0, y0, x1, y1)
  × (W, H, W, H).
- `decode` = `SAM3InteractiveImagePredictor.predict` (model/sam1_task_predictor.py, SAM 2's predictor): prompts
  × (1008 / W, 1008 / H), a box as two points labelled 2 and 3 before the clicks, `sam_prompt_encoder`,
  `sam_mask_decoder`, masks = bilinear resize of the low-res (288²) logits to (H, W) thresholded at 0.
  One choice of ours: no hole filling (`max_hole_area = 0`). The package's predictor defaults to 256 px, done
  by a CUDA kernel (or scikit-image on the CPU, which the package does not depend on; without it the package
  warns and skips); our `sam2` backend makes the same choice, so a click gives the same mask on every device.
- `generate` (automatic masks): the `sam3` package has no image mask generator of its own, but its instance
  predictor is SAM 2's, so the `sam2` package's `SAM2AutomaticMaskGenerator` runs on it: each grid point decoded
  as `decode` does (1008² frame, multimask), from the window's embedding; crops are embedded as `embed` does
  (`samgis.engine.sam2_amg`). Records of SAM 1's form.

Memory (the embedding cache is bounded by bytes, `Embedding.nbytes`): one window holds the three concept
levels (256 × (288² + 144² + 72²)) and the click features (256 × 72², 32 × 288², 64 × 144²): 132.6 MB in fp32,
66.3 MB in fp16/bf16. On CUDA the features are kept in the autocast precision (bf16 by default), the dtype the
encoder produced them in; on the CPU in fp32. Positional encodings are not stored: they depend only on the
feature size and are recomputed (cached by the package) per request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samgis.engine.amg import point_rows, square_upscale
from samgis.engine.backends.sam3.compat import cpu_only, needs_cpu_shim, to_device
from samgis.engine.devices import autocast, load_state, pick_device, pick_precision
from samgis.engine.protocol import (Capabilities, ConceptPrompt, DecodeResult, Embedding, FoundInstances,
                                    ModelCard, Prompts, require)
from samgis.engine.threads import in_fresh_thread, on_torch_thread, set_torch_threads, to_torch_thread

BACKEND = "sam3"
EMBEDDING_VERSION = "sam3-sq1008-1"
"""Part of the embedding version: v2 Resize of uint8 to 1008², (x - 0.5) / 0.5, both necks, + no_mem_embed."""
INPUT_SIZE = 1008
LOW_RES_SIZE = 288  # the instance decoder's low-res logits: 4 × (1008 / 14)
MASK_THRESHOLD = 0.0
LOW_RES_CLAMP = 32.0  # the predictor clamps the low-res logits it returns to ±32
INST_FEAT_SIZES = ((288, 288), (144, 144), (72, 72))  # SAM3InteractiveImagePredictor._bb_feat_sizes
PER_PASS_CPU = 1  # point queries per decoder pass on the CPU (see `Sam3Engine.point_batch_rows`)
TEXT_CACHE = 64  # phrases whose text-encoder output is kept (a few hundred kB each)

_build_lock = threading.Lock()


def bpe_vocab_path() -> Path:
    """The CLIP BPE vocabulary SAM 3's tokenizer reads. The `sam3` wheel does not ship it (its source tree has
    `sam3/assets/bpe_simple_vocab_16e6.txt.gz`); `open-clip-torch` ships the byte-identical file (sha256
    924691ac…d6804a, 1 356 917 bytes), found without importing open_clip. Never downloaded."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the BPE vocabulary of SAM 3's tokenizer comes with the package open-clip-torch, "
                           "which is not installed (make setup installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall open-clip-torch")
    return path


def feature_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype cached features are kept in: the autocast precision on CUDA (half the bytes), else fp32."""
    if device.type == "cuda" and precision in ("fp16", "bf16"):
        return torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class Sam3Features:
    """`Embedding.features` of this backend, batch 1, on the model device, in `feature_dtype`.

    `concept`: the three concept levels (1, 256, 288, 288), (1, 256, 144, 144), (1, 256, 72, 72)
    (`backbone_fpn` of `forward_image`, `scalp=1` already dropped the 36² one). `image_embed`: (1, 256, 72, 72)
    with `no_mem_embed` added; `high_res_feats`: ((1, 32, 288, 288), (1, 64, 144, 144)) after `conv_s0` /
    `conv_s1`: the instance predictor's `_features`.
    """

    concept: tuple[torch.Tensor, ...]
    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, ...]

    @property
    def nbytes(self) -> int:
        """Bytes held by every tensor (what the embedding cache counts)."""
        return sum(t.element_size() * t.nelement() for t in (*self.concept, self.image_embed, *self.high_res_feats))

    def to(self, dtype: torch.dtype) -> "Sam3Features":
        return Sam3Features(tuple(t.to(dtype) for t in self.concept), self.image_embed.to(dtype),
                            tuple(t.to(dtype) for t in self.high_res_feats))


def build_model(seed: int | None = None, *, init: str = "random") -> torch.nn.Module:
    """SAM 3's image model with its instance-interactive predictor, built by the package's
    `build_sam3_image_model` with no checkpoint (never a download), on the CPU, in eval mode.

    `init`: "random" (the package's own initialisation; slow on a CPU: ~1 min), "fast" (pseudo-random weights
    of the same scales from a seeded bank, a few seconds: tests and benchmarks), or "none" (uninitialised
    memory, for a checkpoint that overwrites every tensor). `seed` seeds torch (and the fast bank).
    """
    from samgis.engine.backends.sam3.compat import fast_init
    from sam3.model_builder import build_sam3_image_model

    if seed is not None:
        torch.manual_seed(seed)
    bpe = str(bpe_vocab_path())
    with _build_lock, cpu_only(), fast_init(init, seed or 0):
        model = build_sam3_image_model(bpe_path=bpe, device="cpu", eval_mode=True, checkpoint_path=None,
                                       load_from_HF=False, enable_segmentation=True,
                                       enable_inst_interactivity=True)
        if init != "none":
            _init_unset_text_params(model)
    return model.eval()


def _init_unset_text_params(model: torch.nn.Module) -> None:
    """The package creates the text encoder's `positional_embedding` (77, 1024) and `text_projection`
    (1024, 512) with `torch.empty` and never initialises them (model/text_encoder_ve.py: every checkpoint sets
    them), so a model built without a checkpoint holds whatever memory it got, NaN included. For random-weight
    models we draw them as OpenCLIP's `TextTransformer.init_parameters` does: normal, std 0.01 and width^-0.5."""
    enc = model.backbone.language_backbone.encoder
    with torch.no_grad():
        torch.nn.init.normal_(enc.positional_embedding, std=0.01)
        if isinstance(enc.text_projection, torch.nn.Parameter):
            torch.nn.init.normal_(enc.text_projection, std=enc.text_projection.shape[0] ** -0.5)


def checkpoint_state(state: dict) -> dict:
    """The official checkpoint's tensors under this model's names, as the package's `_load_checkpoint` maps
    them: "detector.X" → "X", "tracker.X" → "inst_interactive_predictor.model.X" (a "model" entry, when present,
    is the state dict)."""
    if isinstance(state.get("model"), dict):
        state = state["model"]
    out = {k.replace("detector.", ""): v for k, v in state.items() if "detector" in k}
    out.update({k.replace("tracker.", "inst_interactive_predictor.model."): v
                for k, v in state.items() if "tracker" in k})
    return out


def load_model(model_id: str, checkpoint: Path) -> torch.nn.Module:
    """The model on the CPU with the weights of an official-format `sam3.pt`. Unlike the package (which prints
    missing keys and goes on), every tensor must match by name and shape: ValueError naming `checkpoint`.

    Memory: the file is memory-mapped and the model takes its tensors as they are (`load_state(assign=True)`;
    the architecture is built without writing its own), so the weights are held once, as file pages, not
    copied into a second 3.4 GB; on CUDA `to_device` copies them to the GPU and the mapping goes. The file
    must therefore not be rewritten in place while a CPU model uses it (replace it by a rename, as the
    weights cache does)."""
    checkpoint = Path(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # not a torch file, truncated, or pickled code
        raise ValueError(f"{checkpoint} is not a readable SAM 3 checkpoint: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} is not a SAM 3 checkpoint: expected a dict of tensors")
    model = build_model(init="none")  # every tensor is overwritten below
    return load_state(model, checkpoint_state(state), checkpoint, model_id, assign=True)


def load(spec, weights: Path, device: str = "auto", precision: str = "auto") -> "Sam3Engine":
    """The backend entry point `samgis.engine.factory` calls."""
    model = in_fresh_thread(load_model, spec.model_id, Path(weights))
    return Sam3Engine(model, spec.model_id, device=device, precision=precision, checkpoint=str(weights))


class Sam3Engine:
    """The `Engine` protocol over a `sam3` `Sam3Image` built with instance interactivity.

    Threads (see `samgis.engine.threads`): click decodes run on the process's one torch thread; encoder passes,
    concept searches (text encoder + detector + mask head: long) and loading on a thread of their own that ends
    with them. Nothing about the current image lives on the engine; the only shared state is a small LRU of
    text-encoder outputs per phrase.

    `precision`: "fp32", or "bf16" / "fp16" autocast. "auto": bf16 on CUDA (as Meta's examples run SAM 3),
    fp32 on CPU (exact parity with the package's processor).
    """

    backend = BACKEND

    def __init__(self, model: torch.nn.Module, model_id: str, device: str = "auto", precision: str = "auto",
                 checkpoint: str | None = None):
        from cachetools import LRUCache
        from torchvision.transforms import v2

        if model.inst_interactive_predictor is None:
            raise ValueError("the SAM 3 model must be built with enable_inst_interactivity=True")
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision, cuda_default="bf16")
        self.feature_dtype = feature_dtype(self.device, self.precision)
        self.model = to_device(model, self.device).eval()
        self.tracker = model.inst_interactive_predictor.model
        self.model_id = model_id
        self.checkpoint = checkpoint
        self._shim = needs_cpu_shim(self.device)
        # Sam3Processor's transform (its __init__), here for the uint8 (3, H, W) tensors we hand it
        self.transform = v2.Compose([
            v2.ToDtype(torch.uint8, scale=True),
            v2.Resize(size=(INPUT_SIZE, INPUT_SIZE)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
        ])
        # Queries per decoder pass in `decode_point_batch` and the automatic masks: 16 on CUDA (as `Sam2Engine`;
        # not measured for SAM 3), one on the CPU: each row repeats the 288² / 144² high-res features; per point,
        # 2 and 4 rows per pass took 0.96× and 1.34× the time of one (bench/bench_sam3.py, interleaved, loaded
        # 2-core machine), and one row keeps a click queued behind a grid pass waiting least.
        self.point_batch_rows = 16 if self.device.type == "cuda" else PER_PASS_CPU
        self._encoder_lock = threading.Lock()
        self._text_lock = threading.Lock()
        self._text_cache: LRUCache = LRUCache(TEXT_CACHE)

    def set_threads(self, n: int) -> int:
        """Intra-op threads for this process's torch work; returns the old count."""
        return set_torch_threads(n)

    # --- helpers ------------------------------------------------------------------------------------

    def _autocast(self):
        return autocast(self.device, self.precision)

    def _check(self, embedding: Embedding) -> Sam3Features:
        return embedding.features_for(self.model_id, Sam3Features)

    # --- embed --------------------------------------------------------------------------------------

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode (H, W, 3) uint8 RGB → `Sam3Features` on the model device; `input_size` = (1008, 1008)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or min(image.shape[:2]) < 1:
            raise ValueError(f"image must be (H, W, 3) uint8 with H, W ≥ 1, got "
                             f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', type(image).__name__)}")
        return in_fresh_thread(self._embed, image)

    def _embed(self, image: np.ndarray) -> Embedding:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(self.device)  # (3, H, W) uint8
        x = self.transform(x).unsqueeze(0)  # (1, 3, 1008, 1008) float32
        dec = self.tracker.sam_mask_decoder
        with self._encoder_lock, torch.inference_mode(), self._autocast(), cpu_only(self._shim):
            out = self.model.backbone.forward_image(x)
            sam2 = out["sam2_backbone_out"]
            fpn = list(sam2["backbone_fpn"])
            fpn[0], fpn[1] = dec.conv_s0(fpn[0]), dec.conv_s1(fpn[1])
            _, vision_feats, _, _ = self.tracker._prepare_backbone_features({**sam2, "backbone_fpn": fpn})
            vision_feats[-1] = vision_feats[-1] + self.tracker.no_mem_embed
            feats = [f.permute(1, 2, 0).reshape(1, -1, *size)
                     for f, size in zip(vision_feats[::-1], INST_FEAT_SIZES[::-1])][::-1]
        features = Sam3Features(concept=tuple(t.contiguous() for t in out["backbone_fpn"]),
                                image_embed=feats[-1].contiguous(),
                                high_res_feats=tuple(f.contiguous() for f in feats[:-1])).to(self.feature_dtype)
        return Embedding(features=features, original_size=(int(image.shape[0]), int(image.shape[1])),
                         input_size=(INPUT_SIZE, INPUT_SIZE), model_id=self.model_id, nbytes=features.nbytes)

    # --- find (concept prompts) ---------------------------------------------------------------------

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Every instance of `concept` scoring ≥ `score_threshold` (the protocol's rule; the processor keeps > , the
        same but at exact ties), best first; see `FoundInstances` for shapes. Text and exemplar boxes combine into
        one prompt. Blocks."""
        require(self.describe(), concept.needs(), field="concept")
        self._check(embedding)
        return in_fresh_thread(self._find, embedding, concept, float(score_threshold))

    def _text_features(self, phrase: str) -> dict:
        """`backbone.forward_text([phrase])`: language_features (T, 1, 256), language_mask (1, T),
        language_embeds; kept per phrase (the text encoder is a 24-layer transformer)."""
        with self._text_lock:
            hit = self._text_cache.get(phrase)
        if hit is None:
            with torch.inference_mode(), self._autocast(), cpu_only(self._shim):
                hit = self.model.backbone.forward_text([phrase], device=self.device)
            with self._text_lock:
                self._text_cache[phrase] = hit
        return dict(hit)

    def _find(self, embedding: Embedding, concept: ConceptPrompt, threshold: float) -> FoundInstances:
        from sam3.model import box_ops
        from sam3.model.data_misc import FindStage

        h, w = embedding.original_size
        feats: Sam3Features = embedding.features
        concept_feats = list(feats.concept)
        with torch.inference_mode(), self._autocast(), cpu_only(self._shim):
            pos = self.model.backbone.vision_backbone.position_encoding(concept_feats[-1])
            backbone_out = {"vision_features": concept_feats[-1], "backbone_fpn": concept_feats,
                            "vision_pos_enc": [pos.to(concept_feats[-1].dtype)], "sam2_backbone_out": None,
                            **self._text_features(concept.text or "visual")}
            prompt = self.model._get_dummy_prompt()
            if len(concept.boxes):
                b = torch.as_tensor(concept.boxes, dtype=torch.float32, device=self.device)
                scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
                cxcywh = box_ops.box_xyxy_to_cxcywh(b / scale)
                for box, label in zip(cxcywh, concept.labels.tolist()):
                    prompt.append_boxes(box.view(1, 1, 4),
                                        torch.tensor([bool(label)], device=self.device).view(1, 1))
            ids = torch.tensor([0], device=self.device, dtype=torch.long)
            find_input = FindStage(img_ids=ids, text_ids=ids, input_boxes=None, input_boxes_mask=None,
                                   input_boxes_label=None, input_points=None, input_points_mask=None)
            out = self.model.forward_grounding(backbone_out=backbone_out, find_input=find_input,
                                               geometric_prompt=prompt, find_target=None)
            probs = out["pred_logits"].float().sigmoid() * out["presence_logit_dec"].float().sigmoid().unsqueeze(1)
            probs = probs.squeeze(-1)[0]  # (Q,)
            keep = torch.nonzero(probs >= threshold).squeeze(1)
            keep = keep[torch.argsort(probs[keep], descending=True, stable=True)]
            boxes = box_ops.box_cxcywh_to_xyxy(out["pred_boxes"][0, keep].float())
            boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            logits = out["pred_masks"][0, keep].float()  # (N, 288, 288)
            masks = [F.interpolate(logits[i:i + 1, None], (h, w), mode="bilinear", align_corners=False)[0, 0]
                     .sigmoid() > 0.5 for i in range(len(keep))]  # one at a time: N × H × W floats at most once
        return FoundInstances(
            masks=torch.stack(masks).cpu().numpy() if masks else np.zeros((0, h, w), bool),
            scores=probs[keep].cpu().numpy().astype(np.float32),
            boxes=boxes.cpu().numpy().astype(np.float32).reshape(-1, 4),
        )

    # --- decode (clicks and boxes) ------------------------------------------------------------------

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """Decode Q = `prompts.n_queries` queries in one batch; see `DecodeResult` (here M masks of (H, W), low-res
        logits (Q, M, 288, 288)). Points are shared by every query; each box is its own query."""
        self._check(embedding)
        return on_torch_thread(self._decode, embedding, prompts, multimask)

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        self._check(embedding)
        return await to_torch_thread(self._decode, embedding, prompts, multimask)

    def _to_model_frame(self, xy: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
        """(..., 2) float (x, y) image px → float32 tensor in the 1008² input frame (x · 1008 / W, y · 1008 / H),
        as `SAM2Transforms.transform_coords(normalize=True)` computes it."""
        h, w = original_size
        pts = torch.as_tensor(np.asarray(xy, np.float32), dtype=torch.float, device=self.device).clone()
        pts[..., 0] = pts[..., 0] / w
        pts[..., 1] = pts[..., 1] / h
        return pts * INPUT_SIZE

    def _decode(self, embedding: Embedding, prompts: Prompts, multimask: bool) -> DecodeResult:
        size = embedding.original_size
        q = prompts.n_queries
        coords = labels = None
        if len(prompts.points):
            coords = self._to_model_frame(prompts.points, size)[None].expand(q, -1, -1)
            labels = torch.as_tensor(prompts.labels, dtype=torch.int, device=self.device)[None].expand(q, -1)
        if len(prompts.boxes):
            boxes = self._to_model_frame(prompts.boxes.reshape(-1, 2, 2), size)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=self.device).repeat(len(boxes), 1)
            if coords is not None:  # boxes go first, then the clicks
                coords, labels = torch.cat([boxes, coords], dim=1), torch.cat([box_labels, labels], dim=1)
            else:
                coords, labels = boxes, box_labels
        mask = None
        if prompts.mask_input is not None:
            m = np.asarray(prompts.mask_input, np.float32)
            if m.size != LOW_RES_SIZE * LOW_RES_SIZE:
                raise ValueError(f"mask_input must be (1, {LOW_RES_SIZE}, {LOW_RES_SIZE}), got {m.shape}")
            mask = torch.as_tensor(m, device=self.device).reshape(1, 1, LOW_RES_SIZE, LOW_RES_SIZE).expand(q, -1, -1, -1)
        with torch.inference_mode():
            low_res, iou = self._decode_low_res(embedding, coords, labels, mask, multimask)
            masks = self._upscale(low_res, size) > MASK_THRESHOLD
            low_res = low_res.float().clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        return DecodeResult(masks=masks.cpu().numpy(), scores=iou.float().cpu().numpy().astype(np.float32),
                            logits=low_res.cpu().numpy().astype(np.float32))

    def _decode_low_res(self, embedding: Embedding, coords: torch.Tensor, labels: torch.Tensor,
                        mask: torch.Tensor | None, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """`SAM3InteractiveImagePredictor._predict` up to the decoder: `coords` (Q, N, 2) float32 in the 1008²
        frame (boxes already as their two corner points labelled 2 and 3), `labels` (Q, N) int32, `mask`
        (Q, 1, 288, 288) logits or None. Returns the unclamped low-res logits (Q, M, 288, 288) and IoU predictions
        (Q, M), in the autocast dtype, on the model device. Call under inference mode."""
        feats: Sam3Features = embedding.features
        with self._autocast(), cpu_only(self._shim):
            sparse, dense = self.tracker.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask)
            low_res, iou, _, _ = self.tracker.sam_mask_decoder(
                image_embeddings=feats.image_embed,
                image_pe=self.tracker.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=coords.shape[0] > 1,
                high_res_features=list(feats.high_res_feats),
            )
        return low_res, iou

    def decode_point_batch(self, embedding: Embedding, points, labels,
                           multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B independent point queries, returning only low-res outputs (a
        `samgis.engine.amg.PointBatchDecoder`).

        `points`: (B, N, 2) float (x, y) in image px, SAM convention, of the embedded image, numpy or torch;
        `labels`: (B, N) int, 1 = include, 0 = exclude. Row b decodes as `decode(embedding, Prompts(points[b],
        labels[b]), multimask)` would. Returns `(low_res_logits, scores)`: (B, M, 288, 288) float32 logits (clamped
        to ±32, as `DecodeResult.logits`) and (B, M) float32 predicted IoU, torch tensors on the CPU; M = 3 with
        `multimask`, else 1. Runs `point_batch_rows` queries per decoder pass.
        """
        self._check(embedding)
        low, scores = self._point_rows(embedding, points, labels, multimask, to_model_frame=True)
        return low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP), scores

    def _point_rows(self, embedding: Embedding, points, labels, multimask: bool, *, to_model_frame: bool,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unclamped low-res logits (B, M, 288, 288) and scores (B, M), float32 on the CPU, of B point queries;
        points (B, N, 2) in image px (`to_model_frame`) or already in the 1008² frame. `mask`: optional
        (B, 1, 288, 288) mask inputs, one per row. One torch-thread call per decoder pass of `point_batch_rows`
        rows, so clicks queued meanwhile wait for one pass only."""
        return point_rows(self, embedding, points, labels, multimask, to_model_frame=to_model_frame, mask=mask,
                          low_res_size=LOW_RES_SIZE)

    def _rows_pass(self, embedding: Embedding, coords: torch.Tensor, labels: torch.Tensor,
                   mask: torch.Tensor | None, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            mask = None if mask is None else mask.to(self.device, torch.float)
            low_res, iou = self._decode_low_res(embedding, coords, labels, mask, multimask)
            return low_res.float().cpu(), iou.float().cpu()

    # --- upscale ------------------------------------------------------------------------------------

    def upscale_logits(self, low_res, embedding: Embedding) -> torch.Tensor:
        """(B, M, 288, 288) low-res logits (torch or numpy) → (B, M, H, W) float32 logits in the embedded image's
        px, (H, W) = `embedding.original_size`, on the input's device (CPU for numpy): one bilinear resize (the
        image was stretched to 1008² without padding, so there is nothing to crop)."""
        return square_upscale(low_res, embedding.original_size)

    def _upscale(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """`SAM2Transforms.postprocess_masks` without hole filling: bilinear, align_corners=False, float32."""
        return square_upscale(low_res, original_size)

    # --- automatic masks ----------------------------------------------------------------------------

    def generate(self, embedding: Embedding, options, image: np.ndarray | None = None,
                 decode_bytes: int = 256 << 20) -> list[dict]:
        """Automatic masks of the embedded image: the `sam2` package's `SAM2AutomaticMaskGenerator` decoding on
        this engine's instance-interactive path (the `sam3` package has no image mask generator of its own; its
        instance predictor is SAM 2's); see `samgis.engine.sam2_amg.generate`. Records of SAM 1's form."""
        from samgis.engine.sam2_amg import generate

        self._check(embedding)
        return generate(self, embedding, options, image=image, decode_bytes=decode_bytes)

    # --- card ---------------------------------------------------------------------------------------

    def describe(self) -> ModelCard:
        return ModelCard(
            model_id=self.model_id, backend=self.backend, device=str(self.device), dtype=self.precision,
            input_size=INPUT_SIZE, embedding_version=f"{EMBEDDING_VERSION}/{self.precision}",
            capabilities=Capabilities(points=True, boxes=True, mask_input=True, multimask=True, automatic=True,
                                      text=True, exemplars=True),
            resize="square", low_res_size=LOW_RES_SIZE, checkpoint=self.checkpoint,
        )

"""The `onnx` backend: a SAM encoder/decoder pair run by ONNX Runtime.

Pairs it serves:

- ours (`samgis export-onnx`, `samgis.engine.backends.onnx.export`): a folder with `manifest.json`, whose
  file hashes are checked on load; SAM 1 (`family: "sam1"`) or SAM 2 / 2.1 (`family: "sam2"`);
- samexporter's SAM 1 / MobileSAM pairs (github.com/vietanhdev/samexporter: `samexporter/export_encoder.py`,
  `export_decoder.py`, `sam_onnx.py`, `convert_all_meta_sam.sh`, `convert_mobile_sam.sh`): files named
  `<name>.encoder.onnx` / `<name>.decoder.onnx` (`.encoder.quant.onnx` / `.decoder.quant.onnx` quantized),
  the encoder taking `input_image` either (H, W, 3) float32 RGB 0..255 already resized to longest side
  1024 (`--use-preprocess`: normalisation and padding in the graph) or (1, 3, 1024, 1024) normalised and
  padded, returning `image_embeddings`; the decoder is Meta's `SamOnnxModel` (inputs `image_embeddings`,
  `point_coords`, `point_labels`, `mask_input`, `has_mask_input`, `orig_im_size`; outputs `masks`,
  `iou_predictions`, `low_res_masks`), usually exported with `--return-single-mask`;
- samexporter's SAM 2 / 2.1 pairs (`samexporter/export_sam2.py`, `sam2_onnx.py`): encoder `image`
  (1, 3, 1024, 1024) → `high_res_feats_0`, `high_res_feats_1`, `image_embed`; decoder → `masks` (the three
  multimask low-res logits, clamped to ±32) and `iou_predictions`, padding point added in its graph, one
  query per run. It has no single-mask token: one mask is the best-scored of the three.

Capabilities come from the decoder itself: no `mask_input` input → no mask_input; one mask per query →
no multimask (and no automatic masks, which need the three multimask outputs). A request for a missing
capability raises `samgis.errors.MissingCapability` (HTTP 422) naming it.

Pre/post-processing are done here, per family. SAM 1: `ResizeLongestSide` to the input size, normalise
and pad (unless the encoder does it), prompts through `ResizeLongestSide.apply_coords`, low-res logits
upscaled with `Sam.postprocess_masks`' math (bilinear to S × S, crop the unpadded part, bilinear to the
image). SAM 2 (`SAM2ImagePredictor`): the image stretched to S × S (`SAM2Transforms`), prompts scaled by
S / W, S / H with box corners first, SAM 2's single-mask rule, logits bilinear straight to the image and
returned clamped to ±32. SAM 2 automatic masks are left to the sam2 backend (its own generator).

Threads: ONNX Runtime runs on its own intra-op pool (`threads`, 0 = one per physical core; `set_threads`
reopens the sessions with another count); the engine takes calls from any thread (sessions are
thread-safe; one encoder pass at a time). Masks are upscaled with OpenCV on the calling thread; SAM 2's
image preprocessing (torchvision) runs on the process's torch thread (`samgis.engine.threads`).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from samgis.engine.amg import point_batch_arrays
from samgis.engine.backends.sam1.postprocess import postprocess_masks
from samgis.engine.backends.onnx.manifest import MANIFEST_NAME, file_sha256, read_manifest
from samgis.engine.protocol import (AmgOptions, Capabilities, ConceptPrompt, DecodeResult, Embedding,
                                    FoundInstances, ModelCard, Prompts, require, required_capabilities)
from samgis.engine.registry import ModelSpec
from samgis.engine.threads import on_torch_thread

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
DECODER_REQUIRED = ("image_embeddings", "point_coords", "point_labels")
DECODER_OUTPUTS = ("iou_predictions", "low_res_masks")
SAM2_FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def onnx_providers(device: str = "auto") -> list[str]:
    """Execution providers for `device`: `auto` → CUDA when this onnxruntime has it, else CPU."""
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device == "cuda":
        if not cuda:
            raise ValueError("device 'cuda' was asked for but onnxruntime has no CUDAExecutionProvider "
                             "(it needs the onnxruntime-gpu package and a CUDA device)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")


def session_options(threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """`threads` intra-op threads (0: ONNX Runtime's default, one per physical core), sequential graph
    execution. `spinning=False` lets the pool's threads sleep between runs instead of spinning, so an idle
    engine leaves the CPUs to the rest of the process (tile fetching, polygons, torch)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 3
    return so


def upscale(low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int],
            image_size: int, square: bool = False) -> torch.Tensor:
    """(Q, M, l, l) float32 low-res logits in the padded S × S input frame → (Q, M, H, W) float32 logits in
    the original image frame: `Sam.postprocess_masks` (bilinear to S × S, crop `input_size` (h, w),
    bilinear to `original_size` (H, W)). `square` (SAM 2, whose input frame is the whole image
    stretched): bilinear straight to (H, W), as `SAM2Transforms.postprocess_masks`."""
    with torch.inference_mode():
        x = low_res.float()
        if square:
            return torch.nn.functional.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)
        x = torch.nn.functional.interpolate(x, (image_size, image_size), mode="bilinear", align_corners=False)
        x = x[..., : input_size[0], : input_size[1]]
        if tuple(input_size) != tuple(original_size):
            x = torch.nn.functional.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)
        return x


def _masks(low_res: np.ndarray, input_size, original_size, image_size: int, square: bool) -> np.ndarray:
    """`upscale` of numpy logits, thresholded at 0 → (Q, M, H, W) bool; with OpenCV's bilinear resize (the
    same values, ~9× faster than torch's on CPU: `samgis.engine.backends.sam1.postprocess`), on the
    calling thread."""
    return postprocess_masks(low_res, None if square else input_size, original_size, image_size, 0.0)


def _high_res_nchw(aux: dict, grid: int) -> dict:
    """`high_res_feats_0` (1, 32, 4g, 4g) and `high_res_feats_1` (1, 64, 2g, 2g) back from the token layout
    of `prepare.onnx`'s `s0` (4g², 4·32) and `s1` (g², 4·64): `tokens_layout_s0` / `_s1` inverted (a copy)."""
    s0, s1 = aux["s0"], aux["s1"]
    o0, o1 = s0.shape[1] // 4, s1.shape[1] // 4
    f0 = s0.reshape(grid, grid, 2, 2, 2, 2, o0).transpose(6, 0, 2, 4, 1, 3, 5).reshape(1, o0, 4 * grid, 4 * grid)
    f1 = s1.reshape(grid, grid, 2, 2, o1).transpose(4, 0, 2, 1, 3).reshape(1, o1, 2 * grid, 2 * grid)
    return {"high_res_feats_0": np.ascontiguousarray(f0), "high_res_feats_1": np.ascontiguousarray(f1)}


def _concrete(shape, fill: dict) -> tuple[int, ...]:
    """An ONNX input shape with its symbolic dimensions replaced by `fill[i]` (or 1)."""
    return tuple(d if isinstance(d, int) and d > 0 else fill.get(i, 1) for i, d in enumerate(shape))


class OnnxEngine:
    """The `Engine` protocol over an ONNX SAM encoder/decoder pair (see the module docstring).

    `encoder_path` / `decoder_path`: the two files. `manifest`: our export's manifest (None for a
    samexporter pair: everything is read from the graphs). `device`: auto / cpu / cuda (execution
    provider). `threads`: ONNX Runtime intra-op threads, 0 = its default.
    """

    backend = "onnx"

    def __init__(self, encoder_path: Path, decoder_path: Path, model_id: str, *, manifest: dict | None = None,
                 device: str = "auto", threads: int = 0, spinning: bool = False,
                 location: str | None = None, encoder_sha256: str | None = None):
        self.model_id = model_id
        self.manifest = manifest
        self.encoder_path, self.decoder_path = Path(encoder_path), Path(decoder_path)
        self.location = location or str(self.encoder_path.parent)
        self.spinning = spinning
        self._requested_providers = onnx_providers(device)
        self._sessions_lock = threading.Lock()
        self._open_sessions(threads)
        self.providers = self.encoder.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self._encoder_lock = threading.Lock()
        self._inspect_encoder()
        self._inspect_decoder()
        self.transform = ResizeLongestSide(self.image_size)
        digest = encoder_sha256 or (manifest["files"][manifest["encoder"]["file"]]["sha256"] if manifest
                                    else file_sha256(self.encoder_path))
        # Embeddings are only interchangeable between engines with the same encoder file and input rule.
        self.embedding_version = f"onnx-{self.family}-{self.input_layout}-{self.image_size}-{digest[:16]}"
        # Queries per decoder run in `decode_point_batch` (a batched decoder runs them together).
        self.point_batch_rows = 16 if self.device == "cuda" else 4

    def _open_sessions(self, threads: int) -> None:
        """(Re)open the encoder and decoder sessions with `threads` intra-op threads (0: ORT's default).
        Calls already running finish on the sessions they started with."""
        so = session_options(threads, self.spinning)

        def open_(path: Path) -> ort.InferenceSession:
            return ort.InferenceSession(str(path), so, providers=self._requested_providers)

        encoder, decoder = open_(self.encoder_path), open_(self.decoder_path)
        fast = (self.manifest or {}).get("fast_decoder")
        folder = self.encoder_path.parent
        prepare, fast_decoder = (open_(folder / fast["prepare"]), open_(folder / fast["file"])) if fast else (None, None)
        self.encoder, self.decoder, self.threads = encoder, decoder, int(threads)
        # our SAM 2 pairs: per-window constants (`prepare`) and the cached-constant decoder, for clicks
        # without a mask input (see `samgis.engine.backends.onnx.export`)
        self.prepare, self.fast_decoder = prepare, fast_decoder
        self.fast_consts = list(fast["consts"]) if fast else []

    def set_threads(self, n: int) -> int:
        """ONNX Runtime intra-op threads for both sessions (0: one per physical core); returns the previous
        setting. A session's thread pool is fixed when it opens, so a new count reopens the sessions (the
        files were checked on load and are not hashed again)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"threads must be an int ≥ 0, got {n!r}")
        with self._sessions_lock:
            previous = self.threads
            if n != previous:
                self._open_sessions(n)
            return previous

    # --- inspection --------------------------------------------------------------------------------

    def _inspect_encoder(self) -> None:
        ins, outs = self.encoder.get_inputs(), [o.name for o in self.encoder.get_outputs()]
        if len(ins) != 1:
            raise ValueError(f"{self.encoder_path}: an encoder takes one input, this one takes "
                             f"{[i.name for i in ins]}")
        self.encoder_input = ins[0].name
        shape = ins[0].shape
        m_in = (self.manifest or {}).get("input", {})
        norm = m_in.get("normalize", {})
        self.samexporter_sam2 = False
        if SAM2_FEATURES[0] in outs:
            if set(outs) != set(SAM2_FEATURES) or len(shape) != 4 or not isinstance(shape[2], int):
                raise ValueError(f"{self.encoder_path}: a SAM 2 encoder with outputs {outs} and input {shape}; "
                                 f"expected {list(SAM2_FEATURES)} from (1, 3, S, S)")
            if self.manifest and self.manifest.get("family") != "sam2":
                raise ValueError(f"{self.encoder_path} is a SAM 2 encoder but the manifest says "
                                 f"{self.manifest.get('family')!r}")
            self.family, self.encoder_outputs = "sam2", list(SAM2_FEATURES)
            self.input_layout, self.image_size = "square", int(shape[2])
            # samexporter's SAM 2 pair has no manifest: SAM 2's own ImageNet normalisation
            self.to_tensor = Compose([ToTensor(), Resize((self.image_size, self.image_size)),
                                      Normalize(norm.get("mean", IMAGENET_MEAN), norm.get("std", IMAGENET_STD))])
            self.single_mask_rule = (self.manifest or {}).get("decoder", {}).get("single_mask_rule") or {}
            self.logits_clamp = (self.manifest or {}).get("logits_clamp", 32.0)
            self.samexporter_sam2 = self.manifest is None
            return
        self.family, self.logits_clamp = "sam1", None
        self.encoder_outputs = ["image_embeddings" if "image_embeddings" in outs else outs[0]]
        self.pixel_mean = np.asarray(norm.get("mean", SAM_PIXEL_MEAN), np.float32)
        self.pixel_std = np.asarray(norm.get("std", SAM_PIXEL_STD), np.float32)
        if len(shape) == 4:  # (1, 3, S, S): normalised, padded, channels first
            self.input_layout = "nchw"
            self.image_size = shape[2] if isinstance(shape[2], int) else int(m_in.get("size", 1024))
        elif len(shape) == 3:  # (h, w, 3): resized RGB 0..255, the graph normalises and pads (samexporter)
            self.input_layout = "hwc"
            self.image_size = int(m_in.get("size", 1024))
        else:
            raise ValueError(f"{self.encoder_path}: encoder input {ins[0].name} {shape} is neither "
                             "(1, 3, S, S) nor (H, W, 3)")
        if m_in.get("resize", "longest_side") != "longest_side":
            raise ValueError(f"{self.encoder_path}: resize rule {m_in['resize']!r} is not supported")

    def _inspect_decoder(self) -> None:
        ins = {i.name: i for i in self.decoder.get_inputs()}
        outs = [o.name for o in self.decoder.get_outputs()]
        self.feature_inputs = list(SAM2_FEATURES) if self.family == "sam2" else ["image_embeddings"]
        required = [*self.feature_inputs, *DECODER_REQUIRED[1:]]
        # samexporter's SAM 2 decoder (export_sam2.py): outputs `masks` (Q, 3, 256, 256) low-res logits (the
        # multimask tokens, clamped to ±32) and `iou_predictions` (Q, 3); it appends the padding point
        # itself and takes one query per run (repeat_image=False).
        self.decoder_outputs = (["iou_predictions", "masks"] if self.samexporter_sam2 else list(DECODER_OUTPUTS))
        missing = [n for n in required if n not in ins] + [n for n in self.decoder_outputs if n not in outs]
        if missing:
            raise ValueError(f"{self.decoder_path} is not a SAM decoder in Meta's ONNX format: it lacks "
                             f"{missing} (inputs {list(ins)}, outputs {outs})")
        known = {*required, "mask_input", "has_mask_input", "orig_im_size"}
        unknown = [n for n in ins if n not in known]
        if unknown:
            raise ValueError(f"{self.decoder_path}: unknown decoder inputs {unknown}")
        self.has_mask_input = "mask_input" in ins and "has_mask_input" in ins
        self.has_orig_im_size = "orig_im_size" in ins
        self.batched = not isinstance(ins["point_coords"].shape[0], int) and not self.samexporter_sam2
        grid = self.image_size // 16
        zeros = {n: np.zeros(_concrete(ins[n].shape, {1: 256, 2: grid, 3: grid}), np.float32)
                 for n in self.feature_inputs}
        self.low_res_size = (int(ins["mask_input"].shape[-1]) if self.has_mask_input
                             and isinstance(ins["mask_input"].shape[-1], int) else 4 * grid)
        # One probe run tells how many masks a query gets (4 = all mask tokens; 1 = one selected).
        iou, low = self._run(zeros if self.family == "sam2" else zeros["image_embeddings"],
                             np.array([[[self.image_size / 2, self.image_size / 2], [0.0, 0.0]]], np.float32),
                             np.array([[1.0, -1.0]], np.float32), None, (self.image_size, self.image_size))
        self.masks_per_query = int(iou.shape[1])
        if self.masks_per_query not in ((3,) if self.samexporter_sam2 else (1, 4)) \
                or low.shape[1] != self.masks_per_query:
            raise ValueError(f"{self.decoder_path}: {iou.shape[1]} scores and {low.shape[1]} masks per query; "
                             "expected 4 (all mask tokens) or 1 (single-mask export)")
        self.low_res_size = int(low.shape[-1])
        multimask = self.masks_per_query in (3, 4)
        # automatic: SAM 1's generator needs the three multimask outputs; SAM 2's is the sam2 backend's
        self.capabilities = Capabilities(points=True, boxes=True, mask_input=self.has_mask_input,
                                         multimask=multimask, automatic=multimask and self.family == "sam1",
                                         text=False)

    def require(self, *needed: str, field: str = "prompts") -> None:
        """Raise `samgis.errors.MissingCapability` (422) naming what this model lacks of `needed`."""
        require(self.describe(), list(needed), field)

    # --- encoder -----------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """(H, W, 3) uint8 RGB → (encoder input, (h, w) resized size before padding).

        Encoder input: (1, 3, S, S) float32 normalised and zero-padded (`nchw`), or (h, w, 3) float32
        0..255 (`hwc`, the encoder normalises and pads). Resizing is `ResizeLongestSide.apply_image`.
        """
        resized = self.transform.apply_image(image)
        h, w = resized.shape[:2]
        if self.input_layout == "hwc":
            return resized.astype(np.float32), (h, w)
        x = (resized.astype(np.float32) - self.pixel_mean) / self.pixel_std
        s = self.image_size
        out = np.zeros((1, 3, s, s), np.float32)
        out[0, :, :h, :w] = x.transpose(2, 0, 1)
        return out, (h, w)

    def _preprocess_sam2(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB → (1, 3, S, S) float32: `SAM2Transforms` (0..1, Resize((S, S)), Normalize)."""
        with torch.inference_mode():
            return self.to_tensor(image)[None].numpy()

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode (H, W, 3) uint8 RGB → features: SAM 1 (1, 256, 64, 64) float32 numpy (CPU); SAM 2 a dict
        of `image_embed` (1, 256, 64, 64), `high_res_feats_0` (1, 32, 256, 256), `high_res_feats_1`
        (1, 64, 128, 128) float32 numpy."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise ValueError(f"image must be (H, W, 3) uint8 with H, W ≥ 1, got {image.shape} {image.dtype}")
        if self.family == "sam2":
            x = on_torch_thread(self._preprocess_sam2, image)
            input_size = (self.image_size, self.image_size)
        else:
            x, input_size = self.preprocess(image)
        prepare = self.prepare
        with self._encoder_lock:
            out = self.encoder.run(self.encoder_outputs, {self.encoder_input: x})
            out = [np.ascontiguousarray(o, np.float32) for o in out]
            features = dict(zip(self.encoder_outputs, out)) if self.family == "sam2" else out[0]
            aux = None
            if prepare is not None:
                aux = dict(zip(self.fast_consts, prepare.run(self.fast_consts, features)))
                # the high-res maps are kept once, in the fast decoder's token layout (`_high_res_nchw`)
                features = {"image_embed": features["image_embed"]}
        nbytes = sum(a.nbytes for a in (*(features.values() if isinstance(features, dict) else [features]),
                                         *(aux.values() if aux else [])))
        return Embedding(features=features, original_size=(int(image.shape[0]), int(image.shape[1])),
                         input_size=input_size, model_id=self.model_id, nbytes=int(nbytes), aux=aux)

    # --- decoder -----------------------------------------------------------------------------------

    def _run(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray, mask: np.ndarray | None,
             original_size: tuple[int, int], aux: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Decoder over Q queries: `coords` (Q, N, 2) float32 in the model input frame, `labels` (Q, N)
        float32 (SAM's -1/0/1/2/3), `mask` (1, 1, l, l) float32 logits or None; `aux`: the embedding's
        per-window constants (the cached-constant decoder runs when given and `mask` is None). Returns
        (iou (Q, M) float32, low-res logits (Q, M, l, l) float32), M = `masks_per_query`."""
        feed = dict(features) if isinstance(features, dict) else {"image_embeddings": features}
        decoder, fast = self.decoder, self.fast_decoder
        if self.samexporter_sam2:  # its graph appends the padding point (the callers' last one) itself
            coords, labels = coords[:, :-1], labels[:, :-1]
        fast = fast if mask is None and aux is not None else None
        if fast is not None:
            feed, decoder = dict(aux), fast
        elif self.family == "sam2" and "high_res_feats_0" not in feed:
            feed.update(_high_res_nchw(aux, self.image_size // 16))
        if fast is None and self.has_mask_input:
            feed["mask_input"] = (mask if mask is not None
                                  else np.zeros((1, 1, self.low_res_size, self.low_res_size), np.float32))
            feed["has_mask_input"] = np.array([0.0 if mask is None else 1.0], np.float32)
        if self.has_orig_im_size:
            feed["orig_im_size"] = np.asarray(original_size, np.float32)
        step = len(coords) if self.batched else 1
        ious, lows = [], []
        for i in range(0, len(coords), max(1, step)):
            iou, low = decoder.run(self.decoder_outputs, {
                **feed, "point_coords": np.ascontiguousarray(coords[i:i + step], np.float32),
                "point_labels": np.ascontiguousarray(labels[i:i + step], np.float32)})
            ious.append(iou)
            lows.append(low)
        if len(ious) == 1:
            return ious[0].astype(np.float32, copy=False), lows[0].astype(np.float32, copy=False)
        return np.concatenate(ious).astype(np.float32, copy=False), np.concatenate(lows).astype(np.float32, copy=False)

    def _select(self, iou: np.ndarray, low: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """`MaskDecoder.forward`'s choice among all mask tokens: 1..3 with multimask, else 0; SAM 2 with
        `dynamic_multimask_via_stability`: token 0 when its stability score reaches `thresh`, else the
        best-scored of 1..3 (sam2 `MaskDecoder._dynamic_multimask_via_stability`)."""
        if self.masks_per_query == 1:
            return iou, low
        if self.masks_per_query == 3:  # samexporter SAM 2: multimask tokens only; one mask = the best-scored
            if multimask:
                return iou, low
            best = np.argmax(iou, axis=-1)
            rows = np.arange(len(low))
            return iou[rows, best][:, None], low[rows, best][:, None]
        if multimask:
            return iou[:, 1:], low[:, 1:]
        rule = self.single_mask_rule if self.family == "sam2" else {}
        if not rule.get("dynamic_multimask_via_stability"):
            return iou[:, :1], low[:, :1]
        flat = low[:, 0].reshape(len(low), -1)
        inter = (flat > rule["delta"]).sum(-1).astype(np.float32)
        union = (flat > -rule["delta"]).sum(-1).astype(np.float32)
        stable = np.where(union > 0, inter / np.maximum(union, 1), 1.0) >= rule["thresh"]
        best = 1 + np.argmax(iou[:, 1:], axis=-1)
        pick = np.where(stable, 0, best)
        rows = np.arange(len(low))
        return iou[rows, pick][:, None], low[rows, pick][:, None]

    def _check(self, embedding: Embedding) -> None:
        if embedding.model_id != self.model_id:
            raise ValueError(f"embedding of {embedding.model_id!r} given to engine {self.model_id!r}")

    def decode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """Q = `prompts.n_queries` queries (points shared by all, one query per box); see `DecodeResult`.

        Prompts in image px, SAM convention; masks (Q, M, H, W) bool in the original frame, scores (Q, M),
        logits (Q, M, 256, 256). Like `SamPredictor`: points alone get SAM's padding point, a box is two
        corner points (labels 2, 3) after the points.
        """
        self._check(embedding)
        self.require(*required_capabilities(prompts, multimask))
        mask = None
        if prompts.mask_input is not None:
            mask = np.asarray(prompts.mask_input, np.float32).reshape(1, 1, self.low_res_size, self.low_res_size)
        size = embedding.original_size
        q = prompts.n_queries
        pts = self._coords(prompts.points, size)
        lab = prompts.labels.astype(np.float32)
        if self.family == "sam2":  # SAM2ImagePredictor: box corners first, then the points, then padding
            corners = self._coords(prompts.boxes.reshape(-1, 2), size).reshape(-1, 2, 2)
            if not len(corners):
                corners = np.zeros((1, 0, 2), np.float32)
            coords = np.concatenate([corners, np.broadcast_to(pts, (q, *pts.shape)), np.zeros((q, 1, 2))], axis=1)
            labels = np.concatenate([np.tile([[2.0, 3.0]], (q, 1))[:, :corners.shape[1]],
                                     np.broadcast_to(lab, (q, len(lab))), -np.ones((q, 1))], axis=1)
        elif len(prompts.boxes):
            corners = self.transform.apply_boxes(prompts.boxes.astype(np.float64), size).reshape(-1, 2, 2)
            coords = np.concatenate([np.broadcast_to(pts, (q, *pts.shape)), corners], axis=1)
            labels = np.concatenate([np.broadcast_to(lab, (q, len(lab))), np.tile([[2.0, 3.0]], (q, 1))], axis=1)
        else:
            coords = np.concatenate([pts, [[0.0, 0.0]]])[None]
            labels = np.concatenate([lab, [-1.0]])[None]
        iou, low = self._select(*self._run(embedding.features, coords.astype(np.float32),
                                           labels.astype(np.float32), mask, size, embedding.aux), multimask)
        masks = _masks(low, embedding.input_size, size, self.image_size, self.family == "sam2")
        if self.logits_clamp:
            low = np.clip(low, -self.logits_clamp, self.logits_clamp)
        return DecodeResult(masks=masks, scores=iou, logits=low)

    async def adecode(self, embedding: Embedding, prompts: Prompts, multimask: bool = False) -> DecodeResult:
        """`decode` from an event loop, on a worker thread (ONNX Runtime and OpenCV release the GIL)."""
        return await asyncio.to_thread(self.decode, embedding, prompts, multimask)

    def upscale_logits(self, low_res: torch.Tensor, embedding: Embedding) -> torch.Tensor:
        """(B, M, 256, 256) float32 low-res logits → (B, M, H, W) float32 logits in the embedded image's
        frame, by this pair's family rule (used by the automatic mask generator)."""
        return upscale(low_res, embedding.input_size, embedding.original_size, self.image_size,
                       self.family == "sam2")

    def _coords(self, xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(..., 2) image px (SAM convention) → the model's input frame: `ResizeLongestSide.apply_coords`
        (SAM 1, float64 as `SamPredictor`) or x / W * S, y / H * S in float32 (SAM 2, `SAM2Transforms`)."""
        if self.family == "sam2":
            h, w = size
            return np.asarray(xy, np.float32) / np.array([w, h], np.float32) * np.float32(self.image_size)
        return self.transform.apply_coords(np.asarray(xy).astype(np.float64), size)

    def decode_point_batch(self, embedding: Embedding, points, labels,
                           multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """B independent point queries, low-res outputs only (for the automatic mask generator).

        `points`: (B, N, 2) float (x, y) image px, SAM convention; `labels`: (B, N) int (1 include,
        0 exclude); numpy or torch. Returns (low-res logits (B, M, 256, 256) float32, scores (B, M)
        float32) as CPU torch tensors, row b equal to `decode(embedding, Prompts(points[b], labels[b]),
        multimask)`'s `logits[0]` / `scores[0]`. M = 3 with `multimask`, else 1.
        """
        self._check(embedding)
        self.require(*(["points", "multimask"] if multimask else ["points"]))
        pts, lab = point_batch_arrays(points, labels)
        pts = pts.astype(np.float64)  # float32 prompts, as `Prompts` holds them
        b, m = pts.shape[0], (3 if multimask else 1)
        if b == 0:
            return torch.zeros((0, m, self.low_res_size, self.low_res_size)), torch.zeros((0, m))
        coords = self._coords(pts, embedding.original_size)
        coords = np.concatenate([coords, np.zeros((b, 1, 2))], axis=1).astype(np.float32)  # padding point
        lab = np.concatenate([lab.astype(np.float32), -np.ones((b, 1), np.float32)], axis=1)
        ious, lows = [], []
        for i in range(0, b, self.point_batch_rows):
            iou, low = self._select(*self._run(embedding.features, coords[i:i + self.point_batch_rows],
                                               lab[i:i + self.point_batch_rows], None,
                                               embedding.original_size, embedding.aux), multimask)
            ious.append(iou)
            lows.append(low)
        return torch.from_numpy(np.concatenate(lows)), torch.from_numpy(np.concatenate(ious))

    def generate(self, embedding: Embedding, options: AmgOptions = AmgOptions(),
                 image: np.ndarray | None = None) -> list[dict]:
        """Automatic masks (see `Engine.generate`): Meta's generator over `decode_point_batch`, records of the
        SAM 1 engine's form. `image` (H, W, 3) uint8 only for crops."""
        from samgis.engine.amg import generate_with_point_batches

        self._check(embedding)
        self.require("automatic")
        return generate_with_point_batches(self, embedding, options, image)

    def find(self, embedding: Embedding, concept: ConceptPrompt, score_threshold: float = 0.5) -> FoundInstances:
        """Concept prompts need a model with the "text"/"exemplars" capabilities: this one refuses (422)."""
        require(self.describe(), concept.needs())
        raise AssertionError("unreachable: this model has no concept capability")

    def describe(self) -> ModelCard:
        m = self.manifest or {}
        quantized = m.get("quantization") if m else ".quant." in self.encoder_path.name  # samexporter naming
        return ModelCard(
            model_id=self.model_id,
            backend=self.backend,
            device=self.device,
            dtype="uint8" if quantized else "fp32",
            input_size=self.image_size,
            embedding_version=self.embedding_version,
            capabilities=self.capabilities,
            resize="square" if self.family == "sam2" else "longest-side",
            low_res_size=self.low_res_size,
            checkpoint=self.location,
            extra={
                "family": self.family,
                "format": "samgis" if self.manifest else "samexporter",
                "encoder": self.encoder_path.name,
                "decoder": self.decoder_path.name,
                "providers": list(self.providers),
                "opset": m.get("opset"),
                "quantization": m.get("quantization"),
                "exported_model_id": m.get("model_id"),
                **({"single_mask": "the best-scored multimask output (this decoder has no single-mask token)"}
                   if self.masks_per_query == 3 else {}),
            },
        )


def _samexporter_pair(folder: Path, quantized: bool) -> tuple[Path, Path]:
    """The one `<name>.encoder[.quant].onnx` and one `<name>.decoder[.quant].onnx` in `folder`."""
    tag = ".quant" if quantized else ""
    found = {}
    for role in ("encoder", "decoder"):
        files = sorted(folder.glob(f"*.{role}{tag}.onnx"))
        if len(files) != 1:
            listed = ", ".join(f.name for f in sorted(folder.glob("*.onnx"))) or "no .onnx files"
            raise FileNotFoundError(
                f"{folder}: expected {MANIFEST_NAME}, or exactly one *.{role}{tag}.onnx (samexporter naming); "
                f"found {len(files)} ({listed})")
        found[role] = files[0]
    return found["encoder"], found["decoder"]


def load(spec: ModelSpec, weights: Path, device: str = "auto", precision: str = "auto") -> OnnxEngine:
    """The backend entry point (`samgis.engine.backends`): the pair at `weights` (see `load_pair`) served as
    `spec.model_id`. `spec.config`: None, or a dict of `load_pair` options (`threads`, `quantized`,
    `verify`). A pair runs in the precision it was exported in: `precision` must be auto (or name it)."""
    options = dict(spec.config or {})
    engine = load_pair(weights, device, model_id=spec.model_id, **options)
    if precision not in ("auto", engine.describe().dtype):
        raise ValueError(f"{spec.model_id} is an ONNX pair exported as {engine.describe().dtype}; it cannot run "
                         f"in {precision} (use precision auto, or export the pair again)")
    return engine


def load_pair(path: Path | str, device: str = "auto", *, threads: int = 0, model_id: str | None = None,
              quantized: bool = False, verify: bool = True, spinning: bool = False) -> OnnxEngine:
    """An `OnnxEngine` for the pair at `path`.

    `path`: a folder with `manifest.json` (our export; files checked against its hashes when `verify`),
    a folder holding a samexporter pair (`*.encoder.onnx` + `*.decoder.onnx`; `quantized` picks the
    `.quant.onnx` files), or a samexporter `*.encoder*.onnx` file (the decoder is the one beside it).
    `model_id`: defaults to the manifest's, or the encoder's name without `.encoder*.onnx`.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        manifest = read_manifest(path, verify=verify)
        if manifest.get("family") not in ("sam1", "sam2"):
            raise ValueError(f"{path}: family {manifest.get('family')!r} is not served by the onnx backend yet")
        return OnnxEngine(path / manifest["encoder"]["file"], path / manifest["decoder"]["file"],
                          model_id or manifest["model_id"], manifest=manifest, device=device, threads=threads,
                          spinning=spinning, location=str(path))
    if path.is_dir():
        encoder, decoder = _samexporter_pair(path, quantized)
    elif path.is_file() and ".encoder" in path.name:
        encoder = path
        decoder = _samexporter_pair(path.parent, ".quant." in path.name)[1]
    elif path.exists():
        raise ValueError(f"{path}: give a folder with {MANIFEST_NAME} or a samexporter pair, "
                         "or a samexporter *.encoder.onnx file")
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return OnnxEngine(encoder, decoder, model_id or encoder.name.split(".encoder")[0], device=device,
                      threads=threads, spinning=spinning, location=str(path))

"""Export a loaded torch SAM model to an ONNX encoder/decoder pair with a manifest.

SAM 1 pair (`family: "sam1"`, segment-anything `Sam`: vit_b/l/h, and any model of the same layout):

- `encoder.onnx`: input `image` (1, 3, S, S) float32 — the image resized so its longest side is S
  (`ResizeLongestSide`, bilinear), normalised `(x - pixel_mean) / pixel_std` per channel (0..255 scale),
  zero-padded at the bottom and right to S × S (what `Sam.preprocess` makes); output `image_embeddings`
  (1, 256, S/16, S/16) float32. S = the model's input size (1024).
- `decoder.onnx`: the inputs of Meta's ONNX decoder (`segment_anything.utils.onnx.SamOnnxModel`, as
  written by segment-anything's `scripts/export_onnx_model.py`): `image_embeddings` (1, 256, 64, 64),
  `point_coords` (Q, N, 2) float32 in the model's input frame (after `ResizeLongestSide.apply_coords`),
  `point_labels` (Q, N) float32 (1 include, 0 exclude, 2/3 box corners, -1 padding point),
  `mask_input` (1, 1, 256, 256) float32 logits and `has_mask_input` (1,) float32 — minus
  `orig_im_size`: Meta's in-graph upscaling freezes the crop size of the traced example (its
  `int(prepadded_size[0])`), so ours returns only low-res outputs and the engine upscales them:
  `iou_predictions` (Q, 4) and `low_res_masks` (Q, 4, 256, 256) float32 logits, all four mask tokens
  (index 0 = the single-mask output, 1..3 = the multimask outputs, as `MaskDecoder` orders them). The
  query axis Q and the point axis N are dynamic, so many queries decode in one run.
- `manifest.json`: see `samgis.engine.backends.onnx.manifest`.

`quantize="uint8"`: ONNX Runtime dynamic quantization (`quantize_dynamic`, QUInt8 weights) of both files.

SAM 2 / 2.1 pair (`family: "sam2"`, the `sam2` package's `SAM2Base`), `export_sam2`:

- `encoder.onnx`: input `image` (1, 3, S, S) float32 — the image resized to S × S (aspect ratio not kept:
  `SAM2Transforms`' torchvision `Resize((S, S))`, bilinear, antialiased, on 0..1 floats) and normalised
  with ImageNet mean/std; outputs `image_embed` (1, 256, 64, 64), `high_res_feats_0` (1, 32, 256, 256),
  `high_res_feats_1` (1, 64, 128, 128): what `SAM2ImagePredictor.set_image` keeps (no-memory embedding
  added, `conv_s0` / `conv_s1` applied). Output names as samexporter's `export_sam2.py`.
- `decoder.onnx`: inputs `image_embed`, `high_res_feats_0`, `high_res_feats_1`, `point_coords` (Q, N, 2)
  in the S × S frame (boxes as corner points labelled 2, 3 *before* the points; the caller appends SAM's
  padding point), `point_labels`, `mask_input`, `has_mask_input`; outputs `iou_predictions` (Q, 4) and
  `low_res_masks` (Q, 4, 256, 256), all four mask tokens; the engine applies SAM 2's single-mask rule
  (`dynamic_multimask_via_stability`, parameters in the manifest).
- the cached-constant decoder (`samgis.engine.backends.sam2.decoder`, same math regrouped), two more files
  named in the manifest's `fast_decoder`: `prepare.onnx` (the three encoder outputs → the per-window
  constants `src` (1, HW, 256), `k0`, `v0`, `q0` (1, heads, HW, d) and the high-res features in the folded
  upscaling's token layout `s0` (4·HW, 128), `s1` (HW, 256); run once per window) and `decoder_fast.onnx`
  (those six + `point_coords`, `point_labels` → `iou_predictions`, `low_res_masks` as `decoder.onnx`,
  without a mask input). The engine uses it for clicks without a mask input; `decoder.onnx` stays for
  the rest and for other runtimes.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel

from samgis.engine.backends.onnx.manifest import MANIFEST_NAME, read_manifest, write_manifest
from samgis.engine.backends.sam1.decoder import (ImageConsts, image_tensors, position_tensors, raster_masks,
                                                 run_transformer, tokens_layout_s0, tokens_layout_s1)
from samgis.engine.backends.sam2 import decoder as sam2_fast

DEFAULT_OPSET = 17
QUANTIZATIONS = (None, "uint8")
SAM1_PREPROCESSING = "sam1-rls-normalized-padded-nchw"
"""Encoder input rule of our SAM 1 pairs (see the module docstring); part of the embedding version."""


class Sam1Decoder(SamOnnxModel):
    """Meta's `SamOnnxModel` prompt embedding and mask decoder, returning low-res outputs only.

    `with_mask_input=False` drops the `mask_input` / `has_mask_input` inputs (the dense prompt is then
    always the "no mask" embedding); `single_mask=True` keeps Meta's `select_masks` choice of one mask
    (a decoder as samexporter's `--return-single-mask` writes). Both exist to make pairs that lack a
    capability; `export_sam1` writes the full decoder by default.
    """

    def __init__(self, model: Sam, with_mask_input: bool = True, single_mask: bool = False):
        super().__init__(model, return_single_mask=single_mask)
        self.with_mask_input = with_mask_input

    def _decode(self, image_embeddings, point_coords, point_labels, dense):
        masks, scores = self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=self._embed_points(point_coords, point_labels),
            dense_prompt_embeddings=dense,
        )
        if self.return_single_mask:
            masks, scores = self.select_masks(masks, scores, point_coords.shape[1])
        return scores, masks

    @torch.no_grad()
    def forward(self, image_embeddings, point_coords, point_labels, mask_input=None, has_mask_input=None):
        if self.with_mask_input:
            dense = self._embed_masks(mask_input, has_mask_input)
        else:
            dense = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self._decode(image_embeddings, point_coords, point_labels, dense)


def _export(module: torch.nn.Module, args: dict, path: Path, output_names: list[str], opset: int,
            dynamic_axes: dict | None = None) -> None:
    """TorchScript-based `torch.onnx.export` (`dynamo=False`, the exporter samexporter and Meta's scripts
    use); it traces, so the module must not branch on tensor values."""
    # no_grad: traced with autograd on, every activation of the pass is kept (vit_b export: 9.4 → 4.1 GB peak).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about the legacy exporter
        torch.onnx.export(
            module.eval(), tuple(args.values()), str(path), dynamo=False, export_params=True,
            opset_version=opset, do_constant_folding=True, input_names=list(args),
            output_names=output_names, dynamic_axes=dynamic_axes,
        )


def export_sam1_files(model: Sam, out_dir: Path, opset: int = DEFAULT_OPSET, *, with_mask_input: bool = True,
                      single_mask: bool = False, encoder: bool = True) -> dict:
    """Write `encoder.onnx` (unless `encoder=False`) and `decoder.onnx` of a SAM 1 model into `out_dir`;
    the manifest fields that describe them are returned (no `files`: `write_manifest` adds those)."""
    model = model.eval().cpu()
    size = model.image_encoder.img_size
    grid = model.prompt_encoder.image_embedding_size
    dim = model.prompt_encoder.embed_dim
    low = [4 * g for g in grid]
    if encoder:
        _export(model.image_encoder, {"image": torch.zeros(1, 3, size, size)}, out_dir / "encoder.onnx",
                ["image_embeddings"], opset)
    args = {
        "image_embeddings": torch.randn(1, dim, *grid),
        "point_coords": torch.rand(2, 3, 2) * size,
        "point_labels": torch.tensor([[1.0, 0.0, -1.0], [1.0, 2.0, 3.0]]),
    }
    if with_mask_input:
        args["mask_input"] = torch.randn(1, 1, *low)
        args["has_mask_input"] = torch.tensor([1.0])
    queries = {0: "queries", 1: "num_points"}
    _export(Sam1Decoder(model, with_mask_input, single_mask), args, out_dir / "decoder.onnx",
            ["iou_predictions", "low_res_masks"], opset,
            dynamic_axes={"point_coords": queries, "point_labels": queries})
    return {
        "family": "sam1",
        "opset": opset,
        "input": {
            "size": size,
            "resize": "longest_side",  # segment_anything ResizeLongestSide (PIL bilinear on uint8)
            "layout": "NCHW",
            "dtype": "float32",
            "normalize": {"mean": model.pixel_mean.flatten().tolist(), "std": model.pixel_std.flatten().tolist(),
                          "scale": 1.0},
            "pad": "bottom_right_zeros_after_normalize",
            "preprocessing": SAM1_PREPROCESSING,
        },
        "low_res_size": low[0],
        "mask_threshold": float(model.mask_threshold),
        "encoder": {"file": "encoder.onnx", "inputs": ["image"], "outputs": ["image_embeddings"]},
        "decoder": {
            "file": "decoder.onnx",
            "inputs": list(args),
            "outputs": ["iou_predictions", "low_res_masks"],
            "mask_tokens": "single" if single_mask else "all",  # all: 0 = single-mask, 1..3 = multimask
            "coords": "model input frame: ResizeLongestSide.apply_coords of image px, SAM convention",
        },
        "capabilities": {"points": True, "boxes": True, "mask_input": with_mask_input,
                         "multimask": not single_mask, "automatic": not single_mask, "text": False,
                         "exemplars": False},
    }


class Sam2Encoder(torch.nn.Module):
    """`SAM2ImagePredictor.set_image`'s features of a normalised (1, 3, S, S) image, as three outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        size = model.image_size
        self.sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]

    def forward(self, image):
        _, feats, _, _ = self.model._prepare_backbone_features(self.model.forward_image(image))
        if self.model.directly_add_no_mem_embed:
            feats[-1] = feats[-1] + self.model.no_mem_embed
        out = [f.permute(1, 2, 0).reshape(1, -1, *hw) for f, hw in zip(feats, self.sizes)]
        return out[2], out[0], out[1]  # image_embed, high_res_feats_0, high_res_feats_1


class Sam2Decoder(torch.nn.Module):
    """SAM 2's prompt encoder and mask decoder on precomputed features; all four mask tokens out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input):
        pe = self.model.sam_prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=False)  # the caller adds the padding point
        dense = has_mask_input * pe.mask_downscaling(mask_input) + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(
            1, -1, 1, 1)
        masks, iou, _, _ = self.model.sam_mask_decoder.predict_masks(
            image_embeddings=image_embed, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=True, high_res_features=[high_res_feats_0, high_res_feats_1])
        return iou, masks


FAST_CONSTS = ("src", "k0", "v0", "q0", "s0", "s1")
"""Outputs of `prepare.onnx`, inputs of `decoder_fast.onnx` (with `point_coords`, `point_labels`)."""


class Sam2Prepare(torch.nn.Module):
    """The encoder's three outputs → the per-window constants of `Sam2FastDecoder` (`FAST_CONSTS`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.pos = position_tensors(model.sam_prompt_encoder, model.sam_mask_decoder.transformer)

    @torch.no_grad()
    def forward(self, image_embed, high_res_feats_0, high_res_feats_1):
        c = image_tensors(self.model.sam_prompt_encoder, self.model.sam_mask_decoder.transformer, image_embed,
                          self.pos)
        return c.src, c.k0, c.v0, c.q0, tokens_layout_s0(high_res_feats_0), tokens_layout_s1(high_res_feats_1)


class Sam2FastDecoder(torch.nn.Module):
    """`Sam2Decoder` without a mask input, from `Sam2Prepare`'s constants: the sam2 backend's cached-constant
    decoder (`samgis.engine.backends.sam2.decoder.decode_masks` before its mask choice), with the folded
    upscaling run on all queries at once (no chunks: tracing needs no `out=`). All four mask tokens out."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.pos = position_tensors(model.sam_prompt_encoder, model.sam_mask_decoder.transformer)

    @torch.no_grad()
    def forward(self, src, k0, v0, q0, s0, s1, point_coords, point_labels):
        dec = self.model.sam_mask_decoder
        sparse = self.model.sam_prompt_encoder._embed_points(point_coords, point_labels, pad=False)
        b = sparse.shape[0]
        s = 1 if dec.pred_obj_scores else 0
        tokens = ([dec.obj_score_token.weight] if s else []) + [dec.iou_token.weight, dec.mask_tokens.weight]
        out_tokens = torch.cat(tokens, dim=0)
        point_embedding = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        hs, keys = run_transformer(dec.transformer, ImageConsts(k0=k0, v0=v0, q0=q0, src=src), self.pos,
                                   point_embedding)
        iou = dec.iou_prediction_head(hs[:, s, :])
        hyper_in = torch.stack([dec.output_hypernetworks_mlps[i](hs[:, s + 1 + i, :])
                                for i in range(dec.num_mask_tokens)], dim=1)      # (B, 4, o2)
        conv1, norm, act1, conv2, act2 = dec.output_upscaling
        c, o1, o2 = keys.shape[-1], conv1.out_channels, conv2.out_channels
        w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * o1)
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(o1, 4 * o2)
        x = torch.matmul(keys, w1) + (conv1.bias.repeat(4) + s1)                 # (B, HW, [a b o1])
        n = x.shape[1]
        x = act1(torch.nn.functional.layer_norm(x.view(b, n, 4, o1), (o1,), norm.weight, norm.bias, norm.eps))
        x = torch.matmul(x.view(b, 4 * n, o1), w2) + (conv2.bias.repeat(4) + s0)  # (B, 4·HW, [a2 b2 o2])
        x = act2(x).view(b, 16 * n, o2)
        masks = torch.matmul(x, hyper_in.transpose(1, 2))                        # (B, 16·HW, 4)
        h, w = self.model.sam_prompt_encoder.image_embedding_size
        return iou, raster_masks(masks, (h, w))


def export_sam2_files(model, out_dir: Path, opset: int = DEFAULT_OPSET) -> dict:
    """Write `encoder.onnx` and `decoder.onnx` of a `sam2` `SAM2Base` into `out_dir`; manifest fields back."""
    model = model.eval().cpu()
    size = model.image_size
    with torch.no_grad():
        embed, f0, f1 = Sam2Encoder(model)(torch.zeros(1, 3, size, size))
    _export(Sam2Encoder(model), {"image": torch.zeros(1, 3, size, size)}, out_dir / "encoder.onnx",
            ["image_embed", "high_res_feats_0", "high_res_feats_1"], opset)
    low = 4 * embed.shape[-1]
    args = {
        "image_embed": torch.randn_like(embed), "high_res_feats_0": torch.randn_like(f0),
        "high_res_feats_1": torch.randn_like(f1),
        "point_coords": torch.rand(2, 3, 2) * size,
        "point_labels": torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, -1.0]]),
        "mask_input": torch.randn(1, 1, low, low), "has_mask_input": torch.tensor([1.0]),
    }
    queries = {0: "queries", 1: "num_points"}
    _export(Sam2Decoder(model), args, out_dir / "decoder.onnx", ["iou_predictions", "low_res_masks"], opset,
            dynamic_axes={"point_coords": queries, "point_labels": queries})
    fast = None
    if sam2_fast.foldable(model):
        feats = {k: args[k] for k in ("image_embed", "high_res_feats_0", "high_res_feats_1")}
        _export(Sam2Prepare(model), feats, out_dir / "prepare.onnx", list(FAST_CONSTS), opset)
        with torch.no_grad():
            consts = dict(zip(FAST_CONSTS, Sam2Prepare(model)(*feats.values())))
        fast_args = {**consts, "point_coords": args["point_coords"], "point_labels": args["point_labels"]}
        _export(Sam2FastDecoder(model), fast_args, out_dir / "decoder_fast.onnx",
                ["iou_predictions", "low_res_masks"], opset,
                dynamic_axes={"point_coords": queries, "point_labels": queries})
        fast = {"prepare": "prepare.onnx", "file": "decoder_fast.onnx", "consts": list(FAST_CONSTS),
                "inputs": list(fast_args), "outputs": ["iou_predictions", "low_res_masks"], "mask_input": False}
    dec = model.sam_mask_decoder
    return {
        "family": "sam2",
        "opset": opset,
        "input": {
            "size": size,
            "resize": "square",  # torchvision Resize((S, S)), bilinear, antialias, on ToTensor's 0..1 floats
            "layout": "NCHW",
            "dtype": "float32",
            "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1 / 255},
            "pad": None,
            "preprocessing": "sam2-square-imagenet-nchw",
        },
        "low_res_size": low,
        "mask_threshold": 0.0,
        "logits_clamp": 32.0,  # SAM2ImagePredictor clamps the low-res logits it returns
        "encoder": {"file": "encoder.onnx", "inputs": ["image"],
                    "outputs": ["image_embed", "high_res_feats_0", "high_res_feats_1"]},
        "decoder": {
            "file": "decoder.onnx",
            "inputs": list(args),
            "outputs": ["iou_predictions", "low_res_masks"],
            "mask_tokens": "all",
            "single_mask_rule": {"dynamic_multimask_via_stability": bool(dec.dynamic_multimask_via_stability),
                                 "delta": float(dec.dynamic_multimask_stability_delta),
                                 "thresh": float(dec.dynamic_multimask_stability_thresh)},
            "coords": "S x S frame: x / W * S, y / H * S of image px; boxes before points; padding point last",
        },
        **({"fast_decoder": fast, "extra_files": [fast["prepare"], fast["file"]]} if fast else {}),
        # automatic masks of SAM 2 come from SAM2AutomaticMaskGenerator (the sam2 backend), not from here
        "capabilities": {"points": True, "boxes": True, "mask_input": True, "multimask": True,
                         "automatic": False, "text": False, "exemplars": False},
    }


def export_sam2(model, model_id: str, out_dir: Path | str, opset: int = DEFAULT_OPSET,
                quantize: str | None = None, *, checkpoint: str | None = None) -> Path:
    """Export a `sam2` `SAM2Base` (SAM 2 / 2.1) to `out_dir`; see the module docstring. Returns the manifest."""
    return _export_pair(lambda d: export_sam2_files(model, d, opset), model_id, out_dir, quantize, checkpoint)


def _export_pair(write_files, model_id: str, out_dir: Path | str, quantize: str | None,
                 checkpoint: str | None) -> Path:
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, not {quantize!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        fp32_dir = Path(tmp) if quantize else out_dir
        fields = write_files(fp32_dir)
        manifest = {
            "model_id": model_id,
            "backend": "onnx",
            **fields,
            "quantization": None,
            "source": {"exporter": "samgis", "checkpoint": checkpoint, "torch": torch.__version__,
                       "onnx_exporter": "torch.onnx.export(dynamo=False)", "python": platform.python_version()},
            "export_seconds": round(time.perf_counter() - t0, 1),
        }
        path = write_manifest(fp32_dir, manifest)
        if quantize:
            path = quantize_pair(fp32_dir, out_dir, quantize)
    return path


def quantize_file(src: Path, dst: Path) -> None:
    """ONNX Runtime dynamic quantization: QUInt8 weights, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs advice ("consider pre-processing") and skipped integer tensors on the root logger.
    quiet = _DropRecordsFrom("onnxruntime")
    logging.getLogger().addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8, per_channel=False, reduce_range=False)
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropRecordsFrom(logging.Filter):
    """Drops log records emitted from source files under a path containing `part`, at WARNING or below."""

    def __init__(self, part: str):
        super().__init__()
        self.part = part

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or self.part not in record.pathname


def quantize_pair(src_dir: Path, out_dir: Path, quantize: str = "uint8") -> Path:
    """A quantized copy of the verified pair in `src_dir` written to `out_dir`; its manifest's path."""
    if quantize != "uint8":
        raise ValueError(f"quantize must be 'uint8', not {quantize!r}")
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    manifest = read_manifest(src_dir)
    if manifest.get("quantization"):
        raise ValueError(f"{src_dir} is already quantized ({manifest['quantization']})")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for name in [manifest[role]["file"] for role in ("encoder", "decoder")] + manifest.get("extra_files", []):
        quantize_file(src_dir / name, out_dir / name)
    manifest = {k: v for k, v in manifest.items() if k not in ("files", "format")}
    manifest["quantization"] = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QUInt8",
                                "per_channel": False,
                                "applied_to": ["encoder", "decoder", *manifest.get("extra_files", [])],
                                "seconds": round(time.perf_counter() - t0, 1)}
    return write_manifest(out_dir, manifest)


def export_sam1(model: Sam, model_id: str, out_dir: Path | str, opset: int = DEFAULT_OPSET,
                quantize: str | None = None, *, checkpoint: str | None = None, with_mask_input: bool = True,
                single_mask: bool = False) -> Path:
    """Export a segment-anything `Sam` to `out_dir` (encoder.onnx, decoder.onnx, manifest.json).

    `quantize="uint8"` writes the dynamically quantized pair instead of the fp32 one. Returns the path of
    `manifest.json`. `with_mask_input` / `single_mask`: see `Sam1Decoder` (defaults: the full decoder).
    """
    return _export_pair(lambda d: export_sam1_files(model, d, opset, with_mask_input=with_mask_input,
                                                    single_mask=single_mask),
                        model_id, out_dir, quantize, checkpoint)


def export_onnx_command(model_id: str, checkpoint: str | None, out_dir: str | Path,
                        quantize: str | None = None, *, opset: int = DEFAULT_OPSET,
                        allow_download: bool = True, cache_dir: Path | None = None) -> Path:
    """`samgis export-onnx MODEL -o DIR [--quantize uint8] [--checkpoint PATH]`: load a registered SAM 1 or
    SAM 2.1 model's weights (the usual resolution: explicit checkpoint, cache dir, download) and export it."""
    from samgis.engine.registry import get_model_spec
    from samgis.engine.weights import resolve_weights

    spec = get_model_spec(model_id)
    if spec.backend not in ("sam1", "sam2"):
        raise ValueError(f"export-onnx exports sam1 and sam2 models; {model_id} is {spec.backend!r}")
    path = resolve_weights(spec, checkpoint, cache_dir=cache_dir, allow_download=allow_download)
    if quantize not in QUANTIZATIONS:  # before minutes of loading and exporting
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, not {quantize!r}")
    if spec.backend == "sam2":
        from samgis.engine.backends.sam2 import load_model

        return export_sam2(load_model(model_id, spec.config, path), model_id, out_dir, opset, quantize,
                           checkpoint=str(path))
    from samgis.engine.backends.sam1 import load_sam

    return export_sam1(load_sam(spec, path), model_id, out_dir, opset, quantize, checkpoint=str(path))


__all__ = ["export_sam1", "export_sam1_files", "export_sam2", "export_sam2_files", "export_onnx_command", "quantize_pair", "Sam1Decoder",
           "MANIFEST_NAME"]

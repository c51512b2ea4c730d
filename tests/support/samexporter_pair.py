"""Write an ONNX pair in samexporter's SAM 1 format, to test that the onnx backend serves such pairs.

The format, as samexporter writes it (github.com/vietanhdev/samexporter, `samexporter/export_encoder.py`
with `--use-preprocess`, `samexporter/export_decoder.py` with `--return-single-mask`, file names from
`convert_all_meta_sam.sh`): `<name>.encoder.onnx` takes `input_image` (H, W, 3) float32 RGB 0..255, the
image already resized to longest side 1024, and normalises, transposes and pads it in the graph, returning
`image_embeddings`; `<name>.decoder.onnx` is Meta's `SamOnnxModel` with inputs `image_embeddings`,
`point_coords`, `point_labels`, `mask_input`, `has_mask_input`, `orig_im_size` and outputs `masks`,
`iou_predictions`, `low_res_masks`, the point axis dynamic.

SAM 2 (`samexporter/export_sam2.py`, `sam2_onnx.py`): the encoder takes `image` (1, 3, 1024, 1024) and
returns `high_res_feats_0`, `high_res_feats_1`, `image_embed`; the decoder takes those, `point_coords`,
`point_labels`, `mask_input`, `has_mask_input`, appends the padding point itself and returns `masks`
(the three multimask low-res logits, clamped to ±32) and `iou_predictions`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel


class PreprocessingEncoder(torch.nn.Module):
    """(H, W, 3) float32 RGB 0..255, longest side = the model's input size → image embeddings."""

    def __init__(self, sam: Sam):
        super().__init__()
        self.image_encoder = sam.image_encoder
        self.register_buffer("mean", sam.pixel_mean.flatten().clone())
        self.register_buffer("std", sam.pixel_std.flatten().clone())

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = ((input_image - self.mean) / self.std).permute(2, 0, 1)
        size = self.image_encoder.img_size
        x = torch.nn.functional.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))
        return self.image_encoder(x[None])


def write_samexporter_pair(sam: Sam, folder: Path, name: str, opset: int = 17) -> tuple[Path, Path]:
    """`folder/<name>.encoder.onnx` and `folder/<name>.decoder.onnx` of `sam` (single-mask decoder)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder, decoder = folder / f"{name}.encoder.onnx", folder / f"{name}.decoder.onnx"
    size = sam.image_encoder.img_size
    dec_inputs = {
        "image_embeddings": torch.randn(1, 256, size // 16, size // 16),
        "point_coords": torch.randint(0, size, (1, 5, 2)).float(),
        "point_labels": torch.randint(0, 4, (1, 5)).float(),
        "mask_input": torch.randn(1, 1, size // 4, size // 4),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(PreprocessingEncoder(sam).eval(), (torch.rand(size, size * 3 // 4, 3) * 255,),
                          str(encoder), dynamo=False, opset_version=opset, input_names=["input_image"],
                          output_names=["image_embeddings"],
                          dynamic_axes={"input_image": {0: "image_height", 1: "image_width"}})
        torch.onnx.export(SamOnnxModel(sam, return_single_mask=True).eval(), tuple(dec_inputs.values()),
                          str(decoder), dynamo=False, opset_version=opset, input_names=list(dec_inputs),
                          output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    return encoder, decoder


class _Sam2EncoderOutputs(torch.nn.Module):
    """samexporter's SAM 2 encoder outputs, in its order: high_res_feats_0, high_res_feats_1, image_embed."""

    def __init__(self, model):
        super().__init__()
        from samgis.engine.backends.onnx.export import Sam2Encoder

        self.encoder = Sam2Encoder(model)

    def forward(self, image):
        embed, f0, f1 = self.encoder(image)
        return f0, f1, embed


class _Sam2MultimaskDecoder(torch.nn.Module):
    """samexporter's SAM 2 decoder (`export_sam2.py`, multimask_output=True): appends the padding point,
    decodes one query against its own features (repeat_image=False), returns the multimask tokens' logits
    clamped to ±32 (`masks`) and their scores (`iou_predictions`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
                has_mask_input):
        pe = self.model.sam_prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        dense = has_mask_input * pe.mask_downscaling(mask_input) + (1 - has_mask_input) * pe.no_mask_embed.weight.reshape(
            1, -1, 1, 1)
        masks, iou, _, _ = self.model.sam_mask_decoder.predict_masks(
            image_embeddings=image_embed, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=False, high_res_features=[high_res_feats_0, high_res_feats_1])
        return torch.clamp(masks[:, 1:], -32.0, 32.0), iou[:, 1:]


def write_samexporter_sam2_pair(model, folder: Path, name: str, opset: int = 17) -> tuple[Path, Path]:
    """`folder/<name>.encoder.onnx` (input `image` (1, 3, S, S); outputs high_res_feats_0, high_res_feats_1,
    image_embed) and `folder/<name>.decoder.onnx` of a `sam2` model in samexporter's SAM 2 format."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder, decoder = folder / f"{name}.encoder.onnx", folder / f"{name}.decoder.onnx"
    size = model.image_size
    image = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        f0, f1, embed = _Sam2EncoderOutputs(model)(image)
    inputs = {"image_embed": embed, "high_res_feats_0": f0, "high_res_feats_1": f1,
              "point_coords": torch.rand(1, 2, 2) * size, "point_labels": torch.tensor([[1.0, 0.0]]),
              "mask_input": torch.zeros(1, 1, size // 4, size // 4), "has_mask_input": torch.tensor([0.0])}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Sam2EncoderOutputs(model).eval(), (image,), str(encoder), dynamo=False,
                          opset_version=opset, input_names=["image"],
                          output_names=["high_res_feats_0", "high_res_feats_1", "image_embed"])
        torch.onnx.export(_Sam2MultimaskDecoder(model).eval(), tuple(inputs.values()), str(decoder), dynamo=False,
                          opset_version=opset, input_names=list(inputs), output_names=["masks", "iou_predictions"],
                          dynamic_axes={"point_coords": {0: "num_labels", 1: "num_points"},
                                        "point_labels": {0: "num_labels", 1: "num_points"},
                                        "mask_input": {0: "num_labels"}, "has_mask_input": {0: "num_labels"}})
    return encoder, decoder

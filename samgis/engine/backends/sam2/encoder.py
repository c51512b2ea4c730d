"""SAM 2's image encoder pass for the image predictor, without the work whose results it throws away.

`encode(model, x, cache)` returns what `SAM2ImagePredictor.set_image` keeps — `forward_image`,
`_prepare_backbone_features`, `+ no_mem_embed` — with the model's own modules and the same ops in the same
order, so the features are bitwise the package's (tests/test_backend_sam2.py compares them with atol 0).
Left out or done once (sam2 1.1.0, `sam2/modeling/backbones/hieradet.py`, `image_encoder.py`):

- `Hiera._get_pos_embed` resizes the positional embedding (bicubic, to the 256² token grid) and tiles the
  window embedding on every pass: constant per model and input size, so it is computed once and cached;
- `FpnNeck.forward` computes a sine positional encoding per level (`vision_pos_enc`, a repeat of a cached
  tensor: ~85 MB copied per 1024² image), used only by SAM 2's video memory attention: not computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _pos_embed(trunk, hw: tuple[int, int], cache: dict) -> torch.Tensor:
    """`trunk._get_pos_embed(hw)`, computed once per (size, dtype, device) and kept in `cache`."""
    key = (tuple(hw), trunk.pos_embed.dtype, trunk.pos_embed.device)
    if key not in cache:
        cache[key] = trunk._get_pos_embed(hw)
    return cache[key]


def _trunk(trunk, x: torch.Tensor, cache: dict) -> list[torch.Tensor]:
    """`Hiera.forward` with the cached positional embedding."""
    x = trunk.patch_embed(x)
    x = x + _pos_embed(trunk, x.shape[1:3], cache)
    outputs = []
    for i, blk in enumerate(trunk.blocks):
        x = blk(x)
        if i == trunk.stage_ends[-1] or (i in trunk.stage_ends and trunk.return_interm_layers):
            outputs.append(x.permute(0, 3, 1, 2))
    return outputs


def _neck(neck, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """`FpnNeck.forward`'s features, without its positional encodings."""
    out: list[torch.Tensor | None] = [None] * len(neck.convs)
    prev = None
    n = len(neck.convs) - 1
    for i in range(n, -1, -1):
        lateral = neck.convs[n - i](xs[i])
        if i in neck.fpn_top_down_levels and prev is not None:
            top_down = F.interpolate(prev.to(dtype=torch.float32), scale_factor=2.0, mode=neck.fpn_interp_model,
                                     align_corners=None if neck.fpn_interp_model == "nearest" else False,
                                     antialias=False)
            prev = lateral + top_down
            if neck.fuse_type == "avg":
                prev /= 2
        else:
            prev = lateral
        out[i] = prev
    return out


def encode(model, x: torch.Tensor, cache: dict) -> list[torch.Tensor]:
    """Preprocessed images (1, 3, S, S) → the predictor's features as NCHW tensors, highest resolution first:
    [(1, 32, S/4, S/4), (1, 64, S/8, S/8), (1, 256, S/16, S/16)] for SAM 2.1 (the first two through the
    decoder's `conv_s0` / `conv_s1`, the last with `no_mem_embed` added). `cache`: a dict kept per model."""
    enc = model.image_encoder
    features = _neck(enc.neck, _trunk(enc.trunk, x, cache))
    if enc.scalp > 0:
        features = features[: -enc.scalp]
    if model.use_high_res_features_in_sam:
        features[0] = model.sam_mask_decoder.conv_s0(features[0])
        features[1] = model.sam_mask_decoder.conv_s1(features[1])
    features = features[-model.num_feature_levels:]
    if model.directly_add_no_mem_embed:
        features[-1] = features[-1] + model.no_mem_embed.reshape(1, -1, 1, 1)
    return features

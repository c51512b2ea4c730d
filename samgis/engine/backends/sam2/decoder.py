"""SAM 2's mask decoder with the prompt-independent work done once per window or once per model.

SAM 2's `TwoWayTransformer` is SAM 1's (same blocks, same attention layout), so the SAM 1 backend's cached
constants apply unchanged (`samgis.engine.backends.sam1.decoder`: layer 0's image-side projections and the
image tokens per window, the positional projections per model). What SAM 2 adds is handled here:

- the object-score token before the IoU token (`pred_obj_scores`); its logits are not used by the image
  predictor and are not computed;
- the high-resolution features added inside the output upscaling (`use_high_res_features`): they are kept
  per window in the token layout of the folded upscaling (`tokens_layout_s0` / `_s1`), so each decoder pass
  adds them chunk by chunk inside the cache instead of running two transposed convolutions in NCHW;
- the IoU head's sigmoid and the dynamic single-mask fallback, both taken from the package's own modules.

The math follows `sam2.modeling.sam.mask_decoder.MaskDecoder.forward` (sam2 1.1.0), regrouping sums only:
results match it to float rounding (tests/test_backend_sam2.py holds the engine to `SAM2ImagePredictor`).
Used only with the no-mask dense embedding (a mask input changes layer 0's image side).
"""

from __future__ import annotations

import torch

from samgis.engine.backends.sam1.decoder import (ImageConsts, PositionConsts, _upscaling_is_foldable,
                                                 positional_consts_of, prepare_of, raster_masks, run_transformer,
                                                 upscale_masks)


def foldable(model) -> bool:
    """True when `model`'s decoder has the layout `decode_masks` computes: SAM 2.1's (high-res features on,
    kernel-2 stride-2 upscaling)."""
    dec = model.sam_mask_decoder
    return bool(dec.use_high_res_features) and _upscaling_is_foldable(dec)


def positional_consts(model) -> PositionConsts:
    """The per-model constants of `model` (a `SAM2Base`); compute once per model, on the torch thread."""
    return positional_consts_of(model.sam_prompt_encoder, model.sam_mask_decoder.transformer)


def prepare(model, image_embed: torch.Tensor, pos: PositionConsts) -> ImageConsts:
    """The per-window constants of `image_embed` (1, 256, 64, 64) float32, `no_mem_embed` already added."""
    return prepare_of(model.sam_prompt_encoder, model.sam_mask_decoder.transformer, image_embed, pos)


@torch.inference_mode()
def decode_masks(model, consts: ImageConsts, pos: PositionConsts, s0: torch.Tensor, s1: torch.Tensor,
                 sparse: torch.Tensor, multimask: bool,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res mask logits (B, M, 4H, 4W) and IoU predictions (B, M), float32, for sparse prompt embeddings
    (B, T, C) from `sam_prompt_encoder` — `sam_mask_decoder(...)[:2]` with the no-mask dense embedding,
    `repeat_image` over the B rows. M = 3 with `multimask`, else 1 (the decoder's own dynamic fallback).

    `consts` from `prepare`, `pos` from `positional_consts`; `s0` (4·HW, 4·32) and `s1` (HW, 4·64) the
    high-res features in the upscaling's token layout; `size` = (H, W) of the embedding grid (64, 64).
    """
    dec = model.sam_mask_decoder
    b = sparse.shape[0]
    s = 1 if dec.pred_obj_scores else 0
    out_tokens = [dec.obj_score_token.weight] if s else []
    out_tokens = torch.cat([*out_tokens, dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    point_embedding = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
    hs, keys = run_transformer(dec.transformer, consts, pos, point_embedding)

    iou = dec.iou_prediction_head(hs[:, s, :])                               # (B, 4)
    if multimask:
        picks = list(range(1, dec.num_mask_tokens))
    elif dec.dynamic_multimask_via_stability:
        picks = list(range(dec.num_mask_tokens))  # token 0, and the best multimask one when 0 is unstable
    else:
        picks = [0]
    hyper_in = torch.stack([dec.output_hypernetworks_mlps[i](hs[:, s + 1 + i, :]) for i in picks], dim=1)
    masks = upscale_masks(dec, keys, hyper_in, size, add1=s1, add0=s0, raster=False)  # (B, 16·HW, len(picks))
    if multimask:
        return raster_masks(masks, size), iou[:, 1:]
    if dec.dynamic_multimask_via_stability:
        masks, iou = _dynamic_single_mask(dec, masks, iou)
        return raster_masks(masks, size), iou
    return raster_masks(masks, size), iou[:, 0:1]


def _dynamic_single_mask(dec, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`MaskDecoder._dynamic_multimask_via_stability` (sam2 1.1.0) on token-order logits: `masks`
    (B, P, 4) of all four mask tokens, `iou` (B, 4). Token 0's mask when its stability score (pixels above
    +delta over pixels above -delta, 1 when none is) reaches the threshold, else the multimask token with
    the best predicted IoU. Stability counts pixels, so pixel order does not matter: only the chosen mask
    is put in raster order afterwards. Returns (B, P, 1) logits and (B, 1) scores."""
    delta, thresh = dec.dynamic_multimask_stability_delta, dec.dynamic_multimask_stability_thresh
    single = masks[..., 0]
    area_i = torch.sum(single > delta, dim=-1).float()
    area_u = torch.sum(single > -delta, dim=-1).float()
    stable = torch.where(area_u > 0, area_i / area_u, 1.0) >= thresh
    pick = torch.where(stable, 0, 1 + torch.argmax(iou[:, 1:], dim=-1))
    rows = torch.arange(masks.shape[0], device=masks.device)
    return masks[rows, :, pick].unsqueeze(-1), iou[rows, pick].unsqueeze(-1)

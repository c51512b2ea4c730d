"""SAM's ViT image encoder run with PyTorch's fused attention (`scaled_dot_product_attention`).

`encode(encoder, x)` computes what `ImageEncoderViT.forward` computes, block for block with the model's own
weights, but each attention goes through SDPA with the decomposed relative-position term as an additive
mask instead of materialising logits, their biased copy and the softmax separately. Heads of the global
blocks (4096 × 4096 per head) are taken a few at a time so the working set stays bounded. The model itself
is not modified, so `SamPredictor` on the same model remains an independent reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import (
    Attention,
    Block,
    ImageEncoderViT,
    get_rel_pos,
    window_partition,
    window_unpartition,
)

MASK_BYTES = 256 << 20
"""Upper bound on one chunk's relative-position mask (heads × tokens² × 4 bytes)."""


def relative_position_mask(attn: Attention, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Additive attention mask (N, HW, HW) of the decomposed relative positions for queries `q` (N, HW, d)
    of an (H, W) = `size` token grid — the term `add_decomposed_rel_pos` adds to the logits."""
    h, w = size
    rh = get_rel_pos(h, h, attn.rel_pos_h)                       # (H, H, d)
    rw = get_rel_pos(w, w, attn.rel_pos_w)                       # (W, W, d)
    rq = q.reshape(q.shape[0], h, w, -1)
    rel_h = torch.einsum("nhwc,hkc->nhwk", rq, rh)               # (N, H, W, H)
    rel_w = torch.einsum("nhwc,wkc->nhwk", rq, rw)               # (N, H, W, W)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(q.shape[0], h * w, h * w)


def attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """`Attention.forward` through SDPA: x (B, H, W, C) tokens → (B, H, W, C)."""
    b, h, w, _ = x.shape
    n = h * w
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.reshape(3, b * attn.num_heads, n, -1).unbind(0)   # (B·heads, HW, d)
    if not attn.use_rel_pos:
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
    else:
        step = max(1, MASK_BYTES // (n * n * 4))
        out = torch.cat([
            F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step], scale=attn.scale,
                                           attn_mask=relative_position_mask(attn, q[i:i + step], (h, w)))
            for i in range(0, q.shape[0], step)])
    out = out.view(b, attn.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)


def block(blk: Block, x: torch.Tensor) -> torch.Tensor:
    """`Block.forward` with `attention`: x (B, H, W, C) → (B, H, W, C)."""
    shortcut = x
    x = blk.norm1(x)
    if blk.window_size > 0:
        h, w = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, blk.window_size)
    x = attention(blk.attn, x)
    if blk.window_size > 0:
        x = window_unpartition(x, blk.window_size, pad_hw, (h, w))
    x = shortcut + x
    return x + blk.mlp(blk.norm2(x))


def encode(encoder: ImageEncoderViT, x: torch.Tensor) -> torch.Tensor:
    """`ImageEncoderViT.forward`: preprocessed images (B, 3, S, S) → features (B, 256, S/16, S/16)."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for blk in encoder.blocks:
        x = block(blk, x)
    return encoder.neck(x.permute(0, 3, 1, 2))

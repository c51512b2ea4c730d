"""SAM's mask decoder with the prompt-independent work done once per image or once per model.

In the first `TwoWayAttentionBlock` the image side of both cross-attentions only sees the image embedding
(plus the constant "no mask" dense embedding) and the positional encoding, so three of the decoder's ten
4096-token projections (token→image keys and values, image→token queries) and the image tokens themselves
are the same for every click on a window: `ImageConsts`. Later layers attend over `keys + pos`; the
positional half of those logits is a projection of the model's constant positional encoding
(`PositionConsts`), so `keys + pos` is never formed. `decode_masks` runs the rest with the model's own
weights, regrouping sums only (results match `MaskDecoder.predict_masks` + `TwoWayTransformer.forward` to
float rounding). Used only when no mask input is given (a mask input changes the dense embedding).

Eager float32 passes on the CPU run the large matrix products through oneDNN (`_LINEAR`, see there) and
gather the masks into raster order; traced passes (ONNX export) record the plain torch ops. Both give the
same results to float rounding (tests/test_decoder_kernels.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.transformer import Attention

# oneDNN's matmul (`mkldnn::_linear_pointwise`, the op PyTorch's inductor emits for CPU linears): on this
# project's AMD reference CPU, MKL's SGEMM (what `torch.mm` / `bmm` / `addmm` call) does not take its AVX-512
# path and runs the decoder's 4096-token products at about half oneDNN's speed. Eager CPU float32 only; a
# traced pass (ONNX export) keeps the plain ops.
_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


def _onednn(x: torch.Tensor) -> bool:
    """True when `x`'s products go through oneDNN (`_LINEAR`): eager, CPU, float32."""
    return _LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32 \
        and not torch.jit.is_tracing()


def _rows(fn, b: int) -> torch.Tensor:
    """`fn(i)` (M, N) for i < b, stacked to (b, M, N) (no copy for b = 1)."""
    return fn(0).unsqueeze(0) if b == 1 else torch.stack([fn(i) for i in range(b)])


def baddbmm_nt(add: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`add + a @ wᵀ` per batch row: `add` (B, M, N), `a` (B, M, K), `w` (B, N, K) → (B, M, N) float."""
    if _onednn(a):  # (oneDNN's binary post-op measured slower than a separate addition)
        return _rows(lambda i: _LINEAR(a[i], w[i], None, "none", [], ""), a.shape[0]).add_(add)
    return torch.baddbmm(add, a, w.transpose(1, 2))


def bmm(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """`a @ m` per batch row: `a` (B, M, K), `m` (B, K, N) → (B, M, N) float."""
    if _onednn(a):
        return _rows(lambda i: _LINEAR(a[i], m[i].t(), None, "none", [], ""), a.shape[0])
    return a @ m


@dataclass(frozen=True)
class ImageConsts:
    """Per-image tensors, batch 1, on the model device.

    `k0`, `v0`: (1, heads, HW, c) keys/values of layer 0's token→image attention;
    `q0`: (1, heads, HW, c) queries of layer 0's image→token attention. HW = 4096, c = 256 / 2 / heads.
    `src`: (1, HW, C) image tokens (features + no-mask embedding), C = 256.
    """

    k0: torch.Tensor
    v0: torch.Tensor
    q0: torch.Tensor
    src: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.k0, self.v0, self.q0, self.src))


@dataclass(frozen=True)
class PositionConsts:
    """Per-model tensors on the model device.

    `tokens`: (1, HW, C) the decoder's dense positional encoding as tokens.
    `t2i_k`, `i2t_q`: per layer after the first, (heads, c, HW) = W_h · posᵀ for the token→image key
    projection, W_h · posᵀ + b_h for the image→token query projection (its bias folded in); `final_k`: the
    same as `t2i_k` for the final token→image keys.
    """

    tokens: torch.Tensor
    t2i_k: tuple[torch.Tensor, ...]
    i2t_q: tuple[torch.Tensor, ...]
    final_k: torch.Tensor


def _pos_projection(linear: torch.nn.Linear, heads: int, pos: torch.Tensor, bias: bool = False) -> torch.Tensor:
    """(heads, d, HW): each head's weight applied to the positional tokens (1, HW, C), plus its bias if
    `bias`."""
    w, b = _per_head(linear, heads)
    out = w @ pos[0].T
    return (out + b.unsqueeze(-1) if bias else out).contiguous()


def positional_consts(model: Sam) -> PositionConsts:
    """`PositionConsts` of `model` (compute once per model)."""
    return positional_consts_of(model.prompt_encoder, model.mask_decoder.transformer)


@torch.inference_mode()
def positional_consts_of(prompt_encoder, tf) -> PositionConsts:
    """`PositionConsts` of a prompt encoder (its `get_dense_pe`) and a `TwoWayTransformer` `tf`: SAM 1's
    modules or SAM 2's (`sam2.modeling.sam`), which have the same layout."""
    return position_tensors(prompt_encoder, tf)


def position_tensors(prompt_encoder, tf) -> PositionConsts:
    """`positional_consts_of` outside inference mode (for tracing)."""
    pos = prompt_encoder.get_dense_pe().flatten(2).permute(0, 2, 1).contiguous()
    later = tf.layers[1:]
    return PositionConsts(
        tokens=pos,
        t2i_k=tuple(_pos_projection(l.cross_attn_token_to_image.k_proj, l.cross_attn_token_to_image.num_heads, pos)
                    for l in later),
        i2t_q=tuple(_pos_projection(l.cross_attn_image_to_token.q_proj, l.cross_attn_image_to_token.num_heads, pos,
                                    bias=True) for l in later),
        final_k=_pos_projection(tf.final_attn_token_to_image.k_proj, tf.final_attn_token_to_image.num_heads, pos),
    )


def image_tokens(prompt_encoder, features: torch.Tensor) -> torch.Tensor:
    """Image features (1, C, H, W) + the prompt encoder's no-mask dense embedding, as tokens (1, HW, C)."""
    no_mask = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
    return (features + no_mask).flatten(2).permute(0, 2, 1)


def mlp(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`block(x)` for a transformer block's MLP (SAM 1's `MLPBlock`, SAM 2's `MLP`), x (B, T, C). With
    oneDNN (`_onednn`) and ReLU activations, its linears run there with the ReLU fused (for the few prompt
    tokens, ~0.7× the time of `F.linear` + ReLU on the reference CPU)."""
    layers = [block.lin1, block.lin2] if hasattr(block, "lin1") else list(getattr(block, "layers", ()))
    if not (_onednn(x) and layers and isinstance(getattr(block, "act", None), torch.nn.ReLU)
            and not getattr(block, "sigmoid_output", False)):
        return block(x)
    y = x.reshape(-1, x.shape[-1])
    for i, layer in enumerate(layers):
        y = _LINEAR(y, layer.weight, layer.bias, "relu" if i < len(layers) - 1 else "none", [], "")
    return y.view(*x.shape[:-1], y.shape[-1])


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, c = x.shape
    return x.transpose(1, 2).reshape(b, n, h * c)


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`Attention.forward` after the q/k/v projections: inputs (B, heads, N, c), broadcast over B. The
    1/√c scale goes on the few queries rather than on the logits."""
    logits = (q * (1 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    weights = torch.softmax(logits, dim=-1)
    return attn.out_proj(_merge(weights @ v))


def _project(linear: torch.nn.Linear, x: torch.Tensor, heads: int) -> torch.Tensor:
    return _split(linear(x), heads)


def _per_head(linear: torch.nn.Linear, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A projection C → I as per-head weights (heads, d, C) and biases (heads, d), d = I / heads."""
    out_dim, in_dim = linear.weight.shape
    return linear.weight.view(heads, out_dim // heads, in_dim), linear.bias.view(heads, out_dim // heads)


def tokens_to_image(attn: Attention, q_in: torch.Tensor, keys: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """`attn(q=q_in, k=keys + pos, v=keys)` for few queries (B, T, C) over many image tokens (B, N, C);
    `k_pos` (H, d, N) is the key projection of the positional tokens (`PositionConsts`).

    The key and value projections are folded onto the T queries instead of being applied to the N image
    tokens: q·((x + p)W_k + b_k) = (qW_k)·x + q·(W_k p) + q·b_k, and since softmax weights sum to one,
    w·(xW_v + b_v) = (w·x)W_v + b_v. Same result, about a third of the arithmetic. The term q·b_k is the
    same for every image token, which the softmax over them ignores, so it is left out; the 1/√d scale
    goes on the T queries.
    """
    h = attn.num_heads
    b, t, c = q_in.shape
    n = keys.shape[1]
    q = _project(attn.q_proj, q_in, h)                       # (B, H, T, d)
    q = q * (1 / math.sqrt(q.shape[-1]))
    wk, _ = _per_head(attn.k_proj, h)                        # (H, d, C)
    wv, bv = _per_head(attn.v_proj, h)
    qk = q @ wk                                              # (B, H, T, C)
    pos = q @ k_pos                                          # (B, H, T, N)
    logits = baddbmm_nt(pos.view(b, h * t, n), qk.reshape(b, h * t, c), keys)
    weights = torch.softmax(logits.view(b, h, t, n), dim=-1)
    wx = bmm(weights.reshape(b, h * t, n), keys).view(b, h, t, c)
    out = wx @ wv.transpose(1, 2) + bv.unsqueeze(1)          # (B, H, T, d)
    return attn.out_proj(_merge(out))


def image_to_tokens(attn: Attention, residual: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, *,
                    keys: torch.Tensor | None = None, q_pos: torch.Tensor | None = None,
                    q_heads: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
    """`residual + attn(q=keys + pos, k=k_in, v=v_in)` for many image tokens attending to few tokens
    (B, T, C); `residual` (B|1, N, C), overwritten with the result when `inplace` (it must then be (B, N, C)
    and not needed afterwards; `keys` may be the same tensor).

    The queries come either as image tokens `keys` (B, N, C) with `q_pos` (H, d, N), the query projection
    of the positional tokens with the projection's bias, or already projected as `q_heads` (1, H, N, d). The query projection is
    folded onto the T keys (x·W_q·k = x·(W_q·k)) and the output projection and its bias onto the T values
    (Σ_h w_h (v_h W_o,h + b_o / H), the weights of each head summing to one over T), so nothing of size
    N × C is projected and the residual sum happens inside the last matrix product. The logits are laid
    out (B, H, T, N) so that the softmax runs over a middle dimension: PyTorch's CPU softmax over a last
    dimension as short as T is an order of magnitude slower.
    """
    h = attn.num_heads
    b, t, c = k_in.shape
    k = _project(attn.k_proj, k_in, h)                       # (B, H, T, d)
    v = _project(attn.v_proj, v_in, h)
    d = k.shape[-1]
    k = k * (1 / math.sqrt(d))                               # the logits' scale, on the T keys
    if q_heads is None:
        n = keys.shape[1]
        wq, _ = _per_head(attn.q_proj, h)                    # (H, d, C)
        a = k @ wq                                           # (B, H, T, C)
        pos_and_bias = k @ q_pos                             # (B, H, T, N)
        logits = baddbmm_nt(pos_and_bias.view(b, h * t, n), a.reshape(b, h * t, c), keys)
    else:
        n = q_heads.shape[2]
        logits = k @ q_heads.transpose(2, 3)                 # (B, H, T, N)
    weights = torch.softmax(logits.view(b, h, t, n), dim=2)
    wo = attn.out_proj.weight.view(c, h, d).permute(1, 2, 0)  # (H, d, C)
    vo = (v @ wo).reshape(b, h * t, c) + attn.out_proj.bias / h  # (B, H*T, C)
    weights_t = weights.reshape(b, h * t, n).transpose(1, 2)                  # (B, N, H*T)
    if _onednn(vo):
        update = bmm(weights_t, vo)
        return residual.add_(update) if inplace else update.add_(residual)
    if inplace:
        return residual.baddbmm_(weights_t, vo)
    return torch.baddbmm(residual, weights_t, vo)


# Image tokens per chunk of `upscale_masks`: the chunk's intermediates (16 · rows · 32 floats, 2 MB at 1024
# rows) stay in the CPU's cache instead of making four round trips to memory. 1024 measured fastest on 2 cores.
UPSCALE_ROWS = 1024


def upscale_masks(dec, keys: torch.Tensor, hyper_in: torch.Tensor, size: tuple[int, int],
                  rows: int = UPSCALE_ROWS, add1: torch.Tensor | None = None,
                  add0: torch.Tensor | None = None, raster: bool = True) -> torch.Tensor:
    """`MaskDecoder`'s output upscaling and hypernetwork product, computed on tokens.

    `keys`: (B, HW, C) image tokens of an (H, W) = `size` grid; `hyper_in`: (B, M, C/8). Returns
    (B, M, 4H, 4W) mask logits. Both transposed convolutions have kernel = stride = 2, so each is a matrix
    product per input pixel whose four outputs are the 2 × 2 block under it; the pixels are put in raster
    order only once, for the M masks, instead of moving every channel (the convolutions' memory-format
    copies were half of the decoder's time on CPU). Runs `rows` image tokens at a time; every token's
    outputs depend on that token alone, so the result does not depend on `rows`.

    SAM 2's high-resolution features, in the token layout of `tokens_layout_s1` / `tokens_layout_s0`
    (batch 1): `add1` (HW, 4·C/4) is added to the first convolution's output before its norm, `add0`
    (4·HW, 4·C/8) to the second's before its activation (`sam2` `MaskDecoder.predict_masks`).
    `raster=False` returns the logits in token order, (B, 16·HW, M), for `raster_masks` to reorder later.
    """
    conv1, norm, act1, conv2, act2 = dec.output_upscaling
    b, n, c = keys.shape
    o1, o2 = conv1.out_channels, conv2.out_channels
    m = hyper_in.shape[1]
    w1 = conv1.weight.permute(0, 2, 3, 1).reshape(c, 4 * o1)                 # (C, [a b o1])
    w2 = conv2.weight.permute(0, 2, 3, 1).reshape(o1, 4 * o2)                # (o1, [a2 b2 o2])
    b1, b2 = conv1.bias.repeat(4), conv2.bias.repeat(4)
    hyper_t = hyper_in.transpose(1, 2)                                       # (B, o2, M)
    if _onednn(keys):
        masks = _upscale_onednn(keys, hyper_in, (w1, b1, norm, act1, w2, b2, act2), rows, add1, add0)
        return raster_masks(masks, size) if raster else masks
    masks = torch.empty((b, n * 16, m), dtype=keys.dtype, device=keys.device)  # (B, HW·4·4, M)
    for i in range(b):
        for j in range(0, n, rows):
            x = torch.addmm(b1, keys[i, j:j + rows], w1)                     # (r, [a b o1])
            if add1 is not None:
                x += add1[j:j + rows]
            x = act1(torch.nn.functional.layer_norm(x.view(-1, 4, o1), (o1,), norm.weight, norm.bias, norm.eps))
            x = torch.addmm(b2, x.view(-1, o1), w2)                          # (r·4, [a2 b2 o2])
            if add0 is not None:
                x += add0[4 * j:4 * (j + rows)]
            x = act2(x).view(-1, o2)                                         # (r·4·4, o2)
            torch.mm(x, hyper_t[i], out=masks[i, j * 16:(j + rows) * 16])
    return raster_masks(masks, size) if raster else masks


def _upscale_onednn(keys: torch.Tensor, hyper_in: torch.Tensor, layers, rows: int, add1: torch.Tensor | None,
                    add0: torch.Tensor | None) -> torch.Tensor:
    """`upscale_masks`' chunk loop with oneDNN products (`_LINEAR`): keys (B, HW, C), hyper_in (B, M, o2)
    → token-order logits (B, 16·HW, M)."""
    w1, b1, norm, act1, w2, b2, act2 = layers
    o1, o2 = norm.weight.shape[0], hyper_in.shape[2]
    w1t, w2t = w1.t(), w2.t()                                                # (out, in)
    fuse_gelu = isinstance(act2, torch.nn.GELU) and act2.approximate == "none"  # oneDNN's exact (erf) GELU
    out = []
    for i in range(keys.shape[0]):
        chunks = []
        for j in range(0, keys.shape[1], rows):
            x = keys[i, j:j + rows]
            x = _LINEAR(x, w1t, b1, "none", [], "")                           # (r, [a b o1])
            if add1 is not None:  # (oneDNN's binary post-op measured slower than this separate pass)
                x += add1[j:j + rows]
            x = act1(torch.nn.functional.layer_norm(x.view(-1, 4, o1), (o1,), norm.weight, norm.bias, norm.eps))
            x = x.view(-1, o1)
            if add0 is None and fuse_gelu:
                x = _LINEAR(x, w2t, b2, "gelu", [], "none")                   # (r·4, [a2 b2 o2])
            else:
                x = _LINEAR(x, w2t, b2, "none", [], "")
                if add0 is not None:
                    x += add0[4 * j:4 * (j + rows)]
                x = act2(x)
            chunks.append(_LINEAR(x.view(-1, o2), hyper_in[i], None, "none", [], ""))  # (r·16, M)
        out.append(torch.cat(chunks))
    return out[0].unsqueeze(0) if len(out) == 1 else torch.stack(out)


def raster_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Token-order logits (B, 16·HW, M) of `upscale_masks(raster=False)` for an (H, W) = `size` grid →
    (B, M, 4H, 4W) in raster order (eager: one row gather, plus a transposing copy when M > 1; traced: one
    permuted copy)."""
    b, _, m = masks.shape
    h, w = size
    if not torch.jit.is_tracing():  # a gather of whole rows: ~5× faster on CPU than the 8-d permuted copy
        rows = torch.index_select(masks, 1, _raster_order(size, masks.device))  # (B, 16·HW, M) in raster order
        return rows.permute(0, 2, 1).reshape(b, m, 4 * h, 4 * w)
    masks = masks.view(b, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)  # (B, M, i, a, a2, j, b, b2)
    return masks.reshape(b, m, 4 * h, 4 * w)


_RASTER_ORDER: dict = {}


def _raster_order(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(16·HW,) int64: the token-order row of each raster-order pixel of `raster_masks` (cached)."""
    key = (tuple(size), str(device))
    order = _RASTER_ORDER.get(key)
    if order is None:
        h, w = size
        order = torch.arange(16 * h * w, device=device).view(h, w, 2, 2, 2, 2).permute(0, 2, 4, 1, 3, 5)
        order = _RASTER_ORDER.setdefault(key, order.reshape(-1).contiguous())
    return order


def tokens_layout_s1(feat: torch.Tensor) -> torch.Tensor:
    """(1, O, 2H, 2W) → (HW, [a b O]) contiguous: the value at pixel (2i + a, 2j + b) on row i·W + j, the
    layout of the first upscaling convolution's output in `upscale_masks`. A pure permutation (exact)."""
    _, o, h2, w2 = feat.shape
    return feat[0].view(o, h2 // 2, 2, w2 // 2, 2).permute(1, 3, 2, 4, 0).reshape(h2 * w2 // 4, 4 * o)


def tokens_layout_s0(feat: torch.Tensor) -> torch.Tensor:
    """(1, O, 4H, 4W) → (4·HW, [a2 b2 O]) contiguous: the value at pixel (4i + 2a + a2, 4j + 2b + b2) on row
    (i·W + j)·4 + 2a + b, the layout of the second upscaling convolution's output in `upscale_masks`."""
    _, o, h4, w4 = feat.shape
    h, w = h4 // 4, w4 // 4
    return feat[0].view(o, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0).reshape(h * w * 4, 4 * o)


def nchw_from_s1(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `tokens_layout_s1` for an (H, W) token grid: (1, O, 2H, 2W) contiguous."""
    h, w = size
    o = tokens.shape[1] // 4
    return tokens.view(h, w, 2, 2, o).permute(4, 0, 2, 1, 3).reshape(1, o, 2 * h, 2 * w)


def nchw_from_s0(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `tokens_layout_s0` for an (H, W) token grid: (1, O, 4H, 4W) contiguous."""
    h, w = size
    o = tokens.shape[1] // 4
    return tokens.view(h, w, 2, 2, 2, 2, o).permute(6, 0, 2, 4, 1, 3, 5).reshape(1, o, 4 * h, 4 * w)


def _upscaling_is_foldable(dec) -> bool:
    """True for SAM's decoder layout: ConvTranspose(k=s=2) → LayerNorm2d → act → ConvTranspose(k=s=2) → act."""
    layers = list(dec.output_upscaling)
    if len(layers) != 5:
        return False
    convs = (layers[0], layers[3])
    return all(isinstance(cv, torch.nn.ConvTranspose2d) and cv.kernel_size == (2, 2) and cv.stride == (2, 2)
               and cv.padding == (0, 0) and cv.output_padding == (0, 0) and cv.groups == 1
               and cv.dilation == (1, 1) and cv.bias is not None for cv in convs) \
        and hasattr(layers[1], "eps") and layers[1].weight.shape == (convs[0].out_channels,)


def prepare(model: Sam, features: torch.Tensor, pos: PositionConsts) -> ImageConsts:
    """Precompute `ImageConsts` for image features (1, C, H, W); `pos` from `positional_consts`."""
    return prepare_of(model.prompt_encoder, model.mask_decoder.transformer, features, pos)


@torch.inference_mode()
def prepare_of(prompt_encoder, tf, features: torch.Tensor, pos: PositionConsts) -> ImageConsts:
    """`prepare` for a prompt encoder and `TwoWayTransformer` `tf` (SAM 1's or SAM 2's)."""
    return image_tensors(prompt_encoder, tf, features, pos)


def image_tensors(prompt_encoder, tf, features: torch.Tensor, pos: PositionConsts) -> ImageConsts:
    """`prepare_of` outside inference mode (for tracing)."""
    src = image_tokens(prompt_encoder, features).contiguous()
    layer0 = tf.layers[0]
    t2i, i2t = layer0.cross_attn_token_to_image, layer0.cross_attn_image_to_token
    keyed = src + pos.tokens
    return ImageConsts(
        k0=_project(t2i.k_proj, keyed, t2i.num_heads).contiguous(),
        v0=_project(t2i.v_proj, src, t2i.num_heads).contiguous(),
        q0=_project(i2t.q_proj, keyed, i2t.num_heads).contiguous(),
        src=src,
    )


def run_transformer(tf, consts: ImageConsts, pos: PositionConsts,
                    point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`TwoWayTransformer.forward` (SAM 1's or SAM 2's) with the no-mask dense embedding, from the cached
    constants: prompt tokens (B, T, C) → (queries (B, T, C) after the final attention and norm, image tokens
    (B, HW, C)). Call under inference mode."""
    # layer 0 (skip_first_layer_pe): the image side comes from ImageConsts
    l0 = tf.layers[0]
    queries = l0.norm1(l0.self_attn(q=point_embedding, k=point_embedding, v=point_embedding))
    q = queries + point_embedding
    t2i = l0.cross_attn_token_to_image
    queries = l0.norm2(queries + _attend(t2i, _project(t2i.q_proj, q, t2i.num_heads), consts.k0, consts.v0))
    queries = l0.norm3(queries + mlp(l0.mlp, queries))
    keys = l0.norm4(image_to_tokens(l0.cross_attn_image_to_token, consts.src, queries + point_embedding, queries,
                                    q_heads=consts.q0))  # (B, HW, C)

    for i, layer in enumerate(tf.layers[1:]):  # TwoWayAttentionBlock.forward with the folded cross-attentions
        queries = layer.norm1(queries + layer.self_attn(q=queries + point_embedding, k=queries + point_embedding,
                                                        v=queries))
        queries = layer.norm2(queries + tokens_to_image(layer.cross_attn_token_to_image,
                                                        queries + point_embedding, keys, pos.t2i_k[i]))
        queries = layer.norm3(queries + mlp(layer.mlp, queries))
        keys = layer.norm4(image_to_tokens(layer.cross_attn_image_to_token, keys, queries + point_embedding,
                                           queries, keys=keys, q_pos=pos.i2t_q[i], inplace=True))
    attn_out = tokens_to_image(tf.final_attn_token_to_image, queries + point_embedding, keys, pos.final_k)
    return tf.norm_final_attn(queries + attn_out), keys


@torch.inference_mode()
def decode_masks(model: Sam, consts: ImageConsts, pos: PositionConsts, sparse: torch.Tensor,
                 multimask: bool, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res mask logits (B, M, 4H, 4W) and IoU predictions (B, M) for sparse prompt embeddings
    (B, T, C) from `PromptEncoder` — the same outputs as `MaskDecoder.forward` with the no-mask dense
    embedding. `consts` from `prepare`, `pos` from `positional_consts`, `size` = (H, W) of the embedding grid."""
    dec = model.mask_decoder
    tf = dec.transformer
    b = sparse.shape[0]
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    point_embedding = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)

    hs, keys = run_transformer(tf, consts, pos, point_embedding)

    h, w = size
    picks = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
    hyper_in = torch.stack([dec.output_hypernetworks_mlps[i](hs[:, 1 + i, :]) for i in picks], dim=1)
    if _upscaling_is_foldable(dec):
        masks = upscale_masks(dec, keys, hyper_in, (h, w))
    else:
        upscaled = dec.output_upscaling(keys.transpose(1, 2).reshape(b, -1, h, w))
        bb, cc, hh, ww = upscaled.shape
        masks = (hyper_in @ upscaled.view(bb, cc, hh * ww)).view(bb, -1, hh, ww)
    iou = dec.iou_prediction_head(hs[:, 0, :])
    iou = iou[:, 1:] if multimask else iou[:, 0:1]
    return masks, iou

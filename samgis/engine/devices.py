"""Torch devices, precisions and state-dict loading for the torch backends."""

from __future__ import annotations

import contextlib

import torch


def pick_device(device: str = "auto") -> torch.device:
    """`auto` → CUDA when available, else CPU; an explicit CUDA device that is absent is a ValueError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return dev


def pick_precision(device: torch.device, precision: str = "auto", cuda_default: str = "fp16") -> str:
    """`auto` → `cuda_default` on CUDA, fp32 elsewhere; else fp32 / fp16 / bf16 as given (ValueError otherwise)."""
    if precision == "auto":
        precision = cuda_default if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be fp32, fp16 or bf16, not {precision!r}")
    return precision


def load_state(model: torch.nn.Module, state: dict, checkpoint, model_id: str, *,
               assign: bool = False) -> torch.nn.Module:
    """Load `state` into `model` exactly (every tensor's name and shape) and return it in eval mode; a
    ValueError naming `checkpoint` and `model_id` otherwise (another architecture's or size's weights).

    `assign`: the model takes the state's tensors themselves (`load_state_dict(assign=True)`) instead of copying
    them into its own. With a `torch.load(..., mmap=True)` state the weights then stay pages of the checkpoint
    file (clean page cache, which the kernel can drop and read back), so loading holds one copy of the weights,
    not two, provided the model was built without writing its own tensors. A tensor whose dtype or layout
    differs from the model's is converted first, as the copying load would (a copy of that tensor only)."""
    if assign:
        own = model.state_dict()
        state = {k: _like(v, own.get(k)) for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)[:300]
        raise ValueError(f"{checkpoint} does not match {model_id}: {first.strip()}") from None
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not match {model_id}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return model.eval()


def _like(value, own):
    """`value` in `own`'s dtype and contiguous (a copy only when it is not already); as is when the names or
    shapes differ (`load_state_dict` reports those)."""
    if not isinstance(value, torch.Tensor) or own is None or value.shape != own.shape:
        return value
    if value.dtype != own.dtype or not value.is_contiguous():
        return value.to(own.dtype).contiguous()
    return value


def autocast(device: torch.device, precision: str):
    """The context a torch backend runs its model in: none for "fp32", else torch's autocast to fp16 / bf16 on
    `device`'s type (`precision` as `pick_precision` returns it)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)

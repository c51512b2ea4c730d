"""Torch devices for the torch backends."""

from __future__ import annotations

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

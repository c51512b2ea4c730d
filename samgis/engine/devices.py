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

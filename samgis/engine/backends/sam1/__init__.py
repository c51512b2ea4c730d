"""`sam1` backend: Meta's `segment-anything` ViT-B/L/H models (fused encoder and decoder, same math)."""

from __future__ import annotations

from pathlib import Path

from samgis.engine.backends.sam1.engine import SamEngine, build_sam, load_sam
from samgis.engine.registry import ModelSpec

__all__ = ["SamEngine", "build_sam", "load", "load_sam"]


def load(spec: ModelSpec, weights: Path, device: str = "auto", precision: str = "auto") -> SamEngine:
    """`spec.config` (a `SamArch`) with the Meta-format state dict at `weights`."""
    return SamEngine.from_spec(spec, Path(weights), device=device, precision=precision)

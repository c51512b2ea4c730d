"""A model backend (`samgis.engine.backends`: `load(spec, weights, device, precision) -> Engine`) serving the
colour engine of tests/support/colour_engine.py, so command-line tests run the real model loading path
(`--model`, `--checkpoint`, `EngineRecipe`) without torch.

`spec.config`: a dict of `Capabilities` fields (e.g. {"text": True}); automatic masks are "regions". The
weights file is only checked to exist (by the loader), never read. Tests install it with
`monkeypatch.setitem(samgis.engine.backends.BACKENDS, NAME, __name__)`.
"""

from __future__ import annotations

from pathlib import Path

from samgis.engine.protocol import Capabilities
from tests.support.colour_engine import ColourRegionEngine

NAME = "test-colour"


def load(spec, weights: Path, device: str, precision: str) -> ColourRegionEngine:
    return ColourRegionEngine(model_id=spec.model_id, capabilities=Capabilities(**dict(spec.config or {})),
                              automatic="regions")

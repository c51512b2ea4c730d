"""SAM 2.1 backend (Meta's `sam2` package): `Sam2Engine`, `build_model`, `load` (the factory's entry point:
`load(spec, weights, device, precision)`), `load_engine` (by model id and config name), the four models in
`MODELS`.

Importing this package does not import `sam2` (or Hydra); building or loading a model does.
"""

from samgis.engine.backends.sam2.engine import (
    EMBEDDING_VERSION,
    Sam2Engine,
    Sam2Features,
    build_model,
    load,
    load_engine,
    load_model,
)
from samgis.engine.backends.sam2.models import MODELS, Sam2Model

__all__ = ["EMBEDDING_VERSION", "MODELS", "Sam2Engine", "Sam2Features", "Sam2Model", "build_model", "load",
           "load_engine", "load_model"]

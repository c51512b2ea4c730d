"""SAM 2.1 backend (Meta's `sam2` package): `Sam2Engine`, `build_model`, `load`, the four models in `MODELS`.

Importing this package imports neither torch nor `sam2` (the registry reads `MODELS` at start-up); the
engine names load `samgis.engine.backends.sam2.engine` on first use.
"""

from samgis.engine.backends.sam2.models import MODELS, Sam2Model

_ENGINE_NAMES = ("EMBEDDING_VERSION", "Sam2Engine", "Sam2Features", "build_model", "load", "load_engine",
                 "load_model")

__all__ = ["MODELS", "Sam2Model", *_ENGINE_NAMES]


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from samgis.engine.backends.sam2 import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

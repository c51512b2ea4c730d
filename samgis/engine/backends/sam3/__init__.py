"""SAM 3 backend (Meta's `sam3` package): `Sam3Engine`, `build_model`, `load`, the model table `MODELS`.

Importing this package imports neither torch nor `sam3` (the registry reads `MODELS` at start-up); the engine
names load `samgis.engine.backends.sam3.engine` on first use.
"""

from samgis.engine.backends.sam3.models import MODELS, Sam3Model

_ENGINE_NAMES = ("EMBEDDING_VERSION", "Sam3Engine", "Sam3Features", "bpe_vocab_path", "build_model",
                 "checkpoint_state", "feature_dtype", "load", "load_model")

__all__ = ["MODELS", "Sam3Model", *_ENGINE_NAMES]


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from samgis.engine.backends.sam3 import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

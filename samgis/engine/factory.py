"""`build_engine(settings)`: the one way to get a model (server, CLI, batch, Ray actors).

`engine_recipe(settings)` resolves the weights (maybe downloading them) and returns a small picklable
`EngineRecipe`; calling it builds the engine wherever it runs (a batch process, a Ray actor). The
backend named by the model's spec does the rest (`samgis.engine.backends`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from samgis.engine.backends import backend_module
from samgis.engine.protocol import Engine
from samgis.engine.registry import ModelSpec, get_model_spec, load_models_file


@dataclass(frozen=True)
class EngineRecipe:
    """Everything needed to build one engine in any process. `weights` must be readable at the same path
    wherever the engine is built."""

    spec: ModelSpec  # carried whole: workers need not know the registry (tests register their own models)
    weights: str
    device: str = "auto"
    precision: str = "auto"

    @property
    def model_key(self) -> str:
        """Names model and weights, for manifests: a job resumed with other weights starts over."""
        return f"{self.spec.model_id}:{Path(self.weights).name}"

    def __call__(self) -> Engine:
        return backend_module(self.spec.backend).load(self.spec, Path(self.weights), self.device, self.precision)


def engine_recipe(settings) -> EngineRecipe:
    """The recipe of `settings.model` (a `samgis.settings.Settings`): its spec and verified weights from
    `checkpoint`, else `AIP_STORAGE_URI` when it is a local path (Vertex AI), else the cache dir, else a
    download when allowed."""
    from samgis.engine.weights import resolve_weights, storage_checkpoint

    if settings.models_file:
        load_models_file(settings.models_file)
    spec = get_model_spec(settings.model)
    explicit = (settings.checkpoint or spec.extra.get("path")
                or storage_checkpoint(spec, os.environ.get("AIP_STORAGE_URI")))
    weights = resolve_weights(spec, explicit, cache_dir=settings.resolved_cache_dir() / "weights",
                              allow_download=settings.allow_download)
    return EngineRecipe(spec, str(Path(weights).resolve()), settings.device, settings.precision)


def set_engine_threads(engine: Engine, n: int | None) -> int | None:
    """Give `engine` n intra-op threads, when n is set and the backend takes a thread count (`set_threads`);
    returns the previous count (None when nothing changed)."""
    setter = getattr(engine, "set_threads", None)
    return setter(n) if n and callable(setter) else None


def build_engine(settings) -> Engine:
    """The engine `settings` name (see `engine_recipe`). Blocks while weights download and load."""
    return engine_recipe(settings)()

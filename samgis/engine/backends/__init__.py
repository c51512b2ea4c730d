"""Model backends: one package per family, each owning its pre/post-processing, automatic masks and threads.

A backend package exposes `load(spec, weights, device, precision) -> Engine`, where `weights` is the
path `samgis.engine.weights.resolve_weights` found (a file, or a folder for models of several files).
Only `samgis.engine.factory` calls it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {
    "sam1": "samgis.engine.backends.sam1",
    "sam2": "samgis.engine.backends.sam2",
    "sam3": "samgis.engine.backends.sam3",
    "onnx": "samgis.engine.backends.onnx",
}


def backend_module(name: str) -> ModuleType:
    """The package of backend `name` (imported on first use: torch-free callers never pay for it)."""
    try:
        path = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}") from None
    return importlib.import_module(path)

"""`onnx` backend: SAM encoder/decoder pairs (ours from `samgis export-onnx`, or samexporter's) on ONNX Runtime.

`load(spec, weights, device, precision)` (the backend entry point) and `load_pair(path, device)` →
`OnnxEngine`; `export_sam1` / `export_sam2` / `export_onnx_command` write pairs (import them from
`.export`: they need torch's ONNX exporter, the engine does not).
"""

from samgis.engine.backends.onnx.engine import OnnxEngine, load, load_pair, onnx_providers
from samgis.engine.backends.onnx.manifest import ManifestError

__all__ = ["OnnxEngine", "load", "load_pair", "onnx_providers", "ManifestError"]

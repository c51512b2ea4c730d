"""`onnx` backend: SAM encoder/decoder pairs (ours from `samgis export-onnx`, or samexporter's) on ONNX Runtime.

`load(path, device)` → `OnnxEngine`; `export_sam1(model, model_id, out_dir, quantize=None|"uint8")` and
`export_onnx_command(model_id, checkpoint, out_dir, quantize)` write pairs (import them from `.export`:
they need torch's ONNX exporter, the engine does not).
"""

from samgis.engine.backends.onnx.engine import MissingCapability, OnnxEngine, load, onnx_providers
from samgis.engine.backends.onnx.manifest import ManifestError

__all__ = ["OnnxEngine", "load", "onnx_providers", "MissingCapability", "ManifestError"]

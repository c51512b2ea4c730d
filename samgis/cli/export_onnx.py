"""`samgis export-onnx MODEL -o DIR [--quantize uint8]`: a SAM 1 or SAM 2.1 model as an ONNX encoder/decoder pair."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_export_onnx(args: argparse.Namespace) -> int:
    from samgis.engine.backends.onnx.export import export_onnx_command
    from samgis.errors import WeightsUnavailable

    cache_dir = None if args.cache_dir is None else Path(args.cache_dir) / "weights"
    try:
        manifest = export_onnx_command(args.model, args.checkpoint, args.out, args.quantize, opset=args.opset,
                                       allow_download=not args.no_download, cache_dir=cache_dir)
    except WeightsUnavailable as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except (KeyError, ValueError) as exc:
        print(f"export-onnx: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    print(f"{args.model}: wrote {', '.join(sorted(p.name for p in manifest.parent.iterdir()))} in {manifest.parent}")
    return 0


def add_export_onnx_parser(sub) -> None:
    x = sub.add_parser("export-onnx", help="export a SAM 1 or SAM 2.1 model to an ONNX encoder/decoder pair + manifest")
    x.add_argument("model", help="model id (see `samgis models`)")
    x.add_argument("-o", "--out", required=True, help="output folder (encoder.onnx, decoder.onnx, manifest.json)")
    x.add_argument("--quantize", choices=["uint8"], help="dynamic uint8 quantization of both files")
    x.add_argument("--checkpoint", help="weights file (else the cache dir, else download)")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--cache-dir", help="root of the weights cache ($SAMGIS_CACHE_DIR)")
    x.add_argument("--no-download", action="store_true", help="never download weights")
    x.set_defaults(func=run_export_onnx)

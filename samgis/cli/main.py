"""`samgis serve | predict | evaluate | batch | fetch-weights | models | export-onnx` — the command line.

One module per command; each adds its sub-parser. Commands import `samgis.cli.options`, never each other.
"""

from __future__ import annotations

import argparse
import sys

from samgis.cli.batch import add_batch_parser
from samgis.cli.export_onnx import add_export_onnx_parser
from samgis.cli.models import add_models_parsers
from samgis.cli.predict import add_predict_parsers
from samgis.cli.serve import add_serve_parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samgis", description="Segment Anything on web maps and images.")
    sub = p.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_models_parsers(sub)
    add_predict_parsers(sub)
    add_batch_parser(sub)
    add_export_onnx_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""`samgis models` and `samgis fetch-weights`: the registry and its official files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def run_fetch_weights(args: argparse.Namespace) -> int:
    from samgis.engine.registry import get_model_spec
    from samgis.engine.weights import default_cache_dir, download, verify_file
    from samgis.errors import WeightsUnavailable

    spec = get_model_spec(args.model)
    cache_dir = default_cache_dir() if args.cache_dir is None else Path(args.cache_dir) / "weights"
    if not spec.files:
        print(f"{spec.model_id}: has no official download; pass its files with --checkpoint", file=sys.stderr)
        return 2
    try:
        for wf in spec.files:
            dest = cache_dir / wf.name
            if dest.is_file() and not args.force:
                verify_file(dest, wf, spec.model_id)
                print(f"{spec.model_id}: {dest} is present and verified")
                continue
            download(spec, dest, wf=wf)
            print(f"{spec.model_id}: saved and verified {dest}")
    except WeightsUnavailable as exc:
        print(exc.message, file=sys.stderr)
        return 2
    return 0


def run_models(args: argparse.Namespace) -> int:
    from samgis.engine.registry import get_model_spec, load_models_file, model_ids

    models_file = args.models_file or os.environ.get("SAMGIS_MODELS_FILE")
    if models_file:
        try:
            load_models_file(models_file)
        except ValueError as exc:
            print(f"samgis models: {exc}", file=sys.stderr)
            return 2
    print(f"{'model':24s} {'backend':8s} {'weights':>9s}  description")
    for m in model_ids():
        s = get_model_spec(m)
        size = f"{s.size_bytes / 1e6:.0f} MB" if s.size_bytes else ("by path" if not s.files else "?")
        print(f"{m:24s} {s.backend:8s} {size:>9s}  {s.description}")
    return 0


def add_models_parsers(sub) -> None:
    from samgis.engine.registry import DEFAULT_MODEL

    f = sub.add_parser("fetch-weights", help="download and verify a model's official weights")
    f.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    f.add_argument("--cache-dir")
    f.add_argument("--force", action="store_true", help="download again even if present")
    f.set_defaults(func=run_fetch_weights)

    m = sub.add_parser("models", help="list known models")
    m.add_argument("--models-file", help="JSON file adding models ($SAMGIS_MODELS_FILE)")
    m.set_defaults(func=run_models)

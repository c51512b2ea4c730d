"""`samgis serve | predict | evaluate | batch | fetch-weights | models` — the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def add_model_options(p: argparse.ArgumentParser, providers: bool = True) -> None:
    """The model, weights, device (and tile providers) options shared by serve, predict and batch."""
    p.add_argument("--model", help="model id (default sam_vit_b; see `samgis models`)")
    p.add_argument("--checkpoint", help="weights file (else $SAMGIS_CHECKPOINT, cache dir, download)")
    if providers:
        p.add_argument("--providers", help="JSON file of extra/overriding tile sources ($SAMGIS_PROVIDERS)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default=None)
    p.add_argument("--cache-dir", help="root of the weights and tile caches ($SAMGIS_CACHE_DIR)")
    p.add_argument("--no-download", action="store_true", help="never download weights")


def settings_from_args(args: argparse.Namespace):
    """`Settings` from `SAMGIS_*` variables, overridden by the options of `add_model_options` given."""
    from samgis.settings import Settings

    names = ("model", "checkpoint", "providers", "device", "precision", "cache_dir")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.no_download:
        overrides["allow_download"] = False
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Vertex AI custom containers say the port in AIP_HTTP_PORT and reach the server from outside
    aip_port = os.environ.get("AIP_HTTP_PORT")
    host = args.host or ("0.0.0.0" if aip_port else "127.0.0.1")
    port = args.port or int(aip_port or 8000)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=args.log_level)
    return 0


def _fetch_weights(args: argparse.Namespace) -> int:
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


def _models(args: argparse.Namespace) -> int:
    from samgis.engine.registry import get_model_spec, model_ids

    print(f"{'model':20s} {'backend':8s} {'weights':>9s}  description")
    for m in model_ids():
        s = get_model_spec(m)
        size = f"{s.size_bytes / 1e6:.0f} MB" if s.size_bytes else ("by path" if not s.files else "?")
        print(f"{m:20s} {s.backend:8s} {size:>9s}  {s.description}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samgis", description="Segment Anything on web maps and images.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP API and web map")
    s.add_argument("--host", help="default 127.0.0.1 (0.0.0.0 when $AIP_HTTP_PORT is set)")
    s.add_argument("--port", type=int, help="default $AIP_HTTP_PORT, else 8000")
    add_model_options(s)
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_serve)

    f = sub.add_parser("fetch-weights", help="download and verify a model's official weights")
    f.add_argument("model", nargs="?", default="sam_vit_b")
    f.add_argument("--cache-dir")
    f.add_argument("--force", action="store_true", help="download again even if present")
    f.set_defaults(func=_fetch_weights)

    m = sub.add_parser("models", help="list known models")
    m.set_defaults(func=_models)

    from samgis.batch.cli import add_batch_parser
    from samgis.predict_cli import add_predict_parsers

    add_predict_parsers(sub)
    add_batch_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Options shared by the commands that load a model: model, weights, device, tile providers."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser, providers: bool = True) -> None:
    """The model, weights, device (and tile providers) options shared by serve, predict and batch."""
    p.add_argument("--model", help="model id (default sam2.1_hiera_tiny; see `samgis models`)")
    p.add_argument("--checkpoint", help="weights file, or an ONNX pair's folder (else $SAMGIS_CHECKPOINT, "
                                        "cache dir, download)")
    p.add_argument("--models-file", help="JSON file adding models, e.g. ONNX pairs by path ($SAMGIS_MODELS_FILE)")
    if providers:
        p.add_argument("--providers", help="JSON file of extra/overriding tile sources ($SAMGIS_PROVIDERS)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default=None)
    p.add_argument("--cache-dir", help="root of the weights and tile caches ($SAMGIS_CACHE_DIR)")
    p.add_argument("--no-download", action="store_true", help="never download weights")


def settings_from_args(args: argparse.Namespace):
    """`Settings` from `SAMGIS_*` variables, overridden by the options of `add_model_options` given."""
    from samgis.settings import Settings

    names = ("model", "checkpoint", "models_file", "providers", "rasters", "device", "precision", "cache_dir")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if args.no_download:
        overrides["allow_download"] = False
    return Settings(**overrides)

"""`samgis batch INPUT -o OUTDIR [--executor local|ray] …`: the command line of batch jobs.

`add_batch_parser(sub)` adds the `batch` sub-command to `samgis`'s sub-parsers; `python -m samgis.cli.batch
INPUT -o OUTDIR …` runs it alone. Exit status: 0 when every item is done, 1 when some failed (recorded in
the manifest and the report), 2 for a job that cannot start (bad input file, missing weights).
"""

from __future__ import annotations

import argparse
import sys

from samgis.batch.executors import EXECUTORS


def add_batch_parser(sub) -> argparse.ArgumentParser:
    """Add `batch` to an argparse sub-parsers object; returns its parser."""
    from samgis.cli.options import add_model_options

    b = sub.add_parser(
        "batch", help="segment many map areas or images; GeoPackage / masks, report, resumable",
        description="Segment map areas (a GeoJSON/GeoPackage of prompt features grouped by 'area') or a "
                    "folder of images (+ prompts JSON; images without prompts get automatic masks). "
                    "Running the same command again resumes: finished items are skipped.")
    b.add_argument("input", metavar="INPUT", help="prompt features file, or a folder of PNG/JPEG images")
    b.add_argument("-o", "--outdir", required=True, metavar="OUTDIR")
    b.add_argument("--executor", "--engine", dest="executor", choices=EXECUTORS, default="local",
                   help="where the job runs (the model is --model): local: one process; ray: Ray Data on a "
                        "local instance or --ray-address (--engine is the older name)")
    b.add_argument("--ray-address", help="Ray cluster address (e.g. ray://head:10001 or auto)")
    b.add_argument("--workers", type=int, default=None,
                   help="ray: model actors (default 1); local: loader threads (default 2)")
    add_model_options(b)
    b.add_argument("--zoom", type=int, help="zoom of areas whose features have no 'zoom' property")
    b.add_argument("--source", help="source (tile source, or raster: a providers-file 'raster' entry or --raster's "
                                    "file stem) of areas whose features have no 'source' property")
    b.add_argument("--raster", dest="rasters", action="append", metavar="PATH",
                   help="GeoTIFF / COG (any CRS) usable as a source named by its file stem, as with `samgis serve` "
                        "(repeatable)")
    b.add_argument("--prompts", help="prompts JSON of an image folder (default INPUT/prompts.json)")
    b.add_argument("--simplify-px", type=float, default=1.0, help="polygon simplification, window px")
    b.add_argument("--min-area-px", type=float, default=0.0, help="drop polygon parts smaller than this")
    b.add_argument("--multimask", action="store_true", help="keep the best of SAM's 3 masks per object")
    # vector post-processing (samgis.vector.postprocess), map and --everything jobs
    b.add_argument("--regularize", action="store_true",
                   help="square building-like outlines (buildingregulariser); replaces --simplify-px")
    b.add_argument("--smooth", action="store_true",
                   help="smooth natural outlines (smoothify); replaces --simplify-px; not with --regularize")
    b.add_argument("--postprocess-opts", metavar="KEY=VALUE[,KEY=VALUE]",
                   help="parameters of --regularize (tolerance_px, parallel_px, diagonal_deg, circles, circle_iou) "
                        "or --smooth (iterations, tolerance_px, preserve_area), px")
    b.add_argument("--points-per-side", type=int, default=16, help="automatic masks: grid points per side")
    b.add_argument("--everything", action="store_true",
                   help="INPUT is a vector file of areas of interest (one item per polygon, any CRS): segment "
                        "every object in each, stitched across overlapping windows")
    b.add_argument("--text", metavar="PHRASE",
                   help="find every instance of a noun phrase (\"greenhouse\") instead of automatic masks: in every "
                        "area of a vector file (implies --everything; an area's own 'text' property wins) or in "
                        "every image without its own prompts entry; needs a model with the text capability")
    b.add_argument("--text-column", metavar="NAME",
                   help="vector file: the property holding each area's phrase (default 'text'; implies --everything)")
    b.add_argument("--score-threshold", type=float, default=0.5,
                   help="phrases: drop instances scoring below this (0-1, default 0.5)")
    b.add_argument("--overlap-px", type=int, default=128, help="--everything: overlap of neighbouring windows")
    b.add_argument("--min-area-m2", type=float, default=0.0, help="--everything: drop objects smaller than this")
    b.add_argument("--max-windows", type=int, default=16, help="windows one object may spread over")
    b.add_argument("--cache-mb", type=int, default=128,
                   help="embedding cache of each model process, MiB (windows neighbouring items share, "
                        "duplicate images)")
    b.add_argument("--threads", type=int, help="torch threads per model process (equal counts give "
                                               "byte-equal results across executors)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_batch_command)
    return b


def run_batch_command(args: argparse.Namespace) -> int:
    from samgis.batch.job import run_batch
    from samgis.batch.work import JobConfig
    from samgis.cli.options import settings_from_args
    from samgis.errors import SamgisError
    from samgis.engine.factory import engine_recipe
    from samgis.engine.protocol import AmgOptions
    from samgis.services.concepts import check_score_threshold

    try:
        settings = settings_from_args(args)
        factory = engine_recipe(settings)
        cfg = JobConfig(
            providers=None if settings.providers is None else str(settings.providers.resolve()),
            builtin_sources=settings.builtin_sources,
            tile_cache_dir=str(settings.resolved_cache_dir() / "tiles") if settings.tile_cache else None,
            tile_timeout_s=settings.tile_timeout_s, tile_retries=settings.tile_retries,
            window_tiles=settings.window_tiles, simplify_px=args.simplify_px, min_area_px=args.min_area_px,
            multimask=args.multimask, amg=AmgOptions(points_per_side=args.points_per_side),
            max_windows_per_object=args.max_windows, torch_threads=args.threads, overlap_px=args.overlap_px,
            min_area_m2=args.min_area_m2, score_threshold=check_score_threshold(args.score_threshold,
                                                                               "--score-threshold"),
            cache_bytes=max(0, args.cache_mb) << 20, rasters=tuple(str(p.resolve()) for p in settings.rasters),
            postprocess=postprocess_from_args(args))
        from samgis.geo.sources import SourceRegistry

        # bad sources (providers file, rasters) stop the job before it starts, naming the entry
        SourceRegistry.from_config(cfg.providers, builtins=cfg.builtin_sources, rasters=cfg.rasters)
        workers = args.workers or (1 if args.executor == "ray" else 2)
        summary = run_batch(args.input, args.outdir, factory, cfg=cfg, executor=args.executor, workers=workers,
                            ray_address=args.ray_address, zoom=args.zoom, source=args.source,
                            prompts_file=args.prompts, progress=not args.no_progress, everything=args.everything,
                            text=args.text, text_column=args.text_column)
    except (SamgisError, ValueError, KeyError) as exc:
        print(f"samgis batch: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return 2
    print(f"samgis batch: {summary.done}/{summary.total} done, {summary.failed} failed, "
          f"{summary.skipped} skipped as already finished; {summary.processed} items in "
          f"{summary.seconds:.1f} s ({summary.items_per_s:.2f} items/s); report: {summary.outdir / 'report.html'}")
    for item_id, error in summary.errors.items():
        print(f"  failed {item_id}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def postprocess_from_args(args: argparse.Namespace):
    """`--regularize` / `--smooth` / `--postprocess-opts` as one `samgis.vector.postprocess` step, or None.
    `InvalidRequest` (naming the option) for both flags, options without a flag, or a bad KEY=VALUE."""
    from samgis.errors import InvalidRequest
    from samgis.vector.postprocess import choose

    params: dict = {}
    for pair in filter(None, (args.postprocess_opts or "").split(",")):
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest("--postprocess-opts", f"expected KEY=VALUE, got {pair!r}")
        params[key.strip()] = _cli_value(text.strip())
    if params and not (args.regularize or args.smooth):
        raise InvalidRequest("--postprocess-opts", "needs --regularize or --smooth")
    try:
        return choose(regularize=(params or True) if args.regularize else False,
                      smooth=(params or True) if args.smooth else False)
    except InvalidRequest as e:  # name the command-line option, not the request field
        field = e.field.replace("regularize", "--regularize").replace("smooth", "--smooth")
        field = "--postprocess-opts " + field.split(".", 1)[1] if "." in field else field
        raise InvalidRequest(field, e.message.split(": ", 1)[1]) from None


def _cli_value(text: str):
    """A KEY=VALUE value: true/false → bool, an integer → int, else a float (ValueError-free: else the text)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="samgis")
    sub = p.add_subparsers(dest="command", required=True)
    add_batch_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "batch":
        argv = ["batch", *argv]
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""`samgis serve`: the HTTP API and the web map."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from samgis.cli.options import add_model_options, settings_from_args


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from samgis.geo.sources import SourceRegistry

    settings = settings_from_args(args)
    try:  # bad sources (providers file, rasters) stop the start with one line naming the entry
        sources = SourceRegistry.from_config(settings.providers, builtins=settings.builtin_sources,
                                             rasters=settings.rasters)
    except ValueError as e:
        print(f"samgis serve: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Vertex AI custom containers say the port in AIP_HTTP_PORT and reach the server from outside
    aip_port = os.environ.get("AIP_HTTP_PORT")
    host = args.host or ("0.0.0.0" if aip_port else "127.0.0.1")
    port = args.port or int(aip_port or 8000)
    uvicorn.run(create_app(settings, sources=sources), host=host, port=port, log_level=args.log_level)
    return 0


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the HTTP API and web map")
    s.add_argument("--host", help="default 127.0.0.1 (0.0.0.0 when $AIP_HTTP_PORT is set)")
    s.add_argument("--port", type=int, help="default $AIP_HTTP_PORT, else 8000")
    add_model_options(s)
    s.add_argument("--raster", dest="rasters", action="append", metavar="PATH",
                   help="GeoTIFF / COG to serve as a source named by its file stem (repeatable)")
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=run_serve)

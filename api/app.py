"""FastAPI application factory: `create_app(settings)`; `uvicorn api.app:app` uses the environment."""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from api.disconnect import CancelOnDisconnect
from api.errors import install_error_handlers
from api.limits import BodyLimitMiddleware
from api.openapi import install_openapi
from api.request_id import RequestIdMiddleware
from api.resources import Resources, build_resources, load_engine_in_background
from api.routers import compat, export, meta, predict, segment, tiles
from api.routing import WebFiles
from api.security import install_access_control
from samgis import __version__
from samgis.engine.protocol import Engine
from samgis.geo.sources import SourceRegistry
from samgis.settings import Settings

WEB_DIST = Path(__file__).resolve().parent.parent / "web" / "dist"


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               sources: SourceRegistry | None = None) -> FastAPI:
    """Build the app. `engine` injects a ready engine (tests, embedding in other programs);
    otherwise the configured model loads in the background and /health says when it is ready."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        res: Resources = build_resources(settings, sources)
        app.state.resources = res
        loader = None
        if engine is not None:
            res.set_engine(engine)
        else:
            loader = asyncio.create_task(load_engine_in_background(res))
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            await res.fetcher.aclose()

    app = FastAPI(title="samgis", version=__version__, lifespan=lifespan,
                  description="Segment Anything on web maps and images; georeferenced GeoJSON out.")
    app.add_middleware(CancelOnDisconnect)  # inside the body limit: sees the body it replays, then disconnects
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s)
    policy = install_access_control(app, settings, os.environ)  # API keys, rate limits, CORS (outside the body limit)
    app.add_middleware(RequestIdMiddleware)  # added last = outermost: every answer carries the id
    install_error_handlers(app)
    for router in (meta.router, segment.router, compat.router, export.router, tiles.router, predict.router):
        app.include_router(router)
    predict.vertex_routes(app, os.environ)  # AIP_PREDICT_ROUTE / AIP_HEALTH_ROUTE when set
    install_openapi(app, policy)  # every answer documented: statuses, content types, error bodies
    web_dir = settings.web_dir or WEB_DIST
    if web_dir.is_dir():
        app.mount("/", WebFiles(directory=web_dir, html=True), name="web")  # API 405s keep their Allow
    return app


def app() -> FastAPI:  # `uvicorn --factory api.app:app`
    return create_app()

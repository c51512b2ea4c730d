"""Shared resources, built once in the app lifespan and handed to routes as FastAPI dependencies."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from fastapi import Request

from samgis import __version__
from samgis.engine.cache import EmbeddingCache
from samgis.encoder_queue import EncoderQueue
from samgis.engine.factory import build_engine
from samgis.engine.protocol import Engine
from samgis.errors import ModelNotReady, SamgisError
from samgis.geo.fetch import TileFetcher
from samgis.geo.readers import Readers
from samgis.geo.sources import SourceRegistry
from samgis.geo.tilecache import TileCache
from samgis.services.image_predict import ImagePredictService
from samgis.services.limits import limits_from_settings
from samgis.services.map_segment import SegmentService
from samgis.settings import Settings

log = logging.getLogger("samgis.api")


@dataclass
class Resources:
    settings: Settings
    sources: SourceRegistry
    fetcher: TileFetcher
    cache: EmbeddingCache
    encoder_queue: EncoderQueue
    readers: Readers | None = None  # one reader per source, shared by the tile route and the service
    engine: Engine | None = None
    service: SegmentService | None = None
    predict_service: ImagePredictService | None = None
    model_status: str = "loading"  # loading | ready | error
    model_error: str | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def set_engine(self, engine: Engine) -> None:
        self.engine = engine
        self.service = SegmentService(engine, self.cache, self.sources, self.fetcher,
                                      window_tiles=self.settings.window_tiles,
                                      max_zoom_steps=self.settings.max_zoom_steps,
                                      max_prompts=self.settings.max_prompts,
                                      max_points_per_side=self.settings.max_points_per_side,
                                      encoder_queue=self.encoder_queue,
                                      max_grid_points=self.settings.max_grid_points,
                                      max_mask_pixels=self.settings.max_mask_pixels,
                                      max_answer_vertices=self.settings.max_answer_vertices,
                                      deadline_s=self.settings.deadline_s,
                                      everything_deadline_s=self.settings.everything_deadline_s,
                                      readers=self.readers)
        self.predict_service = ImagePredictService(engine, self.cache, limits_from_settings(self.settings),
                                                   self.encoder_queue)
        self.model_status = "ready"
        self._ready.set()

    def fail(self, message: str) -> None:
        self.model_status, self.model_error = "error", message
        self._ready.set()


def build_resources(settings: Settings, sources: SourceRegistry | None = None) -> Resources:
    sources = sources or SourceRegistry.from_config(settings.providers, builtins=settings.builtin_sources,
                                                    rasters=settings.rasters)
    tile_cache = TileCache(settings.resolved_cache_dir() / "tiles") if settings.tile_cache else None
    fetcher = TileFetcher(tile_cache, user_agent=f"samgis/{__version__} (segment-anything map service)",
                          timeout_s=settings.tile_timeout_s, retries=settings.tile_retries)
    return Resources(settings=settings, sources=sources, fetcher=fetcher, cache=EmbeddingCache(settings.cache_bytes),
                     encoder_queue=EncoderQueue(settings.encoder_queue),
                     readers=Readers(fetcher, window_px=settings.window_tiles * 256))


async def load_engine_in_background(res: Resources) -> None:
    try:
        engine = await asyncio.to_thread(build_engine, res.settings)
    except SamgisError as exc:  # reported by /health and every model route; says what to do (weights …)
        log.error("model could not be loaded: %s", exc.message)
        res.fail(exc.message)
    except KeyError as exc:  # the registry's "unknown model …; known models: …"
        msg = str(exc.args[0]) if exc.args else "unknown model"
        log.error("model could not be loaded: %s", msg)
        res.fail(msg)
    except Exception:  # internals (paths, exception text) stay in the log
        log.exception("model could not be loaded")
        res.fail("an unexpected error stopped the model from loading; the server log has the details")
    else:
        res.set_engine(engine)
        log.info("model %s ready on %s", engine.model_id, engine.describe().device)


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def get_service(request: Request) -> SegmentService:
    res: Resources = request.app.state.resources
    if res.service is None:
        if res.model_status == "error":
            raise ModelNotReady(f"the model could not be loaded: {res.model_error}")
        raise ModelNotReady(f"the model {res.settings.model!r} is still loading; retry in a few seconds")
    return res.service


def get_engine(request: Request) -> Engine:
    """The loaded engine (plain-image prediction); 503 while it is loading or after it failed."""
    get_service(request)  # same readiness rules and messages
    return request.app.state.resources.engine

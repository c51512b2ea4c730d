"""Sources and windows of map requests: which configured source a request names, which lattice window holds its
prompts, and that window's embedding through the shared cache and the encoder queue.

Clicks, concept prompts and automatic masks (`samgis.services.map_segment`) and batch map items
(`samgis.services.area_segment`) all come here for windows, so equal windows share one embedding.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import numpy as np

from samgis.encoder_queue import EncoderQueue
from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import Embedding, Engine
from samgis.errors import InvalidRequest
from samgis.geo.readers import Readers
from samgis.geo.sources import SourceRegistry, TileSource
from samgis.geo.tiles import Window
from samgis.services.timing import Timer


def window_cache_key(source_id: str, window, model_id: str, embedding_version) -> tuple:
    """Embedding cache key of a window of a source: (source id, grid level and lattice cell (`window.key()`: z,
    x0, y0, window size for tile windows; see `samgis.geo.readers`), model id, embedding version). Equal keys
    name equal pixels, so clicks, automatic masks and batch jobs share embeddings."""
    return (source_id, *window.key(), model_id, embedding_version)


class MapWindows:
    """The sources (`sources`, None when callers hand sources in themselves), their readers and the embeddings of
    their windows for one engine; holds no per-request state.

    `encoder_queue`: encoder passes wait there (bounded; 503 when full), None: straight to a worker thread.
    `max_zoom_steps`: how far `choose_window` steps out from the requested zoom.
    """

    def __init__(self, engine: Engine, cache: EmbeddingCache, sources: SourceRegistry | None, readers: Readers,
                 encoder_queue: EncoderQueue | None = None, max_zoom_steps: int = 4):
        self.engine = engine
        self.cache = cache
        self.sources = sources
        self.readers = readers  # source → its reader
        self.encoder_queue = encoder_queue
        self.max_zoom_steps = max_zoom_steps
        self._prep = engine.describe().embedding_version

    def source(self, name: str, zoom: int) -> TileSource:
        """The configured source `name`, checked to serve `zoom` (InvalidRequest "source" / "zoom")."""
        source = self.sources.get(name)
        if not (source.min_zoom <= zoom <= source.max_zoom):
            raise InvalidRequest("zoom", f"zoom {zoom} is outside source {source.id!r}'s range "
                                         f"{source.min_zoom}–{source.max_zoom}")
        return source

    def window_px(self, source: TileSource) -> int:
        """Pixels of one window of `source` (as `choose_window` makes them)."""
        return self.readers(source).window_px()

    def choose_window(self, source: TileSource, lnglat: np.ndarray, zoom: int) -> Window:
        """The window for these prompts: the source's grid level matching `zoom` first (native zoom for tile
        sources), stepping out while they do not fit.

        Among the candidates at a level, one whose embedding is already cached wins.
        lnglat: (N, 2) float64 lng/lat degrees.
        """
        levels = []
        for level, cands in self.readers(source).window_candidates(lnglat, zoom, self.max_zoom_steps):
            levels.append(level)
            if not cands:
                continue
            for w in cands:
                if self.key(source, w) in self.cache:
                    return w
            return cands[0]
        side = int(round(math.sqrt(self.window_px(source))))
        where = (f"zoom {levels[-1]}–{levels[0]}" if levels and all(isinstance(v, int) for v in levels)
                 else f"levels {', '.join(map(str, levels))} of source {source.id!r}")
        raise InvalidRequest("prompts", f"the prompts span too large an area to fit one {side} px window at "
                                        f"{where}; zoom in less or segment the parts separately")

    def key(self, source: TileSource, window: Window) -> tuple:
        """Embedding cache key (`window_cache_key`)."""
        return window_cache_key(source.id, window, self.engine.model_id, self._prep)

    async def embedding_for(self, source: TileSource, window: Window, timer: Timer | None = None,
                            deadline: float | None = None, image: np.ndarray | None = None
                            ) -> tuple[Embedding, bool]:
        """(embedding, cache hit) of the window; `deadline`: `time.monotonic()` instant for the tile fetch.
        `image`: the window's pixels ((size, size, 3) uint8 RGB, window px) when the caller has read them
        already (batch jobs read ahead of the model); else a miss reads them through the source's reader."""
        timer = timer or Timer()

        async def fetch() -> np.ndarray:
            if image is not None:
                return image
            t0 = time.perf_counter()
            read = await self.readers(source).read_window(window, deadline)
            timer.add("tiles", t0)
            return read.rgb

        async def compute() -> Embedding:
            if self.encoder_queue is None:
                image = await fetch()
                t0 = time.perf_counter()
                emb = await asyncio.to_thread(self.engine.embed, image)
            else:  # admitted (or refused, 503) before any tile is fetched
                t0 = time.perf_counter()
                tiles_before = timer.timings.get("tiles", 0.0)  # earlier windows' fetches are not this one's
                emb = await self.encoder_queue.run(self.engine.embed, prepare=fetch)
                t0 += (timer.timings.get("tiles", 0.0) - tiles_before) / 1000
            timer.add("embed", t0)  # the wait in the queue included
            return emb

        return await self.cache.get_or_compute(self.key(source, window), compute)

    async def valid(self, source: TileSource, window: Window, pts: np.ndarray, labels: Sequence[int],
                    all_inside: bool = True):
        """(size, size) bool validity of the window's px (None: all valid); 422 when the window holds no data or
        an include point lies on nodata (or, with `all_inside`, outside the window). `pts`: (N, 2) float64
        lng/lat degrees."""
        valid = await self.readers(source).valid_mask(window)
        if valid is None:
            return None
        if not valid.any():
            raise InvalidRequest("prompts", f"source {source.id!r} has no data (nodata) in the window around the "
                                            "prompts; click where the source has pixels")
        if len(pts):
            px = np.floor(window.lnglat_to_px(pts)).astype(np.int64)
            for i, ((c, r), label) in enumerate(zip(px, labels, strict=True)):
                inside = 0 <= c < valid.shape[1] and 0 <= r < valid.shape[0]
                if label == 1 and ((not inside and all_inside) or (inside and not valid[r, c])):
                    raise InvalidRequest(f"prompts[{i}]", f"the point is on a nodata pixel of source {source.id!r}")
        return valid

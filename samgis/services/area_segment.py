"""Batch work (map areas, areas of interest, image folders) through the interactive services' machinery.

`AreaService` gives batch jobs the same window reads (the sources' readers, `samgis.geo.readers`: tiles and
rasters in any CRS), the same embedding cache (windows keyed by `window_cache_key`, plain images by the
SHA-256 of their pixels, `image_cache_key`) and the same way into the engine (an `EncoderQueue` when given)
as clicks and `/predict` requests: a window the server or an earlier item of the job has embedded is not
embedded again. What a batch does with an embedding (prompts, automatic masks, stitching) stays in
`samgis.batch`.

HTTP-free and async like the other services; the batch executors (threads, Ray actors) drive it on one event
loop per process (`samgis.batch.work.StageContext`).
"""

from __future__ import annotations

import numpy as np

from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import Embedding, Engine
from samgis.geo.readers import Readers, WindowImage
from samgis.services.image_predict import ImagePredictService
from samgis.services.map_windows import MapWindows


class AreaService:
    """Windows and images of batch jobs for one engine; see the module docstring.

    `readers`: the sources' readers; `encoder_queue`: a `samgis.encoder_queue.EncoderQueue`, or None to run
    encoder passes on a worker thread.
    """

    def __init__(self, engine: Engine, cache: EmbeddingCache, readers: Readers, encoder_queue=None):
        self.engine = engine
        self.cache = cache
        self.readers = readers
        # the services' own embedding paths (cache keys, single flight, encoder queue); sources are given by the
        # caller, so no registry is needed here
        self._windows = MapWindows(engine, cache, None, readers, encoder_queue)
        self._images = ImagePredictService(engine, cache, encoder_queue=encoder_queue)

    async def read_window(self, source, window) -> WindowImage:
        """The pixels of `window` (a window of one of the source's grids, `samgis.geo.grids`)."""
        return await self.readers(source).read_window(window)

    async def window_embedding(self, source, window, image: np.ndarray | None = None) -> tuple[Embedding, bool]:
        """(embedding, cache hit) of `window` of `source`; `image`: its pixels ((size, size, 3) uint8 RGB, window
        px) when already read, else a miss reads them."""
        return await self._windows.embedding_for(source, window, image=image)

    async def image_embedding(self, image: np.ndarray) -> tuple[Embedding, bool]:
        """(embedding, cache hit) of a plain (H, W, 3) uint8 RGB image."""
        return await self._images.embedding_for(image)

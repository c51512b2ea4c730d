"""Tile readers: XYZ over HTTP, XYZ folders and MBTiles, through the shared `TileFetcher` (its httpx client,
deadlines, per-source connection limits and disk tile cache)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import shapely

from samgis.geo.fetch import TileFetcher, UpstreamError, mbtiles_bounds
from samgis.geo.grids import PxWindow, TileGrid
from samgis.geo.readers import WindowImage
from samgis.geo.sources import TileSource
from samgis.geo.tiles import MAX_LAT, Window, candidate_windows, checked_lnglat, lattice_cover, world_px

log = logging.getLogger(__name__)

#: The Web Mercator map, lng/lat degrees: what `checked_lnglat` accepts.
WORLD = shapely.box(-180.0, -MAX_LAT, 180.0, MAX_LAT)

#: Window side in px (4 × 4 tiles of 256 px, 2 × 2 of 512 px).
WINDOW_PX = 1024


class TileReader:
    """Windows on the Web-Mercator tile grid at zoom z; all pixels valid (missing tiles of local sources are
    blank, see `TileFetcher.fetch_window`)."""

    def __init__(self, source: TileSource, fetcher: TileFetcher, window_px: int = WINDOW_PX):
        self.source = source
        self.fetcher = fetcher
        self.tiles = max(1, window_px // source.tile_size)
        self._footprint: shapely.Polygon | None = None

    def window_px(self) -> int:
        side = self.tiles * self.source.tile_size
        return side * side

    def window_candidates(self, lnglat: np.ndarray, zoom: int, max_steps: int) -> Iterator[tuple[int, list[Window]]]:
        lowest = max(self.source.min_zoom, zoom - max_steps)
        for z in range(zoom, lowest - 1, -1):
            yield z, candidate_windows(lnglat, z, tiles=self.tiles, tile_size=self.source.tile_size)

    def grid(self, zoom: int, lng: float, lat: float) -> TileGrid:
        """The pixel grid of work at `zoom` (the tile grid at that zoom; the point does not matter)."""
        return TileGrid(zoom, self.source.tile_size)

    def cover(self, lnglat: np.ndarray, zoom: int) -> list[Window]:
        """The fewest half-window lattice windows at `zoom` that together cover the points' extent
        (`lattice_cover` on each axis, in tiles), row-major. `lnglat`: (N, 2) float64 degrees EPSG:4326."""
        ts = self.source.tile_size
        tile_xy = world_px(checked_lnglat(lnglat), zoom, ts) / ts
        n = min(self.tiles, 2**zoom)
        lo, hi = tile_xy.min(axis=0), tile_xy.max(axis=0)
        step, last = max(1, n // 2), 2**zoom - n
        xs = lattice_cover(float(lo[0]), float(hi[0]), n, step, last)
        ys = lattice_cover(float(lo[1]), float(hi[1]), n, step, last)
        return [Window(zoom, x, y, tiles=n, tile_size=ts) for y in ys for x in xs]

    async def read_window(self, window: Window | PxWindow, deadline: float | None = None) -> WindowImage:
        """A tile `Window`'s pixels, or a `PxWindow`'s: its enclosing tile window's, cropped."""
        if isinstance(window, PxWindow):
            rgb = await self.fetcher.fetch_window(self.source, window.enclosing(), deadline)
            return WindowImage(window.crop(rgb))
        return WindowImage(await self.fetcher.fetch_window(self.source, window, deadline))

    async def valid_mask(self, window: Window) -> None:
        return None

    async def display_tile(self, z: int, x: int, y: int, deadline: float | None = None) -> bytes:
        return await self.fetcher.fetch_tile(self.source, z, x, y, deadline)

    def footprint_lnglat(self) -> shapely.Polygon:
        """Where the source has pixels, lng/lat degrees EPSG:4326: an MBTiles file's metadata `bounds`
        (`mbtiles_bounds`) within the Web Mercator map; otherwise the whole map (lng [-180, 180],
        |lat| ≤ `MAX_LAT`): other tile sources declare no extent, and tiles missing from a local source read
        blank. An MBTiles file whose bounds row is unreadable or malformed is logged and treated as the whole
        map (its tiles still serve)."""
        if self._footprint is None:
            self._footprint = WORLD
            if self.source.kind == "mbtiles":
                assert self.source.path is not None
                try:
                    bounds = mbtiles_bounds(self.source.path)
                except (UpstreamError, ValueError) as e:
                    log.warning("tile source %r: no footprint from its MBTiles metadata (%s); using the whole map",
                                self.source.id, e)
                    bounds = None
                if bounds is not None:
                    self._footprint = shapely.box(*bounds).intersection(WORLD)
        return self._footprint

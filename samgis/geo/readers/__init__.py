"""Readers: the one interface between a configured source and the code that segments or displays it.

A reader knows its source's grid. It proposes lattice-aligned windows holding a click's prompts, reads a
window's pixels (with a validity mask where the source has nodata or alpha) and renders display tiles for the
web map. Nothing above it (service, routers) knows which kind of source it talks to; adding a reader means a
class here and one line in `open_reader`.

Windows (`samgis.geo.tiles.Window` for tile sources, `samgis.geo.readers.raster.RasterWindow` for rasters)
share: `size` (px per side), `origin_px()` (NW pixel on the level's global px grid), `neighbour(dx, dy)`
(the next lattice window that way), `key()` (grid level and lattice cell, for cache keys), `affine()` (window px →
`crs`), `crs`, `lnglat_to_px(lnglat)` and `meta()`.

A reader's `footprint_lnglat()` is where its source has pixels, in EPSG:4326: services searching an area (concept
prompts over a map view) clip the area to it, so a view reaching past a raster's edge searches the part on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import shapely

from samgis.geo.fetch import TileFetcher


@dataclass
class WindowImage:
    """A window's pixels: `rgb` (size, size, 3) uint8, row 0 = top of the window (window px frame);
    `valid` (size, size) bool, True where the source has data, or None when every pixel is valid."""

    rgb: np.ndarray
    valid: np.ndarray | None = None


class Reader(Protocol):
    source: Any  # .id, .attribution, .min_zoom, .max_zoom

    def window_px(self) -> int:
        """Pixels of one window (size²)."""

    def window_candidates(self, lnglat: np.ndarray, zoom: int, max_steps: int) -> Iterator[tuple[Any, list]]:
        """(grid level, windows best first) from the level matching `zoom` outwards, at most `max_steps`
        steps; `lnglat`: (N, 2) float64 lng/lat degrees EPSG:4326. An empty list: the prompts do not fit."""

    def cover(self, lnglat: np.ndarray, zoom: int) -> list:
        """The fewest lattice windows of the grid level matching `zoom` that together cover the extent of
        `lnglat` ((N, 2) float64 lng/lat degrees EPSG:4326), row-major; for prompts larger than a window."""

    def grid(self, zoom: int, lng: float, lat: float) -> Any:
        """The pixel grid (`samgis.geo.grids`) that work larger than a window at `zoom` around (lng, lat)
        degrees uses: lattices of windows are cut from it with `grid.window(col, row, size)`."""

    async def read_window(self, window: Any, deadline: float | None = None) -> WindowImage:
        """The window's pixels (any window of `grid()` too); `deadline` a `time.monotonic()` instant."""

    async def valid_mask(self, window: Any) -> np.ndarray | None:
        """(size, size) bool validity of the window's pixels, or None when all are valid."""

    async def display_tile(self, z: int, x: int, y: int, deadline: float | None = None) -> bytes:
        """An encoded image of Web-Mercator tile (z, x, y) for the web map."""

    def footprint_lnglat(self) -> shapely.Polygon | None:
        """Where the source has a grid, as a polygon in EPSG:4326 lng/lat degrees (x = lng, y = lat): every
        point of it is a valid prompt location for `window_candidates`. Tile sources: the Web Mercator map;
        rasters: their extent. None when it cannot be computed (then nothing is clipped to it)."""


def open_reader(source: Any, fetcher: TileFetcher, window_px: int = 1024) -> Reader:
    """The reader of a configured source (the only place that looks at a source's type); `window_px`: side
    of its windows in px."""
    from samgis.geo.readers.raster import RasterReader, RasterSource
    from samgis.geo.readers.tiles import TileReader

    if isinstance(source, RasterSource):
        return RasterReader(source, window_px)
    return TileReader(source, fetcher, window_px)


class Readers:
    """One reader per configured source, made on first use and kept (readers hold caches)."""

    def __init__(self, fetcher: TileFetcher, window_px: int = 1024):
        self.fetcher = fetcher
        self.window_px = window_px
        self._readers: dict[str, Reader] = {}

    def __call__(self, source: Any) -> Reader:
        reader = self._readers.get(source.id)
        if reader is None or reader.source is not source:
            reader = self._readers[source.id] = open_reader(source, self.fetcher, self.window_px)
        return reader


def source_crs(source: Any) -> str:
    """The CRS of a source's own grid: a raster's CRS (WKT), EPSG:3857 for tile sources."""
    return getattr(source, "crs_wkt", None) or "EPSG:3857"

"""Pixel grids of sources, for work larger than one window (batch areas, areas of interest).

A grid is one level of a source's pixel grid: the Web-Mercator tile grid at zoom z (`TileGrid`, global px
of the whole tile pyramid at z, EPSG:3857) or one level of a raster's own pixel grid (`RasterGrid`, level f:
one px = f × f native px, in the raster's CRS; never resampled through Web Mercator). Both say where lng/lat
points fall (`lnglat_to_px`), map their px to their CRS (`affine_at`), and cut a `size` px square window at any
global px (`window`): a lattice cell a reader can read and whose `key()` names exactly its pixels (for the
embedding cache), whether or not it falls on the grid's tiles.

Frames: *global px* (col, row), rasterio convention (pixel i spans [i, i + 1)), origin at the grid's NW
corner (tile (0, 0) at z; the raster's first px at its level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine

from samgis.errors import InvalidRequest
from samgis.geo.tiles import Window, checked_lnglat, world_px


@dataclass(frozen=True)
class PxWindow:
    """`size` × `size` px of the tile grid at zoom `z` (`tile_size` px tiles) whose NW px is global px
    (`col`, `row`), not necessarily on a tile corner. Readers fetch `enclosing()` and `crop` it.

    >>> w = PxWindow(z=10, col=300, row=520, size=1024)
    >>> w.enclosing().key(), w.key()
    ((10, 1, 2, 1280), ('xyz-px', 10, 300, 520, 1024, 256))
    >>> w.affine() @ (0, 0) == TileGrid(10).affine_at(300, 520) @ (0, 0)
    True
    """

    z: int
    col: int
    row: int
    size: int
    tile_size: int = 256

    crs = "EPSG:3857"

    def key(self) -> tuple:
        """("xyz-px", z, col, row, size, tile_size): names the window's pixels of a source, for cache keys."""
        return ("xyz-px", self.z, self.col, self.row, self.size, self.tile_size)

    def enclosing(self) -> Window:
        """The smallest square tile-aligned `Window` holding this one."""
        ts = self.tile_size
        tx, ty = self.col // ts, self.row // ts
        k = max(math.ceil((self.col + self.size) / ts) - tx, math.ceil((self.row + self.size) / ts) - ty)
        return Window(self.z, tx, ty, tiles=k, tile_size=ts)

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """This window's part of `pixels` ((S, S, ...) any dtype, px of `enclosing()`), contiguous."""
        w = self.enclosing()
        r, c = self.row - w.y * self.tile_size, self.col - w.x * self.tile_size
        return np.ascontiguousarray(pixels[r:r + self.size, c:c + self.size])

    def affine(self) -> Affine:
        """Window px (col, row; rasterio convention) → EPSG:3857 metres."""
        return self.enclosing().affine() @ Affine.translation(*self._shift())

    def _shift(self) -> tuple[int, int]:
        w = self.enclosing()
        return self.col - w.x * self.tile_size, self.row - w.y * self.tile_size

    def lnglat_to_px(self, lnglat: np.ndarray) -> np.ndarray:
        """(N, 2) float64 lng/lat degrees → (N, 2) float64 continuous window px (col, row)."""
        return world_px(lnglat, self.z, self.tile_size) - np.array([self.col, self.row], np.float64)

    def meta(self) -> dict:
        return {"z": self.z, "col": self.col, "row": self.row, "size": self.size}


@dataclass(frozen=True)
class TileGrid:
    """The Web-Mercator tile grid at zoom `z`, `tile_size` px tiles (global px → EPSG:3857).

    >>> g = TileGrid(z=3)
    >>> g.window(512, 256, 1024), g.window(500, 256, 1024).key()
    (Window(z=3, x=2, y=1, tiles=4, tile_size=256), ('xyz-px', 3, 500, 256, 1024, 256))
    >>> g.lnglat_to_px([[0.0, 0.0]]).tolist()
    [[1024.0, 1024.0]]
    """

    z: int
    tile_size: int = 256

    crs = "EPSG:3857"
    bounded = True
    """Windows must lie inside the grid (tile grids end at the map's edge)."""

    @property
    def extent(self) -> tuple[int, int]:
        """(width, height) of the grid in px."""
        side = 2**self.z * self.tile_size
        return side, side

    def lnglat_to_px(self, lnglat: np.ndarray, field: str = "prompts") -> np.ndarray:
        """(N, 2) float64 lng/lat degrees → (N, 2) float64 global px; InvalidRequest(field) off the map."""
        return world_px(checked_lnglat(np.asarray(lnglat, np.float64).reshape(-1, 2), field), self.z,
                        self.tile_size)

    def affine_at(self, col: int, row: int) -> Affine:
        """Px (col, row; rasterio convention) relative to global px (`col`, `row`) → EPSG:3857 metres. On a tile
        corner this is exactly that tile's `Window.affine()` (mercantile's tile bounds)."""
        ts = self.tile_size
        base = Window(self.z, col // ts, row // ts, tiles=1, tile_size=ts).affine()
        return base @ Affine.translation(col % ts, row % ts)

    def window(self, col: int, row: int, size: int):
        """The `size` px window at global px (`col`, `row`): a tile `Window` when it falls on whole tiles (its
        key is then the one clicks use), else a `PxWindow`."""
        ts = self.tile_size
        if col % ts == 0 and row % ts == 0 and size % ts == 0:
            return Window(self.z, col // ts, row // ts, tiles=size // ts, tile_size=ts)
        return PxWindow(self.z, col, row, size, ts)


@dataclass(frozen=True)
class RasterGrid:
    """Level `level` of a raster's pixel grid (`transform`: native px → `crs` (WKT); `width` × `height`
    native px); `z`: the web zoom the level was chosen for."""

    level: int
    z: int
    transform: Affine
    crs: str
    width: int
    height: int

    bounded = False
    """Windows may overhang the raster (those px read as invalid)."""

    @property
    def extent(self) -> tuple[int, int]:
        """(width, height) of the level in px (partial px at the far edges counted)."""
        return math.ceil(self.width / self.level), math.ceil(self.height / self.level)

    def lnglat_to_px(self, lnglat: np.ndarray, field: str = "prompts") -> np.ndarray:
        """(N, 2) float64 lng/lat degrees → (N, 2) float64 level px; InvalidRequest(field) for points the CRS
        cannot hold."""
        from samgis.geo.readers.raster import _transformer

        pts = np.asarray(lnglat, np.float64).reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise InvalidRequest(field, "coordinates must be finite numbers")
        x, y = _transformer(4326, self.crs).transform(pts[:, 0], pts[:, 1])
        cols, rows = ~self.affine_at(0, 0) @ (np.asarray(x, np.float64), np.asarray(y, np.float64))
        px = np.column_stack([cols, rows]).astype(np.float64)
        if not np.isfinite(px).all():
            raise InvalidRequest(field, "outside the area the raster's CRS can be projected to")
        return px

    def affine_at(self, col: int, row: int) -> Affine:
        """Px (col, row) relative to level px (`col`, `row`) → the raster's CRS."""
        f = self.level
        return self.transform @ Affine.translation(col * f, row * f) @ Affine.scale(f)

    def window(self, col: int, row: int, size: int):
        """The `size` px `RasterWindow` at level px (`col`, `row`)."""
        from samgis.geo.readers.raster import RasterWindow

        return RasterWindow(self.level, col, row, size, self.z, self.transform, self.crs)

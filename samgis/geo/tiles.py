"""Tile-aligned square windows in the XYZ (Web Mercator, EPSG:3857) tile grid.

A `Window` is `tiles` x `tiles` XYZ tiles at zoom `z` whose top-left tile is (x, y); y grows
south. Window px are continuous pixel coordinates in the rasterio convention: (col, row), pixel
i spans [i, i + 1), the window's NW corner is (0, 0) and its SE corner is (size, size).

All projection maths is mercantile's; this module only scales and offsets its results.

>>> w = Window(z=2, x=0, y=0)
>>> w.size, w.key()
(1024, (2, 0, 0, 1024))
>>> w.lnglat_to_px(np.array([[0.0, 0.0]])).tolist()
[[512.0, 512.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mercantile
import numpy as np
from affine import Affine

from samgis.errors import InvalidRequest

#: Largest |latitude| the Web Mercator tile grid covers, in degrees.
MAX_LAT = 85.0511287798

_WORLD = mercantile.xy_bounds(0, 0, 0)  # EPSG:3857 metres of the whole tile grid


@dataclass(frozen=True)
class Window:
    """`tiles` x `tiles` XYZ tiles at zoom `z`, top-left tile (x, y).

    `tiles` is clamped to the number of tiles per side of the world (2**z) at low zoom, so
    Window(0, 0, 0) is the single world tile. The window must lie inside the tile grid.

    >>> Window(z=1, x=0, y=0).tiles
    2
    """

    z: int
    x: int
    y: int
    tiles: int = 4
    tile_size: int = 256

    def __post_init__(self) -> None:
        if self.z < 0 or self.tiles < 1 or self.tile_size < 1:
            raise ValueError(f"bad window {self!r}")
        object.__setattr__(self, "tiles", min(self.tiles, 2**self.z))
        last = 2**self.z - self.tiles
        if not (0 <= self.x <= last and 0 <= self.y <= last):
            raise ValueError(
                f"window origin ({self.x}, {self.y}) at z={self.z} is outside the tile grid "
                f"(x and y must lie in [0, {last}] for {self.tiles} tiles per side)"
            )

    @property
    def size(self) -> int:
        """Pixels per side: tiles * tile_size."""
        return self.tiles * self.tile_size

    def key(self) -> tuple[int, int, int, int]:
        """(z, x, y, size): identifies the window's pixels for a given source, in cache keys."""
        return (self.z, self.x, self.y, self.size)

    #: CRS of `affine()`'s output (the tile grid's).
    crs = "EPSG:3857"

    def meta(self) -> dict:
        """The window as answers describe it."""
        return {"z": self.z, "x": self.x, "y": self.y, "size": self.size}

    def origin_px(self) -> tuple[int, int]:
        """(col, row) of the window's NW pixel in the global px of zoom z (see `world_px`).

        >>> Window(z=5, x=3, y=2).origin_px()
        (768, 512)
        """
        return self.x * self.tile_size, self.y * self.tile_size

    def neighbour(self, dx: int, dy: int) -> "Window | None":
        """The lattice window next to this one in direction (dx, dy) (each -1, 0 or 1; x east, y south), or None
        at the edge of the tile grid.

        The lattice has origins on multiples of half a window (`candidate_windows` prefers them, so
        embeddings are shared): the neighbour's origin is the next lattice origin beyond this one's on each
        axis moved (clamped to the grid), so the two overlap by at least half a window.

        >>> [(w.x, w.y) for w in (Window(5, 4, 4).neighbour(1, 0), Window(5, 3, 4).neighbour(-1, 1))]
        [(6, 4), (2, 6)]
        >>> Window(2, 0, 0).neighbour(-1, 0) is None
        True
        """
        step = max(1, self.tiles // 2)
        last = 2**self.z - self.tiles

        def move(o: int, d: int) -> int:
            if d > 0:
                o = (o // step + 1) * step
            elif d < 0:
                o = (o // step) * step if o % step else o - step
            return min(max(o, 0), last)

        x, y = move(self.x, dx), move(self.y, dy)
        if (dx and x == self.x) or (dy and y == self.y):
            return None
        return Window(self.z, x, y, tiles=self.tiles, tile_size=self.tile_size)

    def tiles_list(self) -> list[mercantile.Tile]:
        """The window's tiles, row-major, north-west first.

        >>> [tuple(t) for t in Window(z=1, x=0, y=0).tiles_list()]
        [(0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1)]
        """
        n = self.tiles
        return [mercantile.Tile(self.x + i, self.y + j, self.z) for j in range(n) for i in range(n)]

    def bounds_3857(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in EPSG:3857 metres, from mercantile's tile bounds."""
        nw = mercantile.xy_bounds(self.x, self.y, self.z)
        se = mercantile.xy_bounds(self.x + self.tiles - 1, self.y + self.tiles - 1, self.z)
        return (nw.left, se.bottom, se.right, nw.top)

    def bounds(self) -> mercantile.LngLatBbox:
        """(west, south, east, north) in lng/lat degrees EPSG:4326."""
        nw = mercantile.bounds(self.x, self.y, self.z)
        se = mercantile.bounds(self.x + self.tiles - 1, self.y + self.tiles - 1, self.z)
        return mercantile.LngLatBbox(nw.west, se.south, se.east, nw.north)

    def affine(self) -> Affine:
        """Affine from window px (col, row; rasterio convention) to EPSG:3857 metres (x, y).

        >>> w = Window(z=3, x=2, y=1)
        >>> w.affine() @ (0, 0) == (w.bounds_3857()[0], w.bounds_3857()[3])
        True
        """
        left, bottom, right, top = self.bounds_3857()
        return Affine((right - left) / self.size, 0.0, left, 0.0, -(top - bottom) / self.size, top)

    def lnglat_to_px(self, lnglat: np.ndarray) -> np.ndarray:
        """Window px of points.

        `lnglat`: (N, 2) float64 (lng, lat) degrees EPSG:4326.
        Returns (N, 2) float64 (col, row) continuous window px, rasterio convention; points
        outside the window get coordinates outside [0, size). The NW corner of tile
        (z, x + i, y + j) maps to exactly (i * tile_size, j * tile_size) up to float rounding.
        """
        world = world_px(lnglat, self.z, self.tile_size)
        return world - np.array([self.x, self.y], np.float64) * self.tile_size


def world_px(lnglat: np.ndarray, z: int, tile_size: int = 256) -> np.ndarray:
    """Global pixel coordinates at zoom z.

    `lnglat`: (N, 2) float64 (lng, lat) degrees EPSG:4326 (not validated; see `checked_lnglat`).
    Returns (N, 2) float64 (col, row) px of the whole tile grid at zoom z (origin at the NW
    corner of tile (0, 0), 2**z * tile_size px per side, rasterio convention).

    >>> world_px(np.array([[180.0, 0.0]]), z=1).tolist()
    [[512.0, 256.0]]
    """
    pts = np.asarray(lnglat, np.float64).reshape(-1, 2)
    metres = np.array([mercantile.xy(lng, lat) for lng, lat in pts], np.float64).reshape(-1, 2)
    # Fractions of the world first: the scaling by 2**z * tile_size is then exact.
    width = _WORLD.right - _WORLD.left
    frac = np.stack([metres[:, 0] - _WORLD.left, _WORLD.top - metres[:, 1]], axis=1) / width
    return frac * float(2**z * tile_size)


def checked_lnglat(lnglat: np.ndarray, field: str = "prompts") -> np.ndarray:
    """`lnglat` as (N, 2) float64 lng/lat degrees; raises InvalidRequest(field) if off the grid.

    Accepts lng in [-180, 180] and |lat| <= MAX_LAT (the Web Mercator limit).
    """
    pts = np.asarray(lnglat, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise InvalidRequest(field, f"expected N >= 1 (lng, lat) pairs, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise InvalidRequest(field, "coordinates must be finite numbers")
    bad_lng = np.abs(pts[:, 0]) > 180.0
    bad_lat = np.abs(pts[:, 1]) > MAX_LAT
    if bad_lng.any() or bad_lat.any():
        i = int(np.flatnonzero(bad_lng | bad_lat)[0])
        lng, lat = pts[i]
        raise InvalidRequest(
            field,
            f"point {i} (lng={lng}, lat={lat}) is outside the Web Mercator map: "
            f"lng must be in [-180, 180] and lat in [-{MAX_LAT}, {MAX_LAT}]",
        )
    return pts


def candidate_windows(
    lnglat: np.ndarray, z: int, tiles: int = 4, tile_size: int = 256
) -> list[Window]:
    """Every tile-aligned window at zoom z that strictly contains all points, best first.

    `lnglat`: (N, 2) float64 (lng, lat) degrees EPSG:4326. A point is contained when its window
    px (col, row) lie in the open interval (0, size). Windows are clamped to the tile grid (no
    antimeridian wrap). Order: windows whose origin lies on the half-window grid (x and y
    multiples of tiles // 2; they repeat between nearby clicks, so embeddings get reused) come
    first, then the other tile-aligned windows; within each group, the window whose centre is
    nearest the centre of the points' pixel bounding box comes first, ties (equal distances, to
    ~1e-9 tile²) broken by (y, x).
    Returns [] when the points do not fit in one window at z; the caller then tries z - 1.

    Raises InvalidRequest("prompts") for points off the Web Mercator map.

    >>> [w.key() for w in candidate_windows(np.array([[0.0, 0.0]]), z=2)]
    [(2, 0, 0, 1024)]
    >>> ws = candidate_windows(np.array([[1.0, 1.0]]), z=4)
    >>> len(ws), [(w.x, w.y) for w in ws[:4]]
    (16, [(6, 6), (6, 4), (8, 6), (8, 4)])
    """
    pts = checked_lnglat(lnglat)
    n = min(tiles, 2**z)
    last = 2**z - n
    # Fractional tile coordinates of the points at zoom z.
    tile_xy = world_px(pts, z, tile_size) / tile_size
    lo, hi = tile_xy.min(axis=0), tile_xy.max(axis=0)
    # Origins o with o < lo and o + n > hi (strict containment), clamped to the grid.
    first = np.maximum(np.floor(hi - n).astype(np.int64) + 1, 0)
    stop = np.minimum(np.ceil(lo).astype(np.int64) - 1, last)
    if (first > stop).any():
        return []
    centre = (lo + hi) / 2.0
    step = max(1, n // 2)

    def preference(origin: tuple[int, int]) -> tuple[int, float, int, int]:
        x, y = origin
        off_grid = int(x % step != 0 or y % step != 0)
        dist2 = (x + n / 2.0 - centre[0]) ** 2 + (y + n / 2.0 - centre[1]) ** 2
        # Rounded (to ~1e-9 tile^2) so that float noise does not break exact ties.
        return (off_grid, round(dist2, 9), y, x)

    origins = [
        (x, y)
        for y in range(int(first[1]), int(stop[1]) + 1)
        for x in range(int(first[0]), int(stop[0]) + 1)
    ]
    origins.sort(key=preference)
    return [Window(z, x, y, tiles=n, tile_size=tile_size) for x, y in origins]


def lattice_cover(lo: float, hi: float, size: int, step: int, last: int | None = None) -> list[int]:
    """Origins (one axis, px or tiles) of the fewest windows of `size` with origins on multiples of `step` that
    together cover [lo, hi]: the lattice origin at or below `lo`, then one every `size` (abutting windows)
    until `hi` is reached; `last`: the largest allowed origin (the grid's edge), None for none.

    >>> lattice_cover(3.5, 9.0, 4, 2), lattice_cover(3.5, 9.0, 4, 2, last=4), lattice_cover(1.0, 3.0, 4, 2)
    ([2, 6], [2, 4], [0])
    """
    o = int(math.floor(lo / step)) * step
    if last is not None:
        o = min(max(o, 0), last)
    out = [o]
    while out[-1] + size < hi and (last is None or out[-1] < last):
        nxt = out[-1] + size
        out.append(nxt if last is None else min(nxt, last))
    return out

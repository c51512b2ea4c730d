"""A synthetic scene for whole-area jobs: shapes laid out on the window lattice of a known AOI.

The AOI is a square at zoom `Z` whose NW corner sits a quarter pixel inside global px (X0, Y0), so the
lattice of an AOI job (1024 px windows, 128 px overlap: stride 896) starts at (X0, Y0) and has 3 x 3 windows:
window columns/rows span [0, 1024), [896, 1920), [1792, 2816) px from there; overlaps are [896, 1024) and
[1792, 1920). Every shape is an axis-aligned rectangle (or a union of them) with edges on whole pixels, so
its lng/lat polygon is exactly what the tiles show.

Shapes (px from (X0, Y0), cols x rows):
- "river": a long band 150–2650 x 940–1000 in the overlap of window rows 0 and 1: six windows, whole in
  none, so it only comes back whole if its pieces are joined across two seams; it runs past the AOI's east
  edge (2600) and must be clipped there.
- "field": 1700–2050 x 1700–2000, over the corner of windows (1, 1), (2, 1), (1, 2), (2, 2); whole in none.
- "building-overlap": 1800–1900 x 300–360, whole in both windows (1, 0) and (2, 0): must come back once.
- "building-cut": 1000–1060 x 500–540, cut by window (0, 0)'s east edge, whole in window (1, 0).
- "building-cut-south": 400–460 x 1880–1970, cut by window (0, 1)'s south edge, whole in window (0, 2).
- "building-corner": 920–1000 x 1810–1900, whole in the four windows around the corner (1, 1).
- "lake": an L of 2150–2500 x 250–600 less its NE part, in one window's core.
- "speck": 1300–1304 x 2300–2304 (16 px, ~3 m²): dropped by `--min-area-m2 10`.
- "outside": 2650–2780 x 100–200, in the lattice's windows but outside the AOI: must not come back.
"""

from __future__ import annotations

import mercantile
import shapely
from shapely.geometry import Polygon

from tests.support.scene import Scene, Shape

Z = 18
ORIGIN_LNGLAT = (2.5, 43.0)
AOI_PX = 2600.0
SPECK = "speck"
OUTSIDE = "outside"


def origin_px() -> tuple[int, int]:
    """(X0, Y0): global px at Z of the NW corner of the z 18 tile holding ORIGIN_LNGLAT, plus 64 px."""
    t = mercantile.tile(*ORIGIN_LNGLAT, Z)
    return t.x * 256 + 64, t.y * 256 + 64


def px_lnglat(col: float, row: float) -> tuple[float, float]:
    """lng/lat degrees of a point given in px from (X0, Y0) at zoom Z (global px, rasterio convention)."""
    x0, y0 = origin_px()
    world = mercantile.xy_bounds(0, 0, 0)
    res = (world.right - world.left) / (256 * 2**Z)
    ll = mercantile.lnglat(world.left + (x0 + col) * res, world.top - (y0 + row) * res)
    return ll.lng, ll.lat


def rect(c0: float, r0: float, c1: float, r1: float) -> Polygon:
    """The lng/lat polygon of px rectangle [c0, c1) x [r0, r1) from (X0, Y0)."""
    return Polygon([px_lnglat(c0, r0), px_lnglat(c1, r0), px_lnglat(c1, r1), px_lnglat(c0, r1)])


def aoi() -> Polygon:
    """The AOI, lng/lat degrees EPSG:4326: px [0.25, 2600.25) squared from (X0, Y0)."""
    return rect(0.25, 0.25, AOI_PX + 0.25, AOI_PX + 0.25)


def aoi_scene() -> Scene:
    spec = [
        ("river", (20, 90, 220), rect(150, 940, 2650, 1000)),
        ("field", (110, 190, 40), rect(1700, 1700, 2050, 2000)),
        ("building-overlap", (200, 30, 30), rect(1800, 300, 1900, 360)),
        ("building-cut", (30, 60, 200), rect(1000, 500, 1060, 540)),
        ("building-cut-south", (220, 120, 0), rect(400, 1880, 460, 1970)),
        ("building-corner", (150, 0, 150), rect(920, 1810, 1000, 1900)),
        ("lake", (0, 110, 255), shapely.difference(rect(2150, 250, 2500, 600), rect(2300, 250, 2500, 400))),
        (SPECK, (255, 0, 90), rect(1300, 2300, 1304, 2304)),
        (OUTSIDE, (200, 200, 0), rect(2650, 100, 2780, 200)),
    ]
    return Scene(tuple(Shape(name, shapely.normalize(poly), rgb) for name, rgb, poly in spec))


def expected(scene: Scene) -> dict[str, Polygon]:
    """name → what an AOI job must return for each shape (its part inside the AOI), without the speck and the
    shape outside."""
    area = aoi()
    return {s.name: shapely.intersection(s.polygon, area) for s in scene.shapes if s.name not in (SPECK, OUTSIDE)}


def big_aoi(n: int) -> Polygon:
    """An AOI of `n` x `n` lattice windows (1024 px, overlap 128): px [0.25, 128 + 896 n - 0.75) squared."""
    side = 128 + 896 * n - 1.0
    return rect(0.25, 0.25, side + 0.25, side + 0.25)


def big_scene(n: int) -> Scene:
    """Shapes for `big_aoi(n)`: a building on every inner 4-window corner (whole in four windows), a building
    cut by every inner east window edge (whole in the next window) and a river in the overlap of window rows
    n // 2 - 1 and n // 2, across all `n` window columns (whole in no window)."""
    spec = []
    for j in range(n):
        for i in range(1, n):
            c, r = 896 * i, 896 * j
            if j > 0 and j != n // 2:  # the river runs along the overlap of row n // 2
                spec.append((f"corner-{i}-{j}", rect(c + 30, r + 40, c + 90, r + 100)))
            spec.append((f"edge-{i}-{j}", rect(c + 100, r + 400, c + 160, r + 440)))
    mid = 896 * (n // 2)
    spec.append(("river", rect(200, mid + 20, 896 * n - 100, mid + 90)))
    colours = [(10 + k % 200, 40 + (k * 7) % 200, 60 + k // 200) for k in range(len(spec))]
    return Scene(tuple(Shape(name, shapely.normalize(poly), rgb) for (name, poly), rgb in zip(spec, colours)))

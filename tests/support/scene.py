"""A synthetic world with known geometry, rendered into XYZ tiles.

A `Scene` is a plain background colour with coloured, non-overlapping polygons (lng/lat degrees,
EPSG:4326) on it. `render_tile` rasterises them into one XYZ tile with no anti-aliasing, so every
pixel is either the background or exactly one shape's colour, and a test engine can recover a
shape from its colour alone.

Pixel rule: a pixel is painted with a shape's colour when its centre lies inside the shape's
polygon after projecting the vertices to EPSG:3857 (rasterio/GDAL's rule, all_touched=False). The
rule only looks at the pixel centre, so tiles rendered one at a time join seamlessly, and a 512 px
tile at z - 1 is pixel for pixel the 2 x 2 block of 256 px tiles at z. (Pillow's
ImageDraw.polygon also paints pixels its outline touches, which grows every shape by ~0.3 px, so
it is not used.)

Every edge of `default_scene()` is axis-aligned (straight in lng/lat and in Web Mercator alike) or
short enough that the lng/lat edge and the Web Mercator edge part by < 0.1 px at z 18: the known
lng/lat polygon is what the tiles show.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cached_property

import mercantile
import numpy as np
import shapely
from affine import Affine
from PIL import Image
from rasterio.features import rasterize
from shapely.geometry import Polygon, box

#: Background colour of every scene tile, RGB.
BACKGROUND = (235, 235, 220)

#: Metres per degree of latitude (mean), used only to lay shapes out in metres.
_M_PER_DEG = 111_320.0


@dataclass(frozen=True)
class Shape:
    """One object of the scene: `polygon` in lng/lat degrees EPSG:4326 (holes allowed), `rgb` its colour."""

    name: str
    polygon: Polygon
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """Shapes on a plain `background`. `shapes` is a tuple (immutable, shared between threads).

    Raises ValueError when names or colours repeat, a colour equals the background, a polygon is
    invalid, or two shapes overlap or touch.
    """

    shapes: tuple[Shape, ...]
    background: tuple[int, int, int] = BACKGROUND

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        names = [s.name for s in self.shapes]
        colours = [tuple(s.rgb) for s in self.shapes]
        if len(set(names)) != len(names):
            raise ValueError(f"shape names repeat: {names}")
        if len(set(colours)) != len(colours) or tuple(self.background) in colours:
            raise ValueError("shape colours must be distinct and differ from the background")
        if len(self.shapes) >= 2**16 - 1:
            raise ValueError("too many shapes")
        for s in self.shapes:
            if s.polygon.geom_type != "Polygon" or not s.polygon.is_valid or s.polygon.is_empty:
                raise ValueError(f"shape {s.name!r}: need one valid, non-empty Polygon")
        for i, a in enumerate(self.shapes):
            for b in self.shapes[i + 1:]:
                if a.polygon.intersects(b.polygon):
                    raise ValueError(f"shapes {a.name!r} and {b.name!r} overlap or touch")

    def shape(self, name: str) -> Shape:
        """The shape called `name`; KeyError if there is none."""
        for s in self.shapes:
            if s.name == name:
                return s
        raise KeyError(name)

    def colour_at(self, lng: float, lat: float) -> tuple[int, int, int]:
        """Colour of the scene at a lng/lat point (degrees EPSG:4326): a shape's rgb or the background."""
        for s in self.shapes:
            if s.polygon.contains(shapely.Point(lng, lat)):
                return tuple(s.rgb)
        return tuple(self.background)

    @cached_property
    def polygons_3857(self) -> tuple[Polygon, ...]:
        """Each shape's polygon with its vertices projected to EPSG:3857 metres (mercantile.xy)."""
        return tuple(polygon_3857(s.polygon) for s in self.shapes)

    @cached_property
    def palette(self) -> np.ndarray:
        """(len(shapes) + 1, 3) uint8: row 0 the background, row i + 1 the colour of shape i."""
        return np.array([self.background] + [s.rgb for s in self.shapes], np.uint8)


def polygon_3857(polygon: Polygon) -> Polygon:
    """`polygon` (lng/lat degrees EPSG:4326) with every vertex projected to EPSG:3857 metres."""
    return shapely.transform(polygon, lambda c: np.array([mercantile.xy(x, y) for x, y in c], np.float64))


def tile_px(lng: float, lat: float, z: int, x: int, y: int, tile_size: int = 256) -> tuple[float, float]:
    """(col, row) of a lng/lat point in tile (z, x, y): continuous px, rasterio convention.

    Pixel i spans [i, i + 1); (0, 0) is the tile's NW corner; points off the tile fall outside
    [0, tile_size). Uses mercantile.xy and mercantile.xy_bounds, like `render_tile`.

    >>> [round(v, 6) for v in tile_px(0.0, 0.0, 1, 1, 1)], [round(v, 6) for v in tile_px(90.0, 0.0, 1, 1, 1)]
    ([0.0, 0.0], [128.0, 0.0])
    """
    mx, my = mercantile.xy(lng, lat)
    b = mercantile.xy_bounds(x, y, z)
    return ((mx - b.left) / (b.right - b.left) * tile_size, (b.top - my) / (b.top - b.bottom) * tile_size)


def tile_affine(z: int, x: int, y: int, tile_size: int = 256) -> Affine:
    """Affine from tile px (col, row; rasterio convention) to EPSG:3857 metres, from mercantile.xy_bounds."""
    b = mercantile.xy_bounds(x, y, z)
    return Affine((b.right - b.left) / tile_size, 0.0, b.left, 0.0, -(b.top - b.bottom) / tile_size, b.top)


def shape_index(scene: Scene, z: int, x: int, y: int, tile_size: int = 256) -> np.ndarray:
    """(tile_size, tile_size) uint16 in tile px (row, col): 0 = background, i + 1 = scene.shapes[i]."""
    b = mercantile.xy_bounds(x, y, z)
    tile = box(b.left, b.bottom, b.right, b.top)
    hits = [(g, i + 1) for i, g in enumerate(scene.polygons_3857) if g.intersects(tile)]
    if not hits:
        return np.zeros((tile_size, tile_size), np.uint16)
    return rasterize(hits, out_shape=(tile_size, tile_size), fill=0, dtype="uint16",
                     transform=tile_affine(z, x, y, tile_size))


def render_array(scene: Scene, z: int, x: int, y: int, tile_size: int = 256) -> np.ndarray:
    """Tile (z, x, y) as (tile_size, tile_size, 3) uint8 RGB, rows north → south, tile px."""
    return scene.palette[shape_index(scene, z, x, y, tile_size)]


def render_tile(scene: Scene, z: int, x: int, y: int, tile_size: int = 256) -> Image.Image:
    """Tile (z, x, y) of the scene as an RGB Pillow image, tile_size px square, no anti-aliasing."""
    return Image.fromarray(render_array(scene, z, x, y, tile_size), "RGB")


def render_tile_png(scene: Scene, z: int, x: int, y: int, tile_size: int = 256) -> bytes:
    """Tile (z, x, y) as PNG bytes."""
    buf = io.BytesIO()
    render_tile(scene, z, x, y, tile_size).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def render_mosaic(scene: Scene, z: int, x0: int, y0: int, tiles: int = 4, tile_size: int = 256) -> np.ndarray:
    """`tiles` x `tiles` tiles from top-left tile (x0, y0), stitched: (n, n, 3) uint8 RGB, n = tiles * tile_size.

    Same pixel grid as a samgis window at (z, x0, y0): window px (col, row), rasterio convention.
    """
    rows = [np.hstack([render_array(scene, z, x0 + i, y0 + j, tile_size) for i in range(tiles)])
            for j in range(tiles)]
    return np.vstack(rows)


def pixel_area(shape: Shape, z: int, tile_size: int = 256) -> float:
    """Area of the shape in px² at zoom z: its EPSG:3857 area over the squared pixel size."""
    world = mercantile.xy_bounds(0, 0, 0)
    res = (world.right - world.left) / (tile_size * 2**z)
    return polygon_3857(shape.polygon).area / res**2


# --- the default scene ---------------------------------------------------------------------------

def _at(lng: float, lat: float, offsets_m) -> list[tuple[float, float]]:
    """lng/lat vertices from (east, north) offsets in metres around (lng, lat) (local flat scale)."""
    kx = 1.0 / (_M_PER_DEG * math.cos(math.radians(lat)))
    ky = 1.0 / _M_PER_DEG
    return [(lng + dx * kx, lat + dy * ky) for dx, dy in offsets_m]


def _rect(lng: float, lat: float, cx: float, cy: float, w: float, h: float) -> list[tuple[float, float]]:
    """Axis-aligned rectangle centred (cx, cy) m from (lng, lat), w x h metres, as a vertex list."""
    return _at(lng, lat, [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2),
                          (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)])


def _ell(lng: float, lat: float, cx: float, cy: float, w: float, h: float, arm: float) -> list:
    """An L: w x h m bounding box centred (cx, cy) m, its NE part cut away leaving arms `arm` m wide."""
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    return _at(lng, lat, [(x0, y0), (x1, y0), (x1, y0 + arm), (x0 + arm, y0 + arm), (x0 + arm, y1), (x0, y1)])


def _blob(lng: float, lat: float, cx: float, cy: float, radii: list[float]) -> list:
    """An irregular polygon: one vertex per radius (metres), at evenly spaced angles around (cx, cy) m."""
    n = len(radii)
    return _at(lng, lat, [(cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n))
                          for k, r in enumerate(radii)])


def _corner(lng: float, lat: float, dx: int = 0, dy: int = 0, z: int = 13) -> tuple[float, float]:
    """lng/lat of a tile corner: the NW corner of the z 13 tile holding (lng, lat), moved (dx, dy) z-tiles E/S."""
    t = mercantile.tile(lng, lat, 13)
    c = mercantile.ul(t.x * 2 ** (z - 13) + dx, t.y * 2 ** (z - 13) + dy, z)
    return (c.lng, c.lat)


_LAKE = [200, 175, 215, 190, 150, 185, 205, 170, 195, 160, 180, 210, 165, 190]
_ISLAND = [45, 38, 50, 35, 42, 48, 33]
_SMALL_LAKE = [150, 130, 160, 140, 115, 140, 155, 125, 145, 120, 135, 158, 124, 142]
_SMALL_ISLAND = [34, 28, 37, 26, 31, 36, 25]


def default_scene() -> Scene:
    """Buildings, lakes with islands and fields at mid latitude, the high north, the high south and the equator.

    Places (lng, lat): (11.25, 45.0), (20.0, 70.5), (-60.0, -72.0), (30.0, 0.5). Within a place each
    shape sits on its own z 13 tile corner, two z 13 tiles from the next, so at z 14–18 a samgis
    window centred on one shape's click never holds another shape's click, and every shape
    straddles four tiles. Exception: the first two shapes are a "near" pair of buildings ~230 m
    apart (distinct windows at z 17–18, one at z 16). The first five shapes are buildings, in four
    distinct z 16 windows. Each lake has one island: a hole of background colour. Every shape
    holds the centre of its bounding box, so a box drawn around it alone selects it.
    """
    mid, north, south, eq = (11.25, 45.0), (20.0, 70.5), (-60.0, -72.0), (30.0, 0.5)
    spec = [
        ("mid-building-a", (200, 30, 30), Polygon(_rect(*_corner(*mid), -25, 12, 110, 70))),
        ("mid-building-b", (30, 60, 200), Polygon(_ell(*_corner(*mid, 2, 0, z=18), 45, -10, 120, 90, 50))),
        ("north-building", (220, 120, 0), Polygon(_rect(*_corner(*north), 8, -6, 60, 40))),
        ("south-building", (150, 0, 150), Polygon(_ell(*_corner(*south), 5, 4, 55, 45, 25))),
        ("equator-building", (0, 150, 150), Polygon(_rect(*_corner(*eq), -12, 9, 130, 80))),
        ("mid-lake", (20, 90, 220), Polygon(_blob(*_corner(*mid, 2, 0), 10, -15, _LAKE),
                                            [_blob(*_corner(*mid, 2, 0), 60, 40, _ISLAND)])),
        ("mid-field", (110, 190, 40), Polygon(_ell(*_corner(*mid, 0, 2), 12, 8, 300, 240, 130))),
        ("mid-courtyard", (120, 40, 10), Polygon(_rect(*_corner(*mid, 2, 2), 7, -9, 150, 120),
                                                 [_rect(*_corner(*mid, 2, 2), -30, -9, 60, 50)])),
        ("north-lake", (0, 70, 180), Polygon(_blob(*_corner(*north, 2, 0), 6, 11, _SMALL_LAKE),
                                             [_blob(*_corner(*north, 2, 0), 50, 45, _SMALL_ISLAND)])),
        ("north-field", (160, 200, 0), Polygon(_rect(*_corner(*north, 0, 2), 9, 7, 300, 200))),
        ("north-building-b", (255, 0, 90), Polygon(_ell(*_corner(*north, 2, 2), -6, 5, 90, 70, 40))),
        ("south-lake", (40, 40, 160), Polygon(_blob(*_corner(*south, 2, 0), -8, 6, _SMALL_LAKE),
                                              [_blob(*_corner(*south, 2, 0), -50, 40, _SMALL_ISLAND)])),
        ("south-field", (90, 160, 90), Polygon(_rect(*_corner(*south, 0, 2), 11, -7, 280, 220))),
        ("equator-lake", (0, 110, 255), Polygon(_blob(*_corner(*eq, 2, 0), 9, 13, _LAKE),
                                                [_blob(*_corner(*eq, 2, 0), 70, -40, _ISLAND)])),
        ("equator-field", (200, 200, 0), Polygon(_ell(*_corner(*eq, 0, 2), -10, 6, 320, 260, 140))),
    ]
    return Scene(tuple(Shape(name, poly, rgb) for name, rgb, poly in spec))


# --- a scene for concept prompts ("find every red …") ------------------------------------------------

#: (name, exact RGB) of `concept_scene()`'s shapes: three of the colour engine's "red" family, two of its "green"
#: family, one blue and one yellow, every colour distinct (tests/support/colour_engine.py COLOUR_FAMILIES).
CONCEPT_COLOURS = {
    "red-roof": (200, 30, 30), "red-hall": (225, 45, 35), "red-shed": (190, 20, 45),
    "green-park": (40, 170, 40), "green-lawn": (60, 150, 50),
    "blue-pool": (30, 60, 220), "yellow-field": (230, 220, 40),
}

#: Where `concept_scene()` lies: all its shapes within ~800 m of this (lng, lat), one z 16 window holds them.
CONCEPT_PLACE = (-3.7, 40.42)


def concept_scene() -> Scene:
    """Seven shapes (`CONCEPT_COLOURS`), 100–200 m across, inside an ~800 m square around `CONCEPT_PLACE`, at
    least 60 m apart: a bbox around them all fits one 1024 px window at z 16 (~1.8 m/px there, so each shape is
    55–110 px across). Rectangles, Ls and a blob, every edge axis-aligned or short (see the module docstring)."""
    lng, lat = CONCEPT_PLACE
    c = CONCEPT_COLOURS
    spec = [
        ("red-roof", Polygon(_rect(lng, lat, -250, 250, 180, 120))),
        ("red-hall", Polygon(_ell(lng, lat, 150, 260, 200, 160, 70))),
        ("red-shed", Polygon(_blob(lng, lat, -260, -230, [90, 80, 95, 85, 75, 92, 88, 78, 94, 83]))),
        ("green-park", Polygon(_rect(lng, lat, 0, 0, 200, 150))),
        ("green-lawn", Polygon(_ell(lng, lat, 230, -230, 180, 170, 80))),
        ("blue-pool", Polygon(_rect(lng, lat, -270, 20, 110, 90))),
        ("yellow-field", Polygon(_rect(lng, lat, 20, -260, 140, 110))),
    ]
    return Scene(tuple(Shape(name, poly, c[name]) for name, poly in spec))


def concept_bbox(scene: Scene, margin_deg: float = 0.0015) -> tuple[float, float, float, float]:
    """(west, south, east, north) lng/lat degrees around every shape of `scene`, plus `margin_deg`."""
    w, s, e, n = shapely.union_all([sh.polygon for sh in scene.shapes]).bounds
    return w - margin_deg, s - margin_deg, e + margin_deg, n + margin_deg


def outline_scene() -> Scene:
    """Two shapes for vector post-processing tests, at mid latitude (11.25, 45.0) on their own z 13 tile corners:
    "tilted-building", a 64 × 36 m rectangle rotated 20° (its edges come out of the tiles as pixel staircases),
    and "round-pond", a disc of radius 45 m (a staircase circle)."""
    lng, lat = _corner(11.25, 45.0)
    theta = math.radians(20.0)
    rect = [(-32.0, -18.0), (32.0, -18.0), (32.0, 18.0), (-32.0, 18.0)]
    tilted = [(x * math.cos(theta) - y * math.sin(theta), x * math.sin(theta) + y * math.cos(theta)) for x, y in rect]
    pond_lng, pond_lat = _corner(11.25, 45.0, 2, 0)
    disc = [(45.0 * math.cos(2 * math.pi * k / 128), 45.0 * math.sin(2 * math.pi * k / 128)) for k in range(128)]
    return Scene((Shape("tilted-building", Polygon(_at(lng, lat, tilted)), (200, 30, 30)),
                  Shape("round-pond", Polygon(_at(pond_lng, pond_lat, disc)), (20, 90, 220))))

"""Vector post-processing of mask outlines: `regularize` (building-like outlines) and `smooth` (natural features).

Both work on shapely Polygons/MultiPolygons in a *pixel* frame: window px (or an AOI's global px at its zoom),
where one unit is one image pixel on both axes. Angles are then true angles on the ground (Web Mercator and a
raster's projected CRS are conformal/isotropic at the scale of one object) and every tolerance is in pixels, so
it means the same thing at every zoom. Never call them on EPSG:4326 degrees (a degree of longitude is not a
degree of latitude, so right angles would not stay right).

- `Regularize` → buildingregulariser (`regularize_geodataframe`): edges aligned to the outline's main
  direction (parallel / perpendicular, optionally 45°), near-circles made circles.
- `Smooth` → smoothify (`smoothify`): Chaikin corner cutting of the pixel staircase with the area kept, then
  a Douglas-Peucker pass (shapely) of `tolerance_px` to drop the vertices the curve does not need.

Only one of them applies to an answer (`choose` refuses both). They take the exact pixel outline (after
`min_area_px`) and simplify it themselves (`tolerance_px`), in place of the answer's `simplify_px`: both
libraries are made for raster staircases, and a Douglas-Peucker outline left 3 px jogs in regularized edges.
They run before the outline goes to EPSG:4326 (and, for areas of interest, before the clip to the AOI), so
areas are measured on the processed outline. Results are made valid (shapely `make_valid`, polygonal parts
only) and may be None when nothing polygonal is left.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Union

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from samgis.errors import InvalidRequest

log = logging.getLogger("samgis.vector")


@contextmanager
def _library_warnings(library: str):
    """Run a library call with its warnings (e.g. "returning original polygon") sent to the `samgis.vector` log
    instead of stderr; pandas' deprecation of `drop(inplace=True)`, which buildingregulariser 0.2.5 uses, is
    dropped (not ours to act on)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "inplace" in text:
            continue
        if text not in seen:
            seen.add(text)
            log.warning("%s: %s", library, text)

# Library versions are pinned in pyproject.toml (buildingregulariser==0.2.5, smoothify==0.3.3). Parameters and
# defaults below follow their READMEs / signatures:
#   buildingregulariser/coordinator.py `regularize_geodataframe(geodataframe, parallel_threshold=1.0,
#     simplify=True, simplify_tolerance=0.5, allow_45_degree=True, diagonal_threshold_reduction=15,
#     allow_circles=True, circle_threshold=0.9, num_cores=0, ...)` — "simplify_tolerance ... should be 2-3 x the
#     raster pixel size"; units are the input's CRS units (here px).
#   smoothify/coordinator.py `smoothify(geom, segment_length=None, num_cores=0, smooth_iterations=3,
#     merge_collection=True, merge_multipolygons=True, merge_holes=True, preserve_area=True,
#     area_tolerance=0.01)` — "segment_length: resolution of the original raster data in map units" (1 px here).


MIN_REGULARIZE_TOLERANCE_PX = 0.5
"""Smallest `Regularize.tolerance_px`: buildingregulariser segmentizes the outline to 5 × this before aligning
edges, so a tiny tolerance would multiply the vertices without bound (0.5 px already doubles the time of 2 px)."""
MAX_SMOOTH_ITERATIONS = 5
"""Largest `Smooth.iterations` (smoothify's README: typically 3-5); each pass doubles the curve's vertices."""
ANSWER_MAX_VERTICES = 50_000
"""Vertices of exact outlines one interactive answer may post-process (`check_budget`): the work runs on a worker
thread that a request deadline cannot stop, and costs ~0.1-0.2 ms per vertex (a whole-window mask of 162 blobby
parts, 45,900 vertices: 4.5 s to regularize, 7.5 s to smooth on the 2-core test machine)."""


def check_budget(geoms, op: "PostProcess | None", max_vertices: int | None = ANSWER_MAX_VERTICES) -> None:
    """`InvalidRequest` naming `op`'s option ("regularize" / "smooth") when the outlines `geoms` (iterable of
    geometries or None) hold more than `max_vertices` vertices in all; nothing when `op` or `max_vertices` is
    None."""
    if op is None or max_vertices is None:
        return
    n = int(sum(shapely.get_num_coordinates(g) for g in geoms if g is not None))
    if n > max_vertices:
        raise InvalidRequest(op.name, f"the outlines to {op.name} hold {n} vertices, over the {max_vertices} one "
                                      f"answer may take; zoom in, raise min_area_px or leave {op.name} off")


@dataclass(frozen=True)
class Regularize:
    """Square up building-like outlines (buildingregulariser). All lengths in px of the outline's frame.

    `tolerance_px`: the library's `simplify_tolerance` (Douglas-Peucker before edge alignment; its README
    advises 2-3 × the pixel size). `parallel_px`: its `parallel_threshold`, the distance under which nearly
    parallel neighbouring edges are merged (2 px: jogs of a rotated staircase go; the library's 1.0 left
    some). `diagonal_deg`: its `diagonal_threshold_reduction` (0-22.5°), larger = fewer 45° edges (22.5: only
    edges within 22.5° of 45° become diagonals). `circles`: an outline whose IoU with the circle of equal area
    exceeds `circle_iou` becomes that circle.

    The library's `allow_45_degree` stays True (its default): in 0.2.5, False leaves notches in the outline
    even of an exact axis-aligned box (box(0, 0, 60, 36) came back with 8 vertices), so it is not offered;
    `diagonal_deg=22.5` is the way to ask for fewer diagonals.
    """

    tolerance_px: float = 2.0
    parallel_px: float = 2.0
    diagonal_deg: float = 15.0
    circles: bool = True
    circle_iou: float = 0.9

    name = "regularize"

    def check(self, field: str = "regularize") -> "Regularize":
        """Self, or `InvalidRequest` naming `field.<parameter>` when a value is out of range."""
        _in_range(field, "tolerance_px", self.tolerance_px, MIN_REGULARIZE_TOLERANCE_PX, 50.0)
        _in_range(field, "parallel_px", self.parallel_px, 0.0, 50.0)
        _in_range(field, "diagonal_deg", self.diagonal_deg, 0.0, 22.5)
        _in_range(field, "circle_iou", self.circle_iou, 0.0, 1.0)
        return self

    def describe(self) -> dict:
        return {"regularize": asdict(self), "library": "buildingregulariser"}


@dataclass(frozen=True)
class Smooth:
    """Smooth pixel staircases into curves (smoothify), then drop needless vertices (shapely).

    `iterations`: Chaikin corner-cutting passes (smoothify's `smooth_iterations`; more = rounder).
    `tolerance_px`: Douglas-Peucker tolerance applied to the smoothed outline, px (0 keeps every vertex of
    the curve: hundreds per object). `preserve_area`: smoothify restores the outline's area after smoothing.
    The pixel size handed to smoothify (`segment_length`) is 1 px: the outline's frame is the pixel grid.
    """

    iterations: int = 3
    tolerance_px: float = 0.1
    preserve_area: bool = True

    name = "smooth"

    def check(self, field: str = "smooth") -> "Smooth":
        """Self, or `InvalidRequest` naming `field.<parameter>` when a value is out of range."""
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) \
                or not 1 <= self.iterations <= MAX_SMOOTH_ITERATIONS:
            raise InvalidRequest(f"{field}.iterations", f"must be an integer in [1, {MAX_SMOOTH_ITERATIONS}], "
                                                        f"got {self.iterations!r}")
        _in_range(field, "tolerance_px", self.tolerance_px, 0.0, 10.0)
        return self

    def describe(self) -> dict:
        return {"smooth": asdict(self), "library": "smoothify"}


PostProcess = Union[Regularize, Smooth]


def _in_range(field: str, name: str, value, lo: float, hi: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (lo < value if low_open else lo <= value) and value <= hi
    if not ok:
        raise InvalidRequest(f"{field}.{name}", f"must be a number in {'(' if low_open else '['}{lo:g}, {hi:g}], "
                                                f"got {value!r}")


def option(value, kind: type, field: str) -> PostProcess | None:
    """`value` as the `kind` (`Regularize` or `Smooth`) option: False/None → None (off), True → the defaults,
    a dict → those parameters over the defaults (unknown keys refused), an instance → itself; checked.
    Errors are `InvalidRequest` naming `field` (or `field.<parameter>`)."""
    if value is None or value is False:
        return None
    if value is True:
        return kind().check(field)
    if isinstance(value, kind):
        return value.check(field)
    if isinstance(value, dict):
        known = set(kind.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidRequest(f"{field}.{unknown[0]}", f"unknown parameter; known: {', '.join(sorted(known))}")
        return kind(**value).check(field)
    raise InvalidRequest(field, f"must be true, false or an object of parameters, got {type(value).__name__}")


def choose(regularize=None, smooth=None) -> PostProcess | None:
    """The one post-processing step of an answer from the `regularize` and `smooth` options (see `option`);
    None when both are off. Both on is refused (`InvalidRequest` naming "smooth"): squaring corners and rounding
    them undo each other, so no order of the two would be meaningful."""
    r = option(regularize, Regularize, "regularize")
    s = option(smooth, Smooth, "smooth")
    if r is not None and s is not None:
        raise InvalidRequest("smooth", "regularize and smooth cannot both be applied: choose one "
                                       "(regularize for buildings, smooth for natural features)")
    return r or s


def describe(op: PostProcess | None) -> dict | None:
    """What the `samgis` metadata reports: None, or {"regularize"|"smooth": parameters, "library": name}."""
    return None if op is None else op.describe()


def _polygonal(geom: BaseGeometry | None) -> Polygon | MultiPolygon | None:
    """Valid polygonal part of `geom` (make_valid, lines and points dropped), or None."""
    if geom is None or geom.is_empty:
        return None
    if not shapely.is_valid(geom):
        geom = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon | MultiPolygon) and not p.is_empty]
    parts = [q for p in parts for q in shapely.get_parts(p)]
    if not parts:
        return None
    out = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    return out if isinstance(out, Polygon | MultiPolygon) and not out.is_empty else None


def apply(geom: Polygon | MultiPolygon | None, op: PostProcess | None) -> Polygon | MultiPolygon | None:
    """`geom` (px frame: window or global pixels, see the module doc) regularized or smoothed by `op`; `geom`
    itself when `op` is None. The result is valid (or None when nothing polygonal is left) and stays in the
    same px frame."""
    if op is None or geom is None or geom.is_empty:
        return geom
    # Work near the origin: global px at high zooms are ~1e8, where the libraries' angle and area arithmetic
    # would lose digits; the shift is undone exactly (whole px).
    x0, y0 = np.floor(geom.bounds[:2])
    local = shapely.transform(geom, lambda xy: xy - (x0, y0))
    if isinstance(op, Regularize):
        out = _regularize(local, op)
    elif isinstance(op, Smooth):
        out = _smooth(local, op)
    else:
        raise TypeError(f"unknown post-processing {op!r}")
    out = _polygonal(out)
    return None if out is None else shapely.transform(out, lambda xy: xy + (x0, y0))


def apply_many(geoms: np.ndarray, op: PostProcess | None) -> np.ndarray:
    """(N,) object array of Polygon/MultiPolygon/None in one px frame → (N,) processed by `op` (see `apply`).
    Regularization runs as one buildingregulariser call for all of them (its per-call cost is ~15 ms)."""
    geoms = np.asarray(geoms, dtype=object)
    if op is None or len(geoms) == 0:
        return geoms
    if isinstance(op, Regularize):
        shifts = [None if g is None or g.is_empty else np.floor(g.bounds[:2]) for g in geoms]
        local = [g if d is None else shapely.transform(g, lambda xy, d=d: xy - d) for g, d in zip(geoms, shifts)]
        done = [_polygonal(g) for g in _regularize_many(local, op)]
        out = [g if g is None or d is None else shapely.transform(g, lambda xy, d=d: xy + d)
               for g, d in zip(done, shifts)]
        return np.array(out + [None], dtype=object)[:-1]
    return np.array([apply(g, op) for g in geoms] + [None], dtype=object)[:-1]


def _regularize(geom: Polygon | MultiPolygon, op: Regularize) -> BaseGeometry | None:
    return _regularize_many([geom], op)[0]


def _regularize_many(geoms: list, op: Regularize) -> list:
    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    keep = [i for i, g in enumerate(geoms) if g is not None and not g.is_empty]
    out: list = [None if g is None or g.is_empty else g for g in geoms]
    if not keep:
        return out
    frame = gpd.GeoDataFrame({"row": keep}, geometry=[geoms[i] for i in keep])
    with _library_warnings("buildingregulariser"):
        result = regularize_geodataframe(
            frame, parallel_threshold=op.parallel_px, simplify=True, simplify_tolerance=op.tolerance_px,
            allow_45_degree=True, diagonal_threshold_reduction=op.diagonal_deg, allow_circles=op.circles,
            circle_threshold=op.circle_iou, num_cores=1)  # num_cores=1: no process pool inside a server
    # The library explodes MultiPolygons into one row per part (attributes repeated): gather them back.
    for row, group in result.groupby("row"):
        parts = [p for g in group.geometry for p in shapely.get_parts(g) if not p.is_empty]
        out[int(row)] = _polygonal(shapely.union_all(parts)) if parts else None
    returned = set(result["row"].tolist())
    for i in keep:
        if i not in returned:  # every part dropped by the library's clean-up
            out[i] = None
    return out


def _smooth(geom: Polygon | MultiPolygon, op: Smooth) -> BaseGeometry | None:
    from smoothify import smoothify

    # merge_multipolygons/merge_holes off: parts of a mask are distinct 4-connected regions (they meet at most
    # at a corner) and stay distinct; parts that come to overlap after smoothing are unioned by `_polygonal`.
    # Invalid input is returned unchanged by smoothify with a warning; our outlines are valid.
    with _library_warnings("smoothify"):
        smoothed = smoothify(geom, segment_length=1.0, num_cores=1, smooth_iterations=op.iterations,
                             merge_collection=False, merge_multipolygons=False, merge_holes=False,
                             preserve_area=op.preserve_area)
    smoothed = _polygonal(smoothed)
    if smoothed is None or op.tolerance_px == 0:
        return smoothed
    return shapely.simplify(smoothed, op.tolerance_px, preserve_topology=True)

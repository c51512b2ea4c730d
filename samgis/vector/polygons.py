"""Masks → georeferenced polygons → GeoJSON features (RFC 7946).

Frames used here:

- *window px*: (col, row) in the mask's pixel grid, rasterio convention: pixel (row i, col j) covers
  x in [j, j+1), y in [i, i+1); y grows downwards.
- *EPSG:3857 metres*: what the window's affine maps window px to.
- *EPSG:4326 degrees*: (lng, lat), what every geometry returned by this module is in.

Polygonising and simplifying happen in window px, so `simplify_px` means the same thing at every
zoom; only the finished outline is moved to EPSG:3857 and then to EPSG:4326.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import chain

import affine
import cv2
import numpy as np
import pyproj
import rasterio.features
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from samgis.vector.postprocess import apply as postprocess_apply, apply_many as postprocess_apply_many, check_budget

COORD_DECIMALS = 7
"""Decimals kept in output lng/lat (1e-7 degree is about 1 cm)."""

_GEOD = pyproj.Geod(ellps="WGS84")


@lru_cache(maxsize=16)
def _to_4326(crs: object = 3857) -> pyproj.Transformer:
    """Transformer from `crs` (EPSG code, "EPSG:…" or WKT string) to EPSG:4326, (x, y) → (lng, lat)."""
    return pyproj.Transformer.from_crs(crs, 4326, always_xy=True)


def pixel_polygons(mask: np.ndarray) -> np.ndarray:
    """Outlines of the foreground of `mask`: (P,) object array of valid Polygons (holes kept), one per
    4-connected region.

    `mask`: (H, W) bool. Returned coordinates are window px (rasterio convention: pixel i spans
    [i, i+1)), so the outlines follow pixel edges exactly; only corners are kept. Background is never
    polygonised.

    How: OpenCV's border follower on the mask upsampled 2× traces the centres of the boundary sub-pixels,
    which lie half a sub-pixel inside the pixel edges; `(p + 1) // 2` maps each such centre p back to its
    pixel edge exactly. The follower joins regions that touch only at a corner (8-connectivity) into
    pinched, invalid outlines, so a mask with such a corner is polygonised by GDAL instead.

    >>> m = np.zeros((4, 4), bool); m[1:3, 1:4] = True
    >>> [p.bounds for p in pixel_polygons(m)]
    [(1.0, 1.0, 4.0, 3.0)]
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.empty(0, dtype=object)
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    tight = np.ascontiguousarray(mask[r0:r1, c0:c1])
    if _touches_at_a_corner(tight):
        return _gdal_polygons(tight, c0, r0)
    crop = cv2.copyMakeBorder(tight.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    up = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    corners, ring_of = _corners((np.concatenate(contours).reshape(-1, 2) + 1) // 2, lengths)
    corners = corners + np.array([c0 - 1, r0 - 1], dtype=np.int64)
    # RETR_CCOMP: a top-level contour is an outer boundary, its children (hierarchy[..., 3]) its holes.
    parent = hierarchy[0][:, 3]
    owner = np.where(parent < 0, np.arange(len(contours)), parent)
    order = np.lexsort((parent >= 0, owner))               # per polygon: shell first, then its holes
    ring_rank = np.empty_like(order)
    ring_rank[order] = np.arange(len(order))
    pts_order = np.argsort(ring_rank[ring_of], kind="stable")
    try:
        rings = shapely.linearrings(corners[pts_order].astype(float), indices=ring_rank[ring_of][pts_order])
        _, polygon_index = np.unique(owner[order], return_inverse=True)
        polys = shapely.polygons(rings, indices=polygon_index)
        if shapely.is_valid(polys).all():
            return polys
    except (ValueError, shapely.errors.GEOSException):  # a degenerate ring: never seen, but never fatal
        pass
    return _gdal_polygons(tight, c0, r0)


def _touches_at_a_corner(mask: np.ndarray) -> bool:
    """True if two foreground (equivalently, two background) pixels of (H, W) bool `mask` meet only at a
    corner: a 2 × 2 block holding a diagonal pair and nothing else."""
    a, b, c, d = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
    return bool(np.any((a == d) & (b == c) & (a != b)))


def _gdal_polygons(crop: np.ndarray, c0: int, r0: int) -> np.ndarray:
    """`pixel_polygons` of a (h, w) bool crop whose top-left pixel is window px (c0, r0), by GDAL's
    polygonizer (4-connected regions, valid output). Slower than the OpenCV path on clean masks, and
    it needs no repair where regions touch only at corners."""
    crop = np.ascontiguousarray(crop)
    offset = affine.Affine.translation(float(c0), float(r0))
    rings: list = []
    ring_polygon: list[int] = []
    for k, (geom, _) in enumerate(
        rasterio.features.shapes(crop.view(np.uint8), mask=crop, connectivity=4, transform=offset)
    ):
        rings.extend(geom["coordinates"])
        ring_polygon.extend([k] * len(geom["coordinates"]))
    lengths = [len(ring) for ring in rings]
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), dtype=float, count=2 * sum(lengths))
    linear_rings = shapely.linearrings(coords.reshape(-1, 2), indices=np.repeat(np.arange(len(rings)), lengths))
    return shapely.polygons(linear_rings, indices=ring_polygon)


def _neighbours(ring: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the previous and the next point of each point of closed rings stored back to back
    (`ring`: (N,) ring index per point, sorted; `lengths`: points per ring)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[ring]
    ends = starts + lengths[ring] - 1
    idx = np.arange(len(ring))
    return np.where(idx == starts, ends, idx - 1), np.where(idx == ends, starts, idx + 1)


def _corners(points: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed rings given as (N, 2) int points, ring k being the next `lengths[k]` rows, reduced to their
    corners: repeated points, then points on a straight run between their neighbours, dropped.
    Returns the kept (M, 2) points and (M,) ring index of each."""
    ring = np.repeat(np.arange(len(lengths)), lengths)
    prev, _ = _neighbours(ring, lengths)
    keep = np.any(points != points[prev], axis=1)
    points, ring = points[keep], ring[keep]
    prev, nxt = _neighbours(ring, np.bincount(ring, minlength=len(lengths)))
    d_in, d_out = points - points[prev], points[nxt] - points
    keep = d_in[:, 0] * d_out[:, 1] != d_in[:, 1] * d_out[:, 0]
    return points[keep], ring[keep]


def polygonal_part(geom: BaseGeometry) -> Polygon | MultiPolygon | None:
    """The Polygon/MultiPolygon made of `geom`'s polygonal parts (any frame), or None if it has none."""
    if isinstance(geom, Polygon | MultiPolygon):
        return None if geom.is_empty else geom
    polys = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon | MultiPolygon) and not g.is_empty]
    parts = [p for g in polys for p in shapely.get_parts(g)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def valid_polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon | None:
    """`geom` if it is valid, else its repair (parts unioned, holes subtracted), polygonal parts only."""
    if shapely.is_valid(geom):
        return polygonal_part(geom)
    return polygonal_part(shapely.make_valid(geom, method="structure", keep_collapsed=False))


def window_to_lnglat(geom: BaseGeometry, transform: affine.Affine, crs: object = 3857) -> BaseGeometry:
    """`geom` moved from window px to EPSG:4326 lng/lat degrees through `transform` (window px → `crs`, EPSG:3857
    for tile windows, a raster's own CRS for raster windows)."""
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    proj = _to_4326(crs)

    def to_lnglat(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0], xy[:, 1]
        lng, lat = proj.transform(a * col + b * row + c, d * col + e * row + f)
        return np.column_stack([lng, lat])

    return shapely.transform(geom, to_lnglat)


def rounded(geom: BaseGeometry, decimals: int = COORD_DECIMALS) -> Polygon | MultiPolygon | None:
    """`geom` (polygonal, any frame) with coordinates rounded to `decimals`, kept valid; None if nothing is left.

    Plain rounding almost never breaks validity; when it does, the geometry is snap-rounded onto
    the same grid (`shapely.set_precision`) and repaired instead.
    """
    snapped = shapely.transform(geom, lambda xy: np.round(xy, decimals))
    if not snapped.is_empty and shapely.is_valid(snapped):
        return polygonal_part(snapped)
    snapped = shapely.set_precision(geom, 10.0**-decimals)
    snapped = shapely.transform(snapped, lambda xy: np.round(xy, decimals))
    return None if snapped.is_empty else valid_polygonal(snapped)


def merge_overlapping(parts: np.ndarray) -> np.ndarray:
    """(P,) valid Polygons (any one frame) → the same area as (P',) Polygons that meet at most in points.

    Only the parts that share more than a point are unioned (connected groups of them), so a mask of
    thousands of specks is repaired in milliseconds where a MultiPolygon-wide `make_valid` takes seconds.
    """
    if len(parts) < 2:
        return parts
    tree = shapely.STRtree(parts)
    i, j = tree.query(parts, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    if len(i):
        shared = shapely.intersection(parts[i], parts[j])
        more_than_points = shapely.get_dimensions(shared) >= 1
        i, j = i[more_than_points], j[more_than_points]
    if len(i) == 0:
        return parts
    n = len(parts)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    out = []
    for g in np.unique(group):
        members = parts[group == g]
        out.extend(shapely.get_parts(members[0] if len(members) == 1 else shapely.union_all(members)))
    return np.array([p for p in out if isinstance(p, Polygon) and not p.is_empty], dtype=object)


def simplify_parts(parts: np.ndarray, tolerance: float) -> np.ndarray:
    """(P,) Polygons simplified one by one with tolerance `tolerance` (same frame), topology kept.

    Part by part: GEOS's topology-preserving simplifier on one MultiPolygon compares every part with every
    other (seconds for a speckled mask); parts that come to overlap are merged later by the repair.
    Plain Douglas-Peucker first (about 20× faster on a pixel staircase); a part it turned into something
    else than a valid Polygon with as many holes, and every speck of fewer than 16 coordinates, gets the
    topology-preserving one.
    """
    out = np.empty(len(parts), dtype=object)
    small = shapely.get_num_coordinates(parts) < 16  # specks: Douglas-Peucker would mostly erase them
    big = ~small
    fast = shapely.simplify(parts[big], tolerance, preserve_topology=False)
    redo = (shapely.get_type_id(fast) != shapely.GeometryType.POLYGON) | shapely.is_empty(fast) \
        | ~shapely.is_valid(fast) | (shapely.get_num_interior_rings(fast) != shapely.get_num_interior_rings(parts[big]))
    out[big] = fast
    small[np.flatnonzero(big)[redo]] = True
    out[small] = shapely.simplify(parts[small], tolerance, preserve_topology=True)
    return out


def mask_to_geometry(
    mask: np.ndarray, transform: affine.Affine, simplify_px: float = 1.0, min_area_px: float = 0.0,
    crs: object = 3857, postprocess=None,
) -> Polygon | MultiPolygon | None:
    """The foreground of `mask` as one valid Polygon/MultiPolygon in EPSG:4326 lng/lat degrees.

    `mask`: (H, W) bool, window px (rasterio convention: pixel i spans [i, i+1)).
    `transform`: affine from window px to `crs` (default EPSG:3857 metres).
    `simplify_px`: Douglas-Peucker tolerance in window px, topology preserved; 0 keeps the exact
    pixel staircase. `min_area_px`: parts (not holes) with fewer pixels than this are dropped.
    `postprocess`: a `samgis.vector.postprocess` `Regularize` or `Smooth` (None: off), applied in window px
    after `min_area_px`, before the move to lng/lat. It takes the exact pixel outline (both libraries are made
    for raster staircases; a Douglas-Peucker outline left 3 px jogs in regularized edges) and its own
    `tolerance_px` takes the place of `simplify_px`, which is then not applied.
    Exterior rings are counter-clockwise, holes clockwise, coordinates rounded to 7 decimals.
    Returns None when nothing is left.
    """
    geom = mask_to_px_geometry(mask, simplify_px=0.0 if postprocess is not None else simplify_px,
                               min_area_px=min_area_px)
    geom = postprocess_apply(geom, postprocess)
    return px_geometry_to_lnglat(geom, transform, crs)


def mask_to_px_geometry(mask: np.ndarray, simplify_px: float = 1.0, min_area_px: float = 0.0
                        ) -> Polygon | MultiPolygon | None:
    """The foreground of (H, W) bool `mask` as one valid Polygon/MultiPolygon in window px (rasterio
    convention), `min_area_px` and `simplify_px` applied as in `mask_to_geometry`; None when nothing is left."""
    parts = pixel_polygons(mask)
    if min_area_px > 0:
        parts = parts[shapely.area(parts) >= min_area_px]
    if len(parts) == 0:
        return None
    if simplify_px > 0:
        parts = simplify_parts(parts, simplify_px)
        parts = parts[~shapely.is_empty(parts)]
        if len(parts) == 0:
            return None
        parts = merge_overlapping(parts)
    geom: BaseGeometry = parts[0] if len(parts) == 1 else shapely.multipolygons(parts)
    if simplify_px > 0:
        geom = valid_polygonal(geom)
    return geom


def px_geometry_to_lnglat(geom: Polygon | MultiPolygon | None, transform: affine.Affine, crs: object = 3857
                          ) -> Polygon | MultiPolygon | None:
    """A valid window-px geometry (or None) → EPSG:4326 lng/lat through `transform` (window px → `crs`), rounded
    to 7 decimals, exteriors counter-clockwise; None when nothing is left."""
    if geom is None:
        return None
    geom = rounded(window_to_lnglat(geom, transform, crs))
    if geom is None:
        return None
    return shapely.orient_polygons(geom, exterior_cw=False)


def geodesic_area_m2(geom: BaseGeometry) -> float:
    """Area in square metres on the WGS84 ellipsoid of `geom` (EPSG:4326 lng/lat degrees), >= 0."""
    area, _ = _GEOD.geometry_area_perimeter(geom)
    return abs(float(area))


def _polygon_coordinates(geom: Polygon | MultiPolygon) -> list[list[list[list[float]]]]:
    """Per polygon, per ring, the [x, y] lists of `geom` (one coordinate export, then list slicing)."""
    polys = shapely.get_parts(geom)
    rings, ring_polygon = shapely.get_rings(polys, return_index=True)
    flat = shapely.get_coordinates(rings).tolist()
    ends = np.cumsum(shapely.get_num_coordinates(rings)).tolist()
    out: list[list] = [[] for _ in range(len(polys))]
    start = 0
    for k, end in zip(ring_polygon.tolist(), ends):
        out[k].append(flat[start:end])
        start = end
    return out


def geojson_geometry(geom: Polygon | MultiPolygon) -> dict:
    """GeoJSON geometry dict of a Polygon/MultiPolygon, nested lists (not tuples) of floats.

    >>> geojson_geometry(Polygon([(0, 0), (1, 0), (1, 1)]))
    {'type': 'Polygon', 'coordinates': [[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]]}
    """
    coordinates = _polygon_coordinates(geom)
    if isinstance(geom, MultiPolygon):
        return {"type": "MultiPolygon", "coordinates": coordinates}
    return {"type": "Polygon", "coordinates": coordinates[0]}


def masks_to_features(
    masks: np.ndarray,
    scores: np.ndarray,
    transform: affine.Affine,
    simplify_px: float = 1.0,
    properties: dict | None = None,
    min_area_px: float = 0.0,
    first_index: int = 0,
    crs: object = 3857,
    postprocess=None,
    postprocess_max_vertices: int | None = None,
) -> list[dict]:
    """One GeoJSON Feature per non-empty mask, geometry in EPSG:4326 lng/lat degrees.

    `masks`: (M, H, W) bool, window px (rasterio convention). `scores`: (M,) float.
    `transform`: window px → `crs` (default EPSG:3857 metres). Properties of feature i are
    `{"mask_index": first_index + i, "score", "area_m2" (geodesic), **properties}`.
    Masks that are empty (or empty after `min_area_px`) give no feature. `postprocess`: see
    `mask_to_geometry` (all masks' outlines go through it in one batch); `area_m2` is measured on the
    processed outline. `postprocess_max_vertices`: see `px_geometries_to_features`.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if masks.ndim != 3 or len(scores) != len(masks):
        raise ValueError(f"masks must be (M, H, W) with M scores; got {masks.shape} and {scores.shape}")
    simplify = 0.0 if postprocess is not None else simplify_px
    geoms = [mask_to_px_geometry(mask, simplify_px=simplify, min_area_px=min_area_px) for mask in masks]
    return px_geometries_to_features(geoms, scores, transform, properties=properties, first_index=first_index,
                                     crs=crs, postprocess=postprocess,
                                     postprocess_max_vertices=postprocess_max_vertices)


def px_geometries_to_features(
    geoms: list,
    scores,
    transform: affine.Affine,
    properties: dict | None = None,
    first_index: int = 0,
    crs: object = 3857,
    postprocess=None,
    per_feature: list[dict] | None = None,
    postprocess_max_vertices: int | None = None,
) -> list[dict]:
    """`masks_to_features` from (M,) window-px outlines (valid Polygon/MultiPolygon or None, as
    `mask_to_px_geometry` makes them) and (M,) scores: `postprocess` (one batch), EPSG:4326, area, properties
    (`per_feature[i]` added to feature i's). None outlines give no feature; `mask_index` counts them.
    `postprocess_max_vertices`: refuse (`InvalidRequest` naming the option) outlines holding more vertices in all
    (`samgis.vector.postprocess.check_budget`); None = no bound."""
    if postprocess is not None:
        check_budget(geoms, postprocess, postprocess_max_vertices)
        geoms = list(postprocess_apply_many(np.array(list(geoms) + [None], dtype=object)[:-1], postprocess))
    features = []
    for i, (geom, score) in enumerate(zip(geoms, np.asarray(scores, dtype=float).reshape(-1))):
        geom = px_geometry_to_lnglat(geom, transform, crs)
        if geom is None:
            continue
        props = {
            "mask_index": first_index + i,
            "score": round(float(score), 4),
            "area_m2": round(geodesic_area_m2(geom), 2),
            **(properties or {}),
            **(per_feature[i] if per_feature is not None else {}),
        }
        features.append({"type": "Feature", "geometry": geojson_geometry(geom), "properties": props})
    return features


def drop_near_duplicates(features: list[dict], iou_thresh: float) -> list[dict]:
    """`features` without those whose geometry overlaps an earlier kept one with IoU ≥ `iou_thresh`.

    `features`: GeoJSON Features with Polygon/MultiPolygon geometries in EPSG:4326 lng/lat degrees,
    best first (an earlier feature always wins). IoU is taken in degrees: across one feature the
    lng/lat scale hardly changes, so it matches the IoU in metres closely. Order is kept.

    >>> sq = lambda x: {"type": "Feature", "properties": {}, "geometry": geojson_geometry(shapely.box(x, 0, x + 1, 1))}
    >>> len(drop_near_duplicates([sq(0), sq(0.01), sq(5)], 0.9))
    2
    """
    kept: list[BaseGeometry] = []
    out: list[dict] = []
    for f in features:
        g = shape(f["geometry"])
        if kept:
            others = np.array(kept, dtype=object)
            near = others[shapely.intersects(others, g)]
            if len(near):
                inter = shapely.area(shapely.intersection(near, g))
                union = shapely.area(near) + g.area - inter
                if np.any(inter >= iou_thresh * union):
                    continue
        kept.append(g)
        out.append(f)
    return out


def feature_collection(features: list[dict], **foreign_members) -> dict:
    """A GeoJSON FeatureCollection dict of `features`, with `foreign_members` as extra top-level keys.

    >>> feature_collection([], samgis={"zoom": 17})
    {'type': 'FeatureCollection', 'features': [], 'samgis': {'zoom': 17}}
    """
    return {"type": "FeatureCollection", "features": list(features), **foreign_members}

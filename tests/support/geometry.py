"""Comparing returned GeoJSON with known geometry (lng/lat degrees)."""

from __future__ import annotations

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry


def union_geometry(fc: dict) -> BaseGeometry:
    """The union of a FeatureCollection's geometries; fails the test when it has none."""
    geoms = [shape(f["geometry"]) for f in fc["features"]]
    assert geoms, "no polygon returned"
    return shapely.union_all(geoms)


def iou(a: BaseGeometry, b: BaseGeometry) -> float:
    """Intersection over union of two polygonal geometries in the same frame."""
    return a.intersection(b).area / a.union(b).area


def interior_angles_deg(poly) -> "np.ndarray":
    """(V,) interior angle at each vertex of `poly`'s exterior ring, degrees (any frame whose two axes share
    one unit: px or metres, not lng/lat degrees)."""
    import numpy as np

    c = np.asarray(poly.exterior.coords)[:-1]
    a, b = np.roll(c, 1, axis=0) - c, np.roll(c, -1, axis=0) - c
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def turning_angles_deg(poly) -> "np.ndarray":
    """(V,) absolute change of direction at each vertex of `poly`'s exterior ring, degrees (a pixel staircase
    turns by 90° at every vertex; a smooth curve by a few). Same frame rule as `interior_angles_deg`."""
    import numpy as np

    c = np.asarray(poly.exterior.coords)[:-1]
    a, b = c - np.roll(c, 1, axis=0), np.roll(c, -1, axis=0) - c
    return np.degrees(np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(axis=1))))

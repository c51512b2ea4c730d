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

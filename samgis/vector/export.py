"""FeatureCollection dicts (EPSG:4326 lng/lat) → GeoJSON bytes / GeoPackage files.

`validate_feature_collection` checks user-supplied GeoJSON before it reaches a writer, so a bad
upload is a 422 naming the feature and the problem, never a crash inside GDAL.
"""

from __future__ import annotations

import json
import math
import tempfile
from numbers import Real
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import shape

from samgis.errors import InvalidRequest

GEOMETRY_TYPES = ("Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon")
"""GeoJSON geometry types accepted for export (all of them map onto GeoPackage geometry types)."""

# Nesting depth of "coordinates" per geometry type: 1 = position, 2 = list of positions, ...
_DEPTH = {"Point": 1, "LineString": 2, "MultiPoint": 2, "Polygon": 3, "MultiLineString": 3, "MultiPolygon": 4}
_RESERVED_COLUMNS = {"fid", "geom", "geometry"}


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_position(pos, where: str) -> None:
    if not isinstance(pos, list | tuple) or len(pos) not in (2, 3) or not all(_is_number(v) for v in pos):
        shown = repr(pos)[:60]
        raise InvalidRequest(where, f"a position must be [lng, lat] or [lng, lat, z] of finite numbers, got {shown}")
    lng, lat = pos[0], pos[1]
    if not (-180.0 <= lng <= 180.0 and -90.0 <= lat <= 90.0):
        raise InvalidRequest(
            where, f"position {list(pos)!r} is outside lng [-180, 180] / lat [-90, 90]; GeoJSON is EPSG:4326 lng/lat"
        )


def _check_coordinates(coords, depth: int, where: str) -> None:
    if depth == 1:
        _check_position(coords, where)
        return
    if not isinstance(coords, list | tuple):
        raise InvalidRequest(where, f"expected an array nested {depth} deep, got {type(coords).__name__}")
    for i, item in enumerate(coords):
        _check_coordinates(item, depth - 1, f"{where}[{i}]")


def _check_parts(geom_type: str, coords, where: str) -> None:
    """Minimum sizes: lines need 2 positions, rings 4 with first == last."""
    lines = {"LineString": [coords], "MultiLineString": coords}.get(geom_type, [])
    for i, line in enumerate(lines):
        if len(line) < 2:
            raise InvalidRequest(where, f"line {i} has {len(line)} positions; at least 2 are needed")
    polygons = {"Polygon": [coords], "MultiPolygon": coords}.get(geom_type, [])
    for i, rings in enumerate(polygons):
        if not rings:
            raise InvalidRequest(where, f"polygon {i} has no rings")
        for j, ring in enumerate(rings):
            if len(ring) < 4 or list(ring[0]) != list(ring[-1]):
                raise InvalidRequest(where, f"polygon {i} ring {j} must be closed with at least 4 positions")


def validate_geometry(geometry, where: str) -> None:
    """Raise InvalidRequest(where…) unless `geometry` is a well-formed GeoJSON geometry of GEOMETRY_TYPES."""
    if not isinstance(geometry, dict):
        raise InvalidRequest(where, "missing geometry" if geometry is None else "geometry must be a GeoJSON object")
    geom_type = geometry.get("type")
    if geom_type not in GEOMETRY_TYPES:
        expected = ", ".join(GEOMETRY_TYPES)
        raise InvalidRequest(f"{where}.type", f"unsupported geometry type {geom_type!r}; expected one of {expected}")
    if "coordinates" not in geometry:
        raise InvalidRequest(f"{where}.coordinates", "missing")
    coords = geometry["coordinates"]
    _check_coordinates(coords, _DEPTH[geom_type], f"{where}.coordinates")
    if geom_type != "Point" and len(coords) == 0:
        raise InvalidRequest(f"{where}.coordinates", f"empty {geom_type}")
    _check_parts(geom_type, coords, f"{where}.coordinates")


def _check_json_numbers(value, where: str) -> None:
    """Reject NaN / Infinity anywhere in `value` (they are not JSON and break the writers)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(where, f"{value} is not a valid JSON number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_numbers(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json_numbers(item, f"{where}[{i}]")


def validate_feature_collection(fc) -> None:
    """Raise InvalidRequest naming the field (e.g. "features[3].geometry.type") unless `fc` is exportable.

    Exportable: a GeoJSON FeatureCollection with at least one Feature, each with a well-formed
    geometry of GEOMETRY_TYPES in EPSG:4326 lng/lat, properties that are an object or null, and no
    NaN / Infinity anywhere.
    Geometric validity (self-intersections) is not checked: GeoPackage stores such shapes as-is.
    """
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection":
        raise InvalidRequest("type", "expected a GeoJSON object with type 'FeatureCollection'")
    features = fc.get("features")
    if not isinstance(features, list):
        raise InvalidRequest("features", "must be an array of GeoJSON Features")
    if not features:
        raise InvalidRequest("features", "no features to export")
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise InvalidRequest(f"{where}.type", "expected a GeoJSON object with type 'Feature'")
        validate_geometry(feature.get("geometry"), f"{where}.geometry")
        props = feature.get("properties")
        if props is not None and not isinstance(props, dict):
            raise InvalidRequest(f"{where}.properties", "must be an object or null")
        for key, value in feature.items():
            if key != "geometry":
                _check_json_numbers(value, f"{where}.{key}")
    for key, value in fc.items():
        if key not in ("type", "features"):
            _check_json_numbers(value, key)


def _column_name(key: str, taken: set[str]) -> str:
    """A GeoPackage-safe column name for property `key`: non-empty, not reserved, unique ignoring case."""
    name = str(key).strip() or "field"
    if name.lower() in _RESERVED_COLUMNS:
        name = f"{name}_"
    base, n = name, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name.lower())
    return name


def _as_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _column(values: list) -> pd.Series:
    """One typed column from one property's values (None where absent); mixed types become text."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pd.Series(values, dtype="string")
    if kinds == {bool}:
        return pd.Series(values, dtype="boolean")
    if kinds == {int}:
        if all(-(2**63) <= v < 2**63 for v in values if v is not None):
            return pd.Series(values, dtype="Int64")
    elif kinds <= {int, float}:
        return pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
    if kinds == {str}:
        return pd.Series(values, dtype="string")
    return pd.Series([_as_text(v) for v in values], dtype="string")


def feature_frame(fc: dict) -> gpd.GeoDataFrame:
    """`fc` (validated) as a GeoDataFrame in EPSG:4326, one typed column per property key."""
    features = fc["features"]
    keys: dict[str, None] = {}
    for feature in features:
        keys.update(dict.fromkeys(feature.get("properties") or {}))
    taken: set[str] = set()
    columns = {
        _column_name(key, taken): _column([(f.get("properties") or {}).get(key) for f in features]) for key in keys
    }
    geometry = [shape(f["geometry"]) for f in features]
    return gpd.GeoDataFrame(columns, geometry=geometry, crs="EPSG:4326")


def write_geopackage(fc: dict, path: str | Path, layer: str = "segments", crs: str | None = None) -> Path:
    """Write `fc` (EPSG:4326 lng/lat FeatureCollection) as layer `layer` of a GeoPackage at `path`, in `crs`
    (anything pyproj reads: "EPSG:32632", WKT; None = EPSG:4326); the layer's CRS is set, so QGIS places it."""
    validate_feature_collection(fc)
    if not layer or not str(layer).strip():
        raise InvalidRequest("layer", "layer name must not be empty")
    path = Path(path)
    frame = feature_frame(fc)
    if crs is not None:
        frame = frame.to_crs(crs)
    frame.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
    return path


def geopackage_bytes(fc: dict, layer: str = "segments", crs: str | None = None) -> bytes:
    """`fc` (EPSG:4326 lng/lat FeatureCollection) as the bytes of a one-layer GeoPackage file in `crs`."""
    with tempfile.TemporaryDirectory(prefix="samgis-gpkg-") as tmp:
        return write_geopackage(fc, Path(tmp) / "export.gpkg", layer=layer, crs=crs).read_bytes()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def geojson_bytes(fc: dict) -> bytes:
    """`fc` as compact UTF-8 JSON (numpy scalars and arrays converted; NaN/Infinity rejected)."""
    return json.dumps(fc, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default).encode()

"""Masks → georeferenced polygons (EPSG:4326) → GeoJSON / GeoPackage."""

from samgis.vector.export import (
    geojson_bytes,
    geopackage_bytes,
    validate_feature_collection,
    write_geopackage,
)
from samgis.vector.polygons import (
    feature_collection,
    geodesic_area_m2,
    mask_to_geometry,
    masks_to_features,
)

__all__ = [
    "feature_collection",
    "geodesic_area_m2",
    "geojson_bytes",
    "geopackage_bytes",
    "mask_to_geometry",
    "masks_to_features",
    "validate_feature_collection",
    "write_geopackage",
]

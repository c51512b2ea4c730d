"""POST /v1/export?format=gpkg|geojson: a FeatureCollection in, a file QGIS opens out."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

import pyproj
from fastapi import APIRouter, Body, Depends, Query, Response

from api.resources import Resources, get_resources
from samgis.errors import InvalidRequest
from samgis.geo.readers import source_crs
from samgis.vector.export import geojson_bytes, geopackage_bytes, validate_feature_collection

router = APIRouter(tags=["export"])

MEDIA = {"gpkg": "application/geopackage+sqlite3", "geojson": "application/geo+json"}


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:80] or "samgis_segments"


@router.post("/v1/export", summary="Convert a FeatureCollection to a GeoPackage or GeoJSON file",
             response_class=Response, responses={200: {"content": {MEDIA["gpkg"]: {}, MEDIA["geojson"]: {}}}})
async def export(fc: dict[str, Any] = Body(..., description="RFC 7946 FeatureCollection"),
                 format: Literal["gpkg", "geojson"] = Query("gpkg"),
                 name: str = Query("samgis_segments", description="file and layer name"),
                 crs: str | None = Query(None, max_length=200, description=(
                     "GeoPackage CRS: an EPSG code such as EPSG:32632, or \"source\" for the CRS of the source the "
                     "segments came from (a raster's own CRS; EPSG:3857 for tile sources); default EPSG:4326")),
                 res: Resources = Depends(get_resources)) -> Response:
    validate_feature_collection(fc)
    base = safe_name(name)
    target = None if crs is None else export_crs(crs, fc, res)
    if format == "geojson" and target is not None:
        raise InvalidRequest("crs", "GeoJSON is always EPSG:4326 lng/lat (RFC 7946); use format=gpkg for another CRS")
    if format == "gpkg":
        data = await asyncio.to_thread(geopackage_bytes, fc, base, target)
    else:
        data = geojson_bytes(fc)
    return Response(data, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{base}.{format}"'})


def export_crs(crs: str, fc: dict, res: Resources) -> str:
    """The CRS to write: `crs` checked by pyproj, or for "source" the CRS of the source named in the
    FeatureCollection (`samgis.source` of a /v1/segment answer, else the features' `source` property)."""
    if crs == "source":
        meta = fc.get("samgis") if isinstance(fc.get("samgis"), dict) else {}
        names = {meta.get("source")} if meta.get("source") else {
            (f.get("properties") or {}).get("source") for f in fc["features"]} - {None}
        if len(names) != 1:
            raise InvalidRequest("crs", "crs=source needs segments of one source (samgis.source or the features' "
                                        f"source property); found {len(names)} sources")
        return source_crs(res.sources.get(str(names.pop())))
    try:
        target = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        raise InvalidRequest("crs", f"{crs[:60]!r} is not a CRS pyproj knows (use e.g. EPSG:32632 or source)") from None
    try:  # e.g. a CRS of another planet: no transformation from EPSG:4326
        pyproj.Transformer.from_crs(4326, target, always_xy=True).transform(0.0, 0.0, errcheck=False)
    except pyproj.exceptions.ProjError:
        raise InvalidRequest("crs", f"{crs[:60]!r}: no transformation from EPSG:4326 to it") from None
    return target.to_wkt()

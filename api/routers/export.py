"""POST /v1/export?format=gpkg|geojson: a FeatureCollection in, a file QGIS opens out."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from fastapi import APIRouter, Body, Query, Response

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
                 name: str = Query("samgis_segments", description="file and layer name")) -> Response:
    validate_feature_collection(fc)
    base = safe_name(name)
    if format == "gpkg":
        data = await asyncio.to_thread(geopackage_bytes, fc, base)
    else:
        data = geojson_bytes(fc)
    return Response(data, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="{base}.{format}"'})

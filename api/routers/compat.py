"""POST /infer_samgis: SamGIS's request payload, answered in SamGIS's envelope.

SamGIS clients keep working unchanged; the geometry inside is ours (foreground only, correct georeferencing).
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends

from api.models import SamgisPoint, SamgisRect, SamgisRequest
from api.resources import Resources, get_resources, get_service
from samgis.service import BBox, BoxPrompt, PointPrompt, SegmentQuery, SegmentService

router = APIRouter(tags=["compatibility"])

# SamGIS names its sources loosely; map its names to ours when they are not configured names already.
SAMGIS_SOURCE_ALIASES = {
    "openstreetmap": "OpenStreetMap.Mapnik",
    "openstreetmap.mapnik": "OpenStreetMap.Mapnik",
    "satellite": "Esri.WorldImagery",
    "esri.worldimagery": "Esri.WorldImagery",
}


def source_name(source_type: str, res: Resources) -> str:
    if source_type in res.sources:
        return source_type
    return SAMGIS_SOURCE_ALIASES.get(source_type.strip().lower(), source_type)


@router.post("/infer_samgis", summary="SamGIS-compatible inference",
             description="Body and answer as SamGIS's lambda: `{\"body\": \"<JSON string>\"}` whose `output` holds "
                         "`n_predictions`, `geojson` and `n_shapes_geojson`.")
async def infer_samgis(req: SamgisRequest, service: SegmentService = Depends(get_service),
                       res: Resources = Depends(get_resources)) -> dict:
    t0 = time.perf_counter()
    points = [PointPrompt(p.data.lng, p.data.lat, p.label) for p in req.prompt if isinstance(p, SamgisPoint)]
    boxes = [BoxPrompt(r.data.sw.lng, r.data.sw.lat, r.data.ne.lng, r.data.ne.lat)
             for r in req.prompt if isinstance(r, SamgisRect)]
    query = SegmentQuery(
        bbox=BBox(req.bbox.sw.lng, req.bbox.sw.lat, req.bbox.ne.lng, req.bbox.ne.lat),
        zoom=int(req.zoom), source=source_name(req.source_type, res), points=points, boxes=boxes,
    )
    fc = await service.segment(query)
    meta = fc.pop("samgis")
    n_shapes = sum(1 if f["geometry"]["type"] == "Polygon" else len(f["geometry"]["coordinates"])
                   for f in fc["features"])
    body = {
        "duration_run": round(time.perf_counter() - t0, 4),
        "output": {
            "n_predictions": len({f["properties"]["mask_index"] for f in fc["features"]}),
            "geojson": json.dumps(fc),
            "n_shapes_geojson": n_shapes,
        },
        "samgis": meta,
    }
    return {"body": json.dumps(body)}

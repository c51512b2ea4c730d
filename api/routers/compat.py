"""POST /infer_samgis: SamGIS's request payload, answered as SamGIS's FastAPI backend answers it.

The contract follows SamGIS's own code (github.com/trincadev/samgis-be, `app.py` and, before the move to the
samgis_web package, `wrappers/fastapi_wrapper.py`, `samgis/prediction_api/predictors.py`,
`samgis/io/geo_helpers.py`; github.com/trincadev/samgis_core `samgis_core/prediction_api/sam_onnx_inference.py`
and `sam_onnx2.py`):

- 200: `{"body": "<JSON string>"}`, the string holding `{"duration_run": seconds, "output": {"n_predictions",
  "geojson", "n_shapes_geojson"}}` (`geojson` itself a JSON string). SamGIS decodes all prompts in one decoder
  call and ORs the masks into one uint8 raster (`mask[m > 0.0] = 255`); `n_predictions` is how many masks the
  decoder returned. The raster is vectorized with `rasterio.features.shapes(mask, mask=None)` into a GeoPandas
  FeatureCollection, one Polygon feature per shape, `"id": "<n>"`, properties `{"raster_val": 255.0}`;
  `n_shapes_geojson` is the number of those features.
- A prompt of only exclude points is decoded like any other (no check refuses it).
- Errors: 422 `{"msg": "Error - Unprocessable Entity"}` for a body that does not validate (an unknown
  `source_type` included), 500 `{"msg": "Error - Internal Server Error"}` otherwise (samgis-be
  `tests/test_app.py`).

Where this differs, on purpose: SamGIS's `shapes(..., mask=None)` also returns the background (raster value 0)
as polygons; here only the foreground (255) is returned, and `n_shapes_geojson` counts exactly the features
sent. The geometry is ours (correct georeferencing, light simplification). Each feature's properties add
`area_m2`, `zoom`, `model`, `source` and `attribution` to SamGIS's `raster_val`. Our queries decode one mask per
box (each with all points), or one for points only, so `n_predictions` is that count. Error bodies add our
`detail` / `field` / `error` keys next to SamGIS's `msg`, and statuses other than 422/500 keep their meaning
(502/504 tile source, 503 model not ready). `body` also carries a `samgis` member (window, cache, timings).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus

from fastapi import APIRouter, Depends, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.errors import error_body, error_headers, internal_detail, log_error, status_for
from api.request_id import request_id_of
from api.models import SamgisPoint, SamgisRect, SamgisRequest
from api.resources import Resources, get_resources, get_service
from samgis.errors import SamgisError
from samgis.services.map_query import BBox, BoxPrompt, PointPrompt, SegmentQuery
from samgis.services.map_segment import SegmentService

log = logging.getLogger("samgis.api")

FOREGROUND = 255.0
"""SamGIS's raster value of predicted pixels, the `raster_val` of its polygons."""

# SamGIS names its sources loosely; map its names to ours when they are not configured names already.
SAMGIS_SOURCE_ALIASES = {
    "openstreetmap": "OpenStreetMap.Mapnik",
    "openstreetmap.mapnik": "OpenStreetMap.Mapnik",
    "satellite": "Esri.WorldImagery",
    "esri.worldimagery": "Esri.WorldImagery",
}


def samgis_error(status: int, extra: dict | None = None, headers: dict | None = None) -> JSONResponse:
    """SamGIS's error body `{"msg": "Error - <reason phrase>"}`, with our keys (`detail`, `field` …) added."""
    return JSONResponse({"msg": f"Error - {HTTPStatus(status).phrase}", **(extra or {})}, status_code=status,
                        headers=headers)


class SamgisRoute(APIRoute):
    """Answers this route's errors in SamGIS's body, with our keys and the request id; internals (exception
    text, paths) are only logged."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            rid = request_id_of(request)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
                return samgis_error(422, {"detail": jsonable_encoder(errors), "field": None,
                                          "error": "RequestValidationError", "request_id": rid})
            except SamgisError as exc:
                status = status_for(exc)
                log_error(request, status, exc)
                return samgis_error(status, error_body(exc, request), error_headers(exc))
            except HTTPException as exc:
                return samgis_error(exc.status_code, {"detail": exc.detail, "request_id": rid}, exc.headers)
            except Exception:
                log.exception("[%s] unexpected error on %s %s", rid, request.method, request.url.path)
                return samgis_error(500, {"detail": internal_detail(rid), "error": "InternalError",
                                          "request_id": rid})

        return route


router = APIRouter(tags=["compatibility"], route_class=SamgisRoute)


def _squash(name: str) -> str:
    """Lower case letters and digits only: how xyzservices' `providers.query_name` (SamGIS's lookup) compares."""
    return "".join(c for c in name.lower() if c.isalnum())


def source_name(source_type: str, res: Resources) -> str:
    """Our configured source for SamGIS's `source_type`: the id itself, an alias, or the configured id that
    matches as xyzservices' `query_name` matches (case, dots, spaces ignored); else the name unchanged (the
    service then refuses it, 422, as SamGIS refuses an unknown provider)."""
    if source_type in res.sources:
        return source_type
    alias = SAMGIS_SOURCE_ALIASES.get(source_type.strip().lower())
    if alias:
        return alias
    want = _squash(source_type)
    for sid in res.sources.names():
        if _squash(sid) == want:
            return sid
    return source_type


def samgis_geojson(fc: dict) -> dict:
    """Our FeatureCollection (one merged foreground feature) → SamGIS's: one Polygon feature per shape,
    GeoPandas' `"id": "<n>"`, properties `raster_val` 255.0 plus ours that still hold for a single shape."""
    features = []
    for f in fc["features"]:
        geom = f["geometry"]
        polys = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        props = {k: v for k, v in f["properties"].items() if k not in ("mask_index", "score", "area_m2",
                                                                        "prompt_index")}
        for rings in polys:
            features.append({"id": str(len(features)), "type": "Feature",
                             "properties": {"raster_val": FOREGROUND, **props},
                             "geometry": {"type": "Polygon", "coordinates": rings}})
    return {"type": "FeatureCollection", "features": features}


@router.post("/infer_samgis", summary="SamGIS-compatible inference",
             description="Body and answer as SamGIS's backend: `{\"body\": \"<JSON string>\"}` whose `output` holds "
                         "`n_predictions`, `geojson` (one Polygon feature per foreground shape, `raster_val` 255) "
                         "and `n_shapes_geojson` (the number of features). Errors: SamGIS's `{\"msg\": \"Error - "
                         "…\"}` body, with our `detail` and `field`.")
async def infer_samgis(req: SamgisRequest, service: SegmentService = Depends(get_service),
                       res: Resources = Depends(get_resources)) -> dict:
    t0 = time.perf_counter()
    points = [PointPrompt(p.data.lng, p.data.lat, p.label) for p in req.prompt if isinstance(p, SamgisPoint)]
    boxes = [BoxPrompt(r.data.sw.lng, r.data.sw.lat, r.data.ne.lng, r.data.ne.lat)
             for r in req.prompt if isinstance(r, SamgisRect)]
    query = SegmentQuery(
        bbox=BBox(req.bbox.sw.lng, req.bbox.sw.lat, req.bbox.ne.lng, req.bbox.ne.lat),
        zoom=int(req.zoom), source=source_name(req.source_type, res), points=points, boxes=boxes,
        exclude_only=True, merge_masks=True,
    )
    fc = await service.segment(query)
    meta = fc.pop("samgis")
    geojson = samgis_geojson(fc)
    body = {
        "duration_run": round(time.perf_counter() - t0, 4),
        "output": {
            "n_predictions": max(1, len(boxes)),  # masks decoded: one per box, or one for points only
            "geojson": json.dumps(geojson),
            "n_shapes_geojson": len(geojson["features"]),
        },
        "samgis": meta,
    }
    return {"body": json.dumps(body)}

"""POST /v1/segment: lat/lng prompts on a web map → GeoJSON polygons; /v1/segment/everything: all masks."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.models import (BoxIn, EverythingOut, EverythingRequest, ExemplarIn, FeatureCollectionOut, PointIn,
                        SegmentRequest, TextIn, postprocess_option)
from samgis.services.map_query import (BBox, BoxPrompt, EverythingQuery, ExemplarPrompt, PointPrompt, SegmentQuery,
                                       TextPrompt)
from samgis.services.map_segment import SegmentService
from api.resources import get_service
from samgis.errors import LimitExceeded
from samgis.vector.export import geojson_bytes
from samgis.vector.postprocess import PostProcess, choose


def postprocess_of(req: SegmentRequest | EverythingRequest) -> PostProcess | None:
    """The request's `regularize` / `smooth` options as one step (422 naming "smooth" when both are on)."""
    return choose(postprocess_option(req.regularize), postprocess_option(req.smooth))

router = APIRouter(tags=["segment"])

ERRORS = {422: {"description": "invalid input; `field` names it"}, 502: {"description": "tile source failed"},
          503: {"description": "model not ready"}, 504: {"description": "tile source timed out"}}


def geojson_response(fc: dict, max_bytes: int | None = None) -> Response:
    """`fc` serialised in one pass (the response model documents it; no second pass over every coordinate),
    with the `samgis.timings_ms` stages also as a `Server-Timing` header (browser dev tools show it).
    Over `max_bytes` it is refused (422 naming max_answer_bytes)."""
    timings = fc.get("samgis", {}).get("timings_ms", {})
    header = ", ".join(f"{name};dur={ms}" for name, ms in timings.items())
    data = geojson_bytes(fc)
    if max_bytes is not None and len(data) > max_bytes:
        raise LimitExceeded("simplify_px", f"the answer would be {len(data)} bytes, over the limit of {max_bytes}; "
                                           "raise simplify_px or min_area_px, or ask for fewer masks",
                            "max_answer_bytes")
    return Response(data, media_type="application/json",
                    headers={"Server-Timing": header} if header else None)


def max_answer_bytes(request: Request) -> int:
    return request.app.state.resources.settings.max_answer_bytes


def to_query(req: SegmentRequest) -> SegmentQuery:
    points = [PointPrompt(p.lng, p.lat, p.label) for p in req.prompts if isinstance(p, PointIn)]
    boxes = [BoxPrompt(b.sw.lng, b.sw.lat, b.ne.lng, b.ne.lat) for b in req.prompts if isinstance(b, BoxIn)]
    texts = [TextPrompt(p.text, i) for i, p in enumerate(req.prompts) if isinstance(p, TextIn)]
    exemplars = [ExemplarPrompt(p.sw.lng, p.sw.lat, p.ne.lng, p.ne.lat, p.label, i)
                 for i, p in enumerate(req.prompts) if isinstance(p, ExemplarIn)]
    return SegmentQuery(
        bbox=BBox(req.bbox.sw.lng, req.bbox.sw.lat, req.bbox.ne.lng, req.bbox.ne.lat),
        zoom=req.zoom, source=req.source, points=points, boxes=boxes, multimask=req.multimask,
        simplify_px=req.simplify_px, min_area_px=req.min_area_px,
        window_budget=req.window_budget,
        texts=texts, exemplars=exemplars, score_threshold=req.score_threshold,
        postprocess=postprocess_of(req),
    )


def to_everything_query(req: EverythingRequest) -> EverythingQuery:
    """The query of `req`; the grid options the body set explicitly are named, so that with `text` (which does
    not use them) they are refused rather than ignored."""
    given = tuple(n for n in EverythingQuery.GRID_OPTIONS if n in req.model_fields_set)
    return EverythingQuery(**req.model_dump(exclude={"regularize", "smooth"}), grid_options_given=given,
                           postprocess=postprocess_of(req))


@router.post("/v1/segment", response_model=FeatureCollectionOut,
             summary="Segment the object(s) under lat/lng prompts", responses=ERRORS)
async def segment(req: SegmentRequest, request: Request,
                  service: SegmentService = Depends(get_service)) -> Response:
    """Points and one box decode together; several boxes decode as one batch (one mask per box, each
    with all the points). Prompts are given in the request's order as `prompts[i]` in error messages.

    Concept prompts (models with the text / exemplars capability, e.g. SAM 3): `{"type": "text", "text":
    "greenhouse"}` and/or exemplar boxes `{"type": "exemplar", "ne", "sw", "label": 1|0}` find every instance of
    the concept in the bbox. They cannot be mixed with point/box prompts (422 naming `prompts`); one text per
    request. The search runs on the one window holding the whole bbox (`samgis.window` says which zoom), the
    bbox clipped to where the source has pixels (a raster's extent: a bbox that does not overlap it is a 422
    naming `bbox`); instances with a pixel in the bbox come back whole, one feature each, best first, with
    `concept`, `score`, `instance` and `at_window_edge`; `samgis` adds `concept`, `text`, `exemplars`,
    `score_threshold`, `n_instances`, `n_found`, `bbox_clipped`, `area_searched`. A model without the
    capability: 422 naming it."""
    return geojson_response(await service.segment(to_query(req)), max_answer_bytes(request))


@router.post("/v1/segment/everything", response_model=EverythingOut,
             summary="All masks (automatic mask generation) in the window holding lat/lng", responses=ERRORS)
async def segment_everything(req: EverythingRequest, request: Request,
                             service: SegmentService = Depends(get_service)) -> Response:
    """SAM's automatic mask generator over a points_per_side² grid of the 1024 px window a click at (lat, lng)
    would get at `zoom` (same window, same embedding cache as `/v1/segment`). One feature per mask, best
    score first, deduplicated, masks below `min_area_m2` dropped.

    With `text`: every instance of the phrase in that window instead (`Engine.find`, models with the text
    capability), scored ≥ `score_threshold` (default 0.5), one feature per instance with `concept`, `score`,
    `instance`; the grid options then do not apply (422 when given)."""
    return geojson_response(await service.segment_everything(to_everything_query(req)),
                            max_answer_bytes(request))

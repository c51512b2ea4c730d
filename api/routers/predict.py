"""Plain-image prediction over HTTP: our API, KServe v1, Vertex AI and Azure ML's SAM envelope.

- `POST /v1/predict` and `POST /v1/models/samgis:predict` (KServe v1, also Vertex AI's body):
  `{"instances": [...], "parameters": {...}}` → `{"predictions": [...]}` (see `samgis.services.image_predict.predict`).
- `GET /v1/models/samgis`: KServe v1 readiness, `{"name": "samgis", "ready": bool}`.
- `POST /score`: Azure ML's mask-generation envelope (HF SAM models in the Azure model catalog), answered as
  the catalog's model cards show (see `samgis.services.azure.AZURE_CARD`).
- `vertex_routes(app, env)`: the same predict handler on `AIP_PREDICT_ROUTE`, /health on `AIP_HEALTH_ROUTE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Mount

from api.models import REGULARIZE_DOC, SMOOTH_DOC, Bool, ConceptText, Int, Label, Num, RegularizeOption, SmoothOption
from api.resources import Resources, get_engine, get_resources
from api.routers import meta
from samgis.services.azure import score_rows
import numpy as np

from samgis.services.image_predict import ImagePredictService
from samgis.services.predict_output import answer_bytes
from samgis.services.predict_request import InstanceQuery

router = APIRouter(tags=["predict"])
MODEL_NAME = "samgis"


# --- request models (documentation and the validation of types and ranges; the service checks only what needs the
# image or the server's limits, see samgis.services.predict_request.InstanceQuery) ---------

class B64(BaseModel):
    model_config = ConfigDict(extra="forbid")
    b64: str = Field(..., description="base64 PNG or JPEG")


class Logits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[Int]
    dtype: Literal["float32"] = "float32"
    data: str = Field(..., description="base64 of little-endian float32 values")


class PredictOptions(BaseModel):
    """Options; in `parameters` they apply to every instance, in an instance they override `parameters`."""

    model_config = ConfigDict(extra="forbid")
    multimask: Bool | None = Field(None, description="three candidate masks per query (default false)")
    mask_format: Literal["rle", "png", "polygon"] | None = Field(
        None, description="rle: COCO compressed RLE (default); png: base64 8-bit PNG, 255 = mask; "
                          "polygon: GeoJSON-style Polygon/MultiPolygon in pixel-edge coordinates, plus, for a "
                          "GeoTIFF, masks_lnglat (EPSG:4326) and masks_crs (the image's CRS, named by crs)")
    return_logits: Bool | None = Field(None, description="add (Q, M, 256, 256) float32 low-res logits")
    points_per_side: Int | None = Field(None, ge=1, description="automatic mode: grid side (default 16)")
    pred_iou_thresh: Num | None = Field(None, ge=0, le=1, description="automatic mode (default 0.88)")
    stability_score_thresh: Num | None = Field(None, ge=0, le=1, description="automatic mode (default 0.95)")
    stability_score_offset: Num | None = Field(None, ge=0, description="automatic mode (default 1.0)")
    box_nms_thresh: Num | None = Field(None, ge=0, le=1, description="automatic mode (default 0.7)")
    crop_n_layers: Int | None = Field(None, ge=0, description="automatic mode (default 0)")
    crop_nms_thresh: Num | None = Field(None, ge=0, le=1)
    crop_overlap_ratio: Num | None = Field(None, ge=0, lt=1)
    crop_n_points_downscale_factor: Int | None = Field(None, ge=1)
    min_mask_region_area: Int | None = Field(None, ge=0, description="automatic mode: remove smaller "
                                                                     "holes/islands, px (default 0)")
    score_threshold: Num | None = Field(None, ge=0, le=1, description="concept mode (text / exemplar_boxes): drop "
                                                                      "instances scoring below this (default 0.5)")
    # vector post-processing (samgis.vector.postprocess), mask_format "polygon" only; lengths in image px
    regularize: RegularizeOption | None = Field(None, description=REGULARIZE_DOC.replace(
        "tolerance_px replaces simplify_px", "mask_format polygon only"))
    smooth: SmoothOption | None = Field(None, description=SMOOTH_DOC.replace(
        "tolerance_px replaces simplify_px", "mask_format polygon only"))


class PredictInstance(PredictOptions):
    image: str | B64 = Field(..., description="base64 PNG, JPEG or GeoTIFF (a data: URL or {\"b64\": …} too); "
                                              "a GeoTIFF's nodata px are never part of a mask")
    points: list[tuple[Num, Num]] | None = Field(
        None, description="[[x, y], …] image px, integer = pixel centre (SamPredictor's convention)")
    points_lnglat: list[tuple[Num, Num]] | None = Field(
        None, description="[[lng, lat], …] EPSG:4326, GeoTIFF images only; placed through the image's CRS and "
                          "geotransform, refused (422) outside the image")
    labels: list[Label] | None = Field(None, description="per point, points then points_lnglat: 1 include, "
                                                         "0 exclude (default 1)")
    boxes: list[tuple[Num, Num, Num, Num]] | None = Field(
        None, description="[[x0, y0, x1, y1], …] image px; each box is its own query, with all the points")
    boxes_lnglat: list[tuple[Num, Num, Num, Num]] | None = Field(
        None, description="[[west, south, east, north], …] EPSG:4326, GeoTIFF images only; each its own query")
    mask_input: Logits | None = Field(None, description="low-res logits of an earlier answer (return_logits)")
    # concept prompts (models with the text / exemplars capability); never together with points/boxes
    text: ConceptText | None = Field(None, description="concept mode: find every instance of this noun phrase; "
                                                       "one mask per instance, best first")
    exemplar_boxes: list[tuple[Num, Num, Num, Num]] | None = Field(
        None, description="concept mode: [[x0, y0, x1, y1], …] image px, exemplars of the concept (with or "
                          "without text)")
    exemplar_labels: list[Label] | None = Field(None, description="per exemplar box: 1 positive (default), "
                                                                  "0 negative")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "instances": [{"image": "<base64 PNG/JPEG>", "points": [[320, 240]], "labels": [1]}],
        "parameters": {"mask_format": "rle", "multimask": False},
    }]})
    instances: list[PredictInstance] = Field(..., min_length=1)
    parameters: PredictOptions | None = None


class AzureInputData(BaseModel):
    columns: list[str]
    index: list[Any] | None = None
    data: list[list[Any]]


class AzureRequest(BaseModel):
    input_data: AzureInputData
    params: dict | None = None


# --- shared machinery -----------------------------------------------------------------------------------

def get_predict_service(request: Request) -> ImagePredictService:
    """The plain-image service of the loaded model (503 while it loads, as every model route)."""
    get_engine(request)
    return request.app.state.resources.predict_service


def json_answer(content, service: ImagePredictService, field: str = "instances") -> Response:
    """Compact JSON, refused (422) over `max_answer_bytes` once encoded."""
    return Response(answer_bytes(content, service.limits, field), media_type="application/json")


# --- our API and KServe v1 ------------------------------------------------------------------------------

async def predict_endpoint(req: PredictRequest,
                           service: ImagePredictService = Depends(get_predict_service)) -> Response:
    """Segment base64 images with point/box prompts in image pixels, or all objects when an instance has none.

    Each prediction: with prompts `masks[q][m]`, `scores[q][m]` (q: one query per box, or one for points
    only; m: 3 with multimask, else 1), `logits` when asked; without prompts `mode: "automatic"` and
    `masks` as SamAutomaticMaskGenerator's records (bbox XYWH, area, predicted_iou, stability_score …).
    With `text` and/or `exemplar_boxes` (concept mode, SAM 3-class models): `mode: "concept"`, `concept`,
    `score_threshold`, `masks[i]`, `scores[i]`, `boxes[i]` one per instance found, best first.

    The body is KServe v1's (`{"instances": [...], "parameters": {...}}`, any JSON object per instance:
    kserve.github.io/website, "V1 Inference Protocol") and Vertex AI's custom-container predict body (same shape:
    cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements), so the concept fields are
    instance keys, and `score_threshold` may also be a request-wide `parameters` key.
    """
    parameters = req.parameters.model_dump(exclude_none=True) if req.parameters else {}
    queries = [instance_query(inst, parameters) for inst in req.instances]
    predictions = await service.predict_instances(queries)  # ImageTooLarge → 413 (api.errors)
    return json_answer({"predictions": predictions}, service)


_OPTION_NAMES = tuple(PredictOptions.model_fields)


def instance_query(inst: PredictInstance, parameters: dict) -> InstanceQuery:
    """The service's typed query of a validated instance; `parameters`: the request's options (exclude_none
    dump), which the instance's own options override."""
    given = inst.model_dump(exclude_none=True, include=set(_OPTION_NAMES))

    def rows(value, width: int) -> np.ndarray | None:
        return None if value is None else np.asarray(value, np.float64).reshape(-1, width)

    def ints(value) -> tuple[int, ...] | None:
        return None if value is None else tuple(value)

    image = inst.image.model_dump() if isinstance(inst.image, B64) else inst.image
    return InstanceQuery(image=image, points=rows(inst.points, 2), boxes=rows(inst.boxes, 4),
                         points_lnglat=rows(inst.points_lnglat, 2), boxes_lnglat=rows(inst.boxes_lnglat, 4),
                         labels=ints(inst.labels),
                         mask_input=None if inst.mask_input is None else inst.mask_input.model_dump(),
                         text=inst.text, exemplar_boxes=rows(inst.exemplar_boxes, 4),
                         exemplar_labels=ints(inst.exemplar_labels), options={**parameters, **given},
                         from_parameters=frozenset(set(parameters) - set(given)))


_PREDICT_DOC = dict(responses={413: {"description": "body or image over the limit"},
                               422: {"description": "invalid input; `field` names it (e.g. instances[0].boxes[1])"},
                               503: {"description": "model not ready"}})
router.add_api_route("/v1/predict", predict_endpoint, methods=["POST"], summary="Segment plain images",
                     **_PREDICT_DOC)
router.add_api_route(f"/v1/models/{MODEL_NAME}:predict", predict_endpoint, methods=["POST"],
                     summary="Segment plain images (KServe v1 protocol)", **_PREDICT_DOC)


@router.get(f"/v1/models/{MODEL_NAME}", summary="KServe v1 model readiness")
async def model_ready(res: Resources = Depends(get_resources)) -> dict:
    return {"name": MODEL_NAME, "ready": res.model_status == "ready"}


# --- Azure ML -------------------------------------------------------------------------------------------


@router.post("/score", summary="Azure ML mask-generation envelope",
             description="Body as Azure ML's SAM deployments take it: `input_data.columns` among `image`, "
                         "`input_points`, `input_boxes`, `input_labels`, `multimask_output` (points, boxes, "
                         "labels as strings of nested lists). Answer, as the Azure AI model catalog's SAM cards show: "
                         "one item per row, `{\"predictions\": [{\"mask_per_prediction\": [{\"encoded_binary_mask\": "
                         "<base64 PNG>, \"iou_score\": float}]}]}`. A row without prompts gets every automatic "
                         "mask as a prediction. Concept prompts (text-capable models): a `text` column (a noun "
                         "phrase) gives one prediction whose masks are every instance found, best first, "
                         "`iou_score` the instance's score; `params.score_threshold` (default 0.5) filters them.",
                **_PREDICT_DOC)
async def score(req: AzureRequest, service: ImagePredictService = Depends(get_predict_service)) -> Response:
    rows = await score_rows(service, req.input_data.columns, req.input_data.data, req.params)
    return json_answer(rows, service, "input_data")


# --- Vertex AI ------------------------------------------------------------------------------------------

def _before_mounts(app: FastAPI) -> None:
    """Move the route added last in front of any mount (the web map is mounted at "/" and would shadow it)."""
    routes = app.router.routes
    route = routes.pop()
    at = next((k for k, r in enumerate(routes) if isinstance(r, Mount)), len(routes))
    routes.insert(at, route)


def vertex_routes(app: FastAPI, env: Mapping[str, str]) -> list[str]:
    """Serve Vertex AI's routes when its variables are set: `AIP_PREDICT_ROUTE` → the predict handler
    (Vertex's body is KServe v1's), `AIP_HEALTH_ROUTE` → /health. Returns the paths added.

    Safe to call after static mounts; the port (`AIP_HTTP_PORT`) is the server's business.
    """
    added = []
    predict_route, health_route = env.get("AIP_PREDICT_ROUTE"), env.get("AIP_HEALTH_ROUTE")
    if predict_route:
        app.add_api_route(predict_route, predict_endpoint, methods=["POST"], tags=["vertex"],
                          summary="Segment plain images (Vertex AI predict route)", **_PREDICT_DOC)
        _before_mounts(app)
        added.append(predict_route)
    if health_route:
        app.add_api_route(health_route, meta.health, methods=["GET"], tags=["vertex"],
                          summary="Vertex AI health route (as /health)")
        _before_mounts(app)
        added.append(health_route)
    return added

"""Plain-image prediction over HTTP: our API, KServe v1, Vertex AI and Azure ML's SAM envelope.

- `POST /v1/predict` and `POST /v1/models/samgis:predict` (KServe v1, also Vertex AI's body):
  `{"instances": [...], "parameters": {...}}` → `{"predictions": [...]}` (see `samgis.predict.predict`).
- `GET /v1/models/samgis`: KServe v1 readiness, `{"name": "samgis", "ready": bool}`.
- `POST /score`: Azure ML's mask-generation envelope (HF SAM models in the Azure model catalog), answered as
  the catalog's model cards show (see `AZURE_CARD`).
- `vertex_routes(app, env)`: the same predict handler on `AIP_PREDICT_ROUTE`, /health on `AIP_HEALTH_ROUTE`.
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Mount

from api.models import Bool, Int, Label, Num
from api.resources import Resources, get_engine, get_resources
from api.routers import meta
from samgis.engine.protocol import Embedding, Engine
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.predict import (
    AmgOptions,
    ImageTooLarge,
    PredictLimits,
    check_work,
    decode_image,
    decode_prompts,
    image_digest,
    parse_instance,
    parse_prompts,
    png_encode,
    predict,
)
from samgis.settings import Settings

router = APIRouter(tags=["predict"])
MODEL_NAME = "samgis"


# --- request models (documentation and first-line validation; samgis.predict re-checks semantics) ---------

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
                          "polygon: GeoJSON-style Polygon/MultiPolygon in pixel-edge coordinates")
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


class PredictInstance(PredictOptions):
    image: str | B64 = Field(..., description="base64 PNG or JPEG (a data: URL or {\"b64\": …} too)")
    points: list[tuple[Num, Num]] | None = Field(
        None, description="[[x, y], …] image px, integer = pixel centre (SamPredictor's convention)")
    labels: list[Label] | None = Field(None, description="per point: 1 include, 0 exclude (default 1)")
    boxes: list[tuple[Num, Num, Num, Num]] | None = Field(
        None, description="[[x0, y0, x1, y1], …] image px; each box is its own query, with all the points")
    mask_input: Logits | None = Field(None, description="low-res logits of an earlier answer (return_logits)")


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

def limits_for(settings: Settings) -> PredictLimits:
    """Limits from the settings."""
    return PredictLimits(max_pixels=settings.max_image_pixels, max_prompts=settings.max_prompts,
                         max_instances=settings.max_instances, max_points_per_side=settings.max_points_per_side,
                         max_grid_points=settings.max_grid_points, max_mask_pixels=settings.max_mask_pixels,
                         max_answer_bytes=settings.max_answer_bytes)


def add_mask_pixels(total: int, cost: int, field: str, limits: PredictLimits) -> int:
    """`total` + `cost` decoded mask pixels of one request, refused (before decoding) over the limit."""
    total += cost
    if limits.max_mask_pixels is not None and total > limits.max_mask_pixels:
        raise LimitExceeded(field, f"the request would decode {total} mask pixels in all, over the limit of "
                                   f"{limits.max_mask_pixels}; split it", "max_mask_pixels")
    return total


def answer(content, limits: PredictLimits) -> JSONResponse:
    """The JSON answer, refused when it is over `max_answer_bytes` once encoded."""
    response = JSONResponse(content)
    if limits.max_answer_bytes is not None and len(response.body) > limits.max_answer_bytes:
        raise LimitExceeded("instances", f"the answer would be {len(response.body)} bytes, over the limit of "
                                         f"{limits.max_answer_bytes}; ask for fewer masks, rle masks or no "
                                         "logits", "max_answer_bytes")
    return response


async def embedding_for(res: Resources, engine: Engine, image: np.ndarray) -> tuple[Embedding, bool]:
    """The image's embedding through the shared embedding cache (key: pixels' SHA-256, model, preprocessing)."""
    key = ("image", image_digest(image), engine.model_id, engine.describe().embedding_version)

    async def compute() -> Embedding:  # through the model's bounded encoder queue (503 when full)
        return await res.encoder_queue.run(engine.embed, image)

    return await res.cache.get_or_compute(key, compute)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


async def run_instances(instances: list[dict], parameters: dict, res: Resources, engine: Engine) -> list[dict]:
    """One prediction per instance dict, in order (see `samgis.predict.predict` for its shape)."""
    limits = limits_for(res.settings)
    if len(instances) > limits.max_instances:
        raise InvalidRequest("instances", f"{len(instances)} instances is over the limit of "
                                          f"{limits.max_instances} per request")
    out = []
    mask_pixels = 0
    for i, obj in enumerate(instances):
        field = f"instances[{i}]"
        t_start = time.perf_counter()
        if "image" not in obj:
            raise InvalidRequest(f"{field}.image", "missing: a base64 PNG or JPEG is required")
        image = await asyncio.to_thread(decode_image, obj["image"], f"{field}.image", limits.max_pixels)
        t_image = _ms(t_start)
        inst = parse_instance(obj, field, parameters, limits, image=image)
        cost = check_work(inst.prompts, inst.multimask, inst.amg, image.shape[:2], field, limits,
                          inst.return_logits)
        mask_pixels = add_mask_pixels(mask_pixels, cost, field, limits)
        t0 = time.perf_counter()
        embedding, hit = await embedding_for(res, engine, image)
        t_embed = _ms(t0)
        pred = await asyncio.to_thread(predict, engine, inst, embedding, limits)
        timings = {"image": t_image, "embed": t_embed, **pred["timings_ms"]}
        timings["total"] = _ms(t_start)
        pred.update(cache="hit" if hit else "miss", model=engine.model_id, timings_ms=timings)
        out.append(pred)
    return out


# --- our API and KServe v1 ------------------------------------------------------------------------------

async def predict_endpoint(req: PredictRequest, engine: Engine = Depends(get_engine),
                           res: Resources = Depends(get_resources)) -> JSONResponse:
    """Segment base64 images with point/box prompts in image pixels, or all objects when an instance has none.

    Each prediction: with prompts `masks[q][m]`, `scores[q][m]` (q: one query per box, or one for points
    only; m: 3 with multimask, else 1), `logits` when asked; without prompts `mode: "automatic"` and
    `masks` as SamAutomaticMaskGenerator's records (bbox XYWH, area, predicted_iou, stability_score …).
    """
    instances = [inst.model_dump(exclude_none=True) for inst in req.instances]
    parameters = req.parameters.model_dump(exclude_none=True) if req.parameters else {}
    predictions = await run_instances(instances, parameters, res, engine)  # ImageTooLarge → 413 (api.errors)
    return answer({"predictions": predictions}, limits_for(res.settings))


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

AZURE_CARD = "https://ai.azure.com/catalog/models/facebook-sam-vit-base"
"""The contract of `POST /score`: the "Sample input and output" of the Azure AI model catalog's SAM cards
(facebook-sam-vit-base / -large / -huge). Input `{"input_data": {"columns": ["image", "input_points",
"input_boxes", "input_labels", "multimask_output"], "index": [...], "data": [[...], ...]}, "params": {}}`;
output a list with one object per input row, `{"predictions": [{"mask_per_prediction": [{"encoded_binary_mask":
"<base64 PNG>", "iou_score": float}]}]}`. Azure's example notebook
(Azure/azureml-examples sdk/python/foundation-models/system/inference/mask-generation/
mask-generation-online-endpoint.ipynb) reads `["response"][i]["predictions"][0]["masks_per_prediction"]`
from a pandas frame instead; the card is the published contract and is followed here. The notebook documents
the input columns: points (P, N, 2) and labels (P, N) as strings of nested lists, boxes (B, 4),
`multimask_output` default true."""

MASK_LIST_KEY = "mask_per_prediction"  # sic, singular "mask" as on the model card


def azure_prediction(masks: list[np.ndarray], scores: list[float]) -> dict:
    """One Azure prediction: `masks` (H, W) bool in image px, one `iou_score` each."""
    return {MASK_LIST_KEY: [{"encoded_binary_mask": png_encode(m), "iou_score": float(s)}
                            for m, s in zip(masks, scores)]}


def azure_row(predictions: list[dict]) -> dict:
    """One row of the answer, as the card's sample output: `{"predictions": [...]}`, no other wrapper."""
    return {"predictions": predictions}


_NESTED_NUMBERS = re.compile(r"^[\[\]\s\d.,eE+-]*$")


def nested_list(value, field: str):
    """A nested list of numbers from Azure's string form ("[[1, 2], [3, 4]]"), a list, or None for ""/null."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if not _NESTED_NUMBERS.match(value):
            raise InvalidRequest(field, "expected a nested list of numbers such as \"[[650, 900, 1000, 1250]]\"")
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise InvalidRequest(field, f"not a nested list of numbers ({exc})") from None
    if not isinstance(value, list | tuple):
        raise InvalidRequest(field, "expected a nested list of numbers")
    return value


def _depth(value) -> int:
    d = 0
    while isinstance(value, list | tuple) and value:
        value, d = value[0], d + 1
    return d


def azure_queries(row: dict, size: tuple[int, int], field: str, max_prompts: int) -> list:
    """The `Prompts` of one Azure row, one per prediction, following HF `SamProcessor` shapes.

    `input_points` (P, N, 2) point batches (a plain (N, 2) list is one batch), `input_labels` (P, N)
    (1 include, 0 exclude; -1 and the padding label -10 are dropped; default 1), `input_boxes` (B, 4).
    Prediction i is point batch i together with box i; with only boxes, one prediction per box.
    """
    points = nested_list(row.get("input_points"), f"{field}.input_points")
    labels = nested_list(row.get("input_labels"), f"{field}.input_labels")
    boxes = nested_list(row.get("input_boxes"), f"{field}.input_boxes") or []
    if points is not None and _depth(points) not in (2, 3):
        raise InvalidRequest(f"{field}.input_points", "expected point batches [[[x, y], …], …] (or one batch "
                                                      "[[x, y], …])")
    points = [] if points is None else ([points] if _depth(points) == 2 else points)
    if labels is not None and _depth(labels) == 1:
        labels = [labels]
    if boxes and _depth(boxes) == 1:
        boxes = [boxes]
    if labels is not None and len(labels) != len(points):
        raise InvalidRequest(f"{field}.input_labels", f"{len(labels)} label batches for {len(points)} point batches")
    if points and boxes and len(points) != len(boxes):
        raise InvalidRequest(f"{field}.input_boxes", f"{len(boxes)} boxes for {len(points)} point batches: "
                                                     "give one box per point batch, or only boxes")
    if len(points) + len(boxes) > max_prompts:
        raise InvalidRequest(field, f"over the limit of {max_prompts} prompts per row")
    queries = []
    for i in range(max(len(points), len(boxes))):
        obj: dict = {}
        if points:
            pts = points[i]
            labs = labels[i] if labels is not None else [1] * len(pts)
            if not isinstance(pts, list | tuple) or not isinstance(labs, list | tuple) or len(labs) != len(pts):
                raise InvalidRequest(f"{field}.input_labels[{i}]", "one label per point is needed")
            keep = [k for k, lab in enumerate(labs) if lab not in (-1, -10)]
            obj["points"] = [list(pts[k]) if isinstance(pts[k], list | tuple) else pts[k] for k in keep]
            obj["labels"] = [int(labs[k]) if labs[k] in (0, 1) else labs[k] for k in keep]
        if boxes:
            obj["boxes"] = [list(boxes[i]) if isinstance(boxes[i], list | tuple) else boxes[i]]
        prompts = parse_prompts(obj, size, f"{field}[{i}]", max_prompts)
        if prompts is None:
            raise InvalidRequest(f"{field}.input_points[{i}]", "this point batch has only padding points")
        queries.append(prompts)
    return queries


def _azure_row_predictions(engine: Engine, image: np.ndarray, embedding: Embedding, queries: list,
                           multimask: bool, limits: PredictLimits) -> list[dict]:
    if not queries:  # no prompts: every automatic mask is a prediction
        records = engine.generate(embedding, AmgOptions(), image)
        return [azure_prediction([r["segmentation"]], [r["predicted_iou"]]) for r in records]
    out = []
    for prompts in queries:
        result = decode_prompts(engine, embedding, prompts, multimask, limits.decode_bytes)
        out.append(azure_prediction(list(result.masks[0]), list(result.scores[0])))
    return out


@router.post("/score", summary="Azure ML mask-generation envelope",
             description="Body as Azure ML's SAM deployments take it: `input_data.columns` among `image`, "
                         "`input_points`, `input_boxes`, `input_labels`, `multimask_output` (points, boxes, "
                         "labels as strings of nested lists). Answer, as the Azure AI model catalog's SAM cards show: "
                         "one item per row, `{\"predictions\": [{\"mask_per_prediction\": [{\"encoded_binary_mask\": "
                         "<base64 PNG>, \"iou_score\": float}]}]}`. A row without prompts gets every automatic "
                         "mask as a prediction.", **_PREDICT_DOC)
async def score(req: AzureRequest, engine: Engine = Depends(get_engine),
                res: Resources = Depends(get_resources)) -> JSONResponse:
    limits = limits_for(res.settings)
    cols = req.input_data.columns
    if "image" not in cols:
        raise InvalidRequest("input_data.columns", "an \"image\" column is required")
    if len(req.input_data.data) > limits.max_instances:
        raise InvalidRequest("input_data.data", f"{len(req.input_data.data)} rows is over the limit of "
                                                f"{limits.max_instances}")
    rows = []
    mask_pixels = 0
    for r, values in enumerate(req.input_data.data):
        field = f"input_data.data[{r}]"
        if len(values) != len(cols):
            raise InvalidRequest(field, f"{len(values)} values for {len(cols)} columns")
        row = dict(zip(cols, values))
        image = await asyncio.to_thread(decode_image, row["image"], f"{field}.image", limits.max_pixels)
        queries = azure_queries(row, image.shape[:2], field, limits.max_prompts)
        multimask = row.get("multimask_output")
        multimask = multimask if isinstance(multimask, bool) else True  # Azure's default
        for prompts in queries or [None]:  # no prompts: automatic masks with Azure's (our) default grid
            cost = check_work(prompts, multimask, AmgOptions(), image.shape[:2], field, limits)
            mask_pixels = add_mask_pixels(mask_pixels, cost, field, limits)
        embedding, _ = await embedding_for(res, engine, image)
        preds = await asyncio.to_thread(_azure_row_predictions, engine, image, embedding, queries,
                                        multimask, limits)
        rows.append(azure_row(preds))
    return answer(rows, limits)


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

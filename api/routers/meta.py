"""GET /health, /v1/sources, /v1/models."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.openapi import HealthOut
from api.resources import Resources, get_resources
from samgis.engine.registry import get_model_spec, model_ids

router = APIRouter(tags=["meta"])


@router.get("/health", summary="200 once the model is loaded, 503 with the reason before",
            response_model=HealthOut, responses={503: {"model": HealthOut, "description": "model not ready"}})
async def health(res: Resources = Depends(get_resources)) -> JSONResponse:
    if res.model_status == "ready":
        return JSONResponse({"status": "ok", "model": res.engine.model_id})
    detail = res.model_error if res.model_status == "error" else f"loading model {res.settings.model!r}"
    return JSONResponse({"status": res.model_status, "detail": detail}, status_code=503)


@router.get("/v1/sources", summary="Configured tile sources a request may name")
async def sources(res: Resources = Depends(get_resources)) -> dict:
    default = res.settings.default_source if res.settings.default_source in res.sources else None
    return {"default": default or (res.sources.names()[0] if len(res.sources) else None),
            "sources": [res.sources.get(n).public() for n in res.sources.names()]}


@router.get("/v1/models", summary="Known models and the one loaded")
async def models(res: Resources = Depends(get_resources)) -> dict:
    loaded = None
    if res.engine is not None:
        card = res.engine.describe()
        loaded = {"id": card.model_id, "image_size": card.input_size, **card.public()}
    return {"loaded": loaded, "status": res.model_status, "embedding_cache": res.cache.describe(),
            "encoder_queue": res.encoder_queue.describe(),
            "models": [get_model_spec(m).public() for m in model_ids()]}

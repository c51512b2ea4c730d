"""Map package errors to HTTP responses, in one place.

Body shape for our errors: `{"detail": "<message>", "field": "<dotted field>" | null, "error": "<kind>"}`.
Pydantic validation errors keep FastAPI's standard 422 list (each item has `loc` and `msg`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from samgis.errors import (
    InvalidRequest,
    ModelNotReady,
    SamgisError,
    UpstreamError,
    UpstreamTimeout,
    WeightsUnavailable,
)

log = logging.getLogger("samgis.api")


def status_for(exc: SamgisError) -> int:
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, UpstreamTimeout):
        return 504
    if isinstance(exc, UpstreamError):
        return 502
    if isinstance(exc, (ModelNotReady, WeightsUnavailable)):
        return 503
    return 500


def error_body(exc: SamgisError) -> dict:
    return {"detail": exc.message, "field": getattr(exc, "field", None), "error": type(exc).__name__}



def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SamgisError)
    async def _samgis_error(request: Request, exc: SamgisError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s %s → %d: %s", request.method, request.url.path, status, exc.message)
        return JSONResponse(error_body(exc), status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}", "field": None,
                             "error": "InternalError"}, status_code=500)

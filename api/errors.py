"""Map package errors to HTTP responses, in one place.

Body shape for our errors: `{"detail": "<message>", "field": "<dotted field>" | null, "error": "<kind>"}`.
Pydantic validation errors keep FastAPI's standard 422 list (each item has `loc` and `msg`).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware

from samgis.errors import (
    InvalidRequest,
    ModelNotReady,
    Overloaded,
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
    if isinstance(exc, (ModelNotReady, WeightsUnavailable, Overloaded)):
        return 503
    return 500


def error_headers(exc: SamgisError) -> dict[str, str] | None:
    """`Retry-After` for errors that say when to come back (a full encoder queue)."""
    retry = getattr(exc, "retry_after_s", None)
    return {"Retry-After": str(int(retry))} if retry is not None else None


def error_body(exc: SamgisError) -> dict:
    return {"detail": exc.message, "field": getattr(exc, "field", None), "error": type(exc).__name__}



INTERNAL_DETAIL = "internal error; the server log has the details"


class InternalErrorMiddleware:
    """Innermost middleware: an exception nothing handled becomes a 500 JSON answer that names no internals
    (the log has the traceback). Starlette's handler for `Exception` runs in ServerErrorMiddleware, which
    re-raises after answering, and uvicorn then closes the connection, so clients could lose the answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            rid = (scope.get("state") or {}).get("request_id")
            log.exception("unexpected error on %s %s (request id %s)", scope.get("method"), scope.get("path"), rid)
            if started:
                raise
            body = {"detail": INTERNAL_DETAIL, "field": None, "error": "InternalError"}
            if rid:
                body["request_id"] = rid
            response = JSONResponse(body, status_code=500)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    # appended, not inserted: innermost of the app's middleware, whatever is added after
    app.user_middleware.append(Middleware(InternalErrorMiddleware))
    @app.exception_handler(SamgisError)
    async def _samgis_error(request: Request, exc: SamgisError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s %s → %d: %s", request.method, request.url.path, status, exc.message)
        return JSONResponse(error_body(exc), status_code=status, headers=error_headers(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # never the exception's text (paths, internals) in the answer: the log has it
        return JSONResponse({"detail": INTERNAL_DETAIL, "field": None,
                             "error": "InternalError"}, status_code=500)

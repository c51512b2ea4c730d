"""Map package errors to HTTP responses, in one place.

Body shape for our errors: `{"detail": "<message>", "field": "<dotted field>" | null, "error": "<kind>",
"request_id": "<32 hex>"}` (plus `"limit": "<setting>"` when a configured limit refused the request).
Pydantic validation errors keep FastAPI's standard 422 list (each item has `loc` and `msg`), with
`request_id` beside it. Messages name the source and what went wrong; internals (upstream URLs, local paths,
library messages, tracebacks) go to the log only, on a line carrying the same request id.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_id import request_id_of
from samgis.errors import (
    DeadlineExceeded,
    ImageTooLarge,
    InvalidRequest,
    LimitExceeded,
    ModelNotReady,
    Overloaded,
    SamgisError,
    UpstreamError,
    UpstreamTimeout,
    WeightsUnavailable,
)

log = logging.getLogger("samgis.api")
MAX_ECHO_CHARS = 200
"""Validation errors echo at most this much of the offending input."""


def status_for(exc: SamgisError) -> int:
    if isinstance(exc, ImageTooLarge):
        return 413
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, (UpstreamTimeout, DeadlineExceeded)):
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


def error_body(exc: SamgisError, request: Request | None = None) -> dict:
    body = {"detail": exc.message, "field": getattr(exc, "field", None), "error": type(exc).__name__,
            "request_id": request_id_of(request) if request is not None else None}
    if isinstance(exc, LimitExceeded):
        body["limit"] = exc.limit
    return body


def log_error(request: Request, status: int, exc: SamgisError) -> None:
    """One log line for an error answer worth an operator's look (5xx, or internals kept out of the body)."""
    if status >= 500 or exc.detail:
        log.warning("[%s] %s %s → %d: %s%s", request_id_of(request), request.method, request.url.path, status,
                    exc.message, f" ({exc.detail})" if exc.detail else "")


def json_safe(value, depth: int = 0):
    """`value` as something `json.dumps(allow_nan=False)` takes: non-finite floats as strings, long inputs cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<an integer of {len(str(abs(value)))} digits>"
    if isinstance(value, str) and len(value) > MAX_ECHO_CHARS:
        return value[:MAX_ECHO_CHARS] + "…"
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in list(value)[:20]]
    return value


_STATUSES = {s.value for s in HTTPStatus}

INTERNAL_DETAIL = "internal error; the server log has the details"


def internal_detail(rid: str | None) -> str:
    return f"{INTERNAL_DETAIL} under request id {rid}" if rid else INTERNAL_DETAIL


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
            body = {"detail": internal_detail(rid), "field": None, "error": "InternalError", "request_id": rid}
            response = JSONResponse(body, status_code=500)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    # appended, not inserted: innermost of the app's middleware, whatever is added after
    app.user_middleware.append(Middleware(InternalErrorMiddleware))

    @app.exception_handler(SamgisError)
    async def _samgis_error(request: Request, exc: SamgisError) -> JSONResponse:
        status = status_for(exc)
        log_error(request, status, exc)
        return JSONResponse(error_body(exc, request), status_code=status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own shape; inputs made JSON-safe (a NaN or a 5,000-digit integer echoed back is not)
        errors = [{**e, "input": json_safe(e["input"])} if "input" in e else e for e in exc.errors()]
        errors = [{**e, "ctx": json_safe(e["ctx"])} if "ctx" in e else e for e in errors]
        return JSONResponse({"detail": jsonable_encoder(errors), "request_id": request_id_of(request)},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's / FastAPI's own refusals (404, 405, 400 for a body that is not JSON) in our error body
        kind = "".join(HTTPStatus(exc.status_code).phrase.title().split()) if exc.status_code in _STATUSES \
            else "HTTPError"
        return JSONResponse({"detail": str(exc.detail), "field": None, "error": kind,
                             "request_id": request_id_of(request)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request)
        log.exception("[%s] unexpected error on %s %s", rid, request.method, request.url.path)
        return JSONResponse({"detail": internal_detail(rid), "field": None, "error": "InternalError", "request_id": rid}, status_code=500)

"""A truthful OpenAPI document: every answer the server can give, with its status, content type and body.

FastAPI documents what the route decorators say: the success body and its own 422. The rest of the answers
come from code it does not see (middleware, exception handlers, the service's errors), so they are added
here, from the same facts the server acts on:

- every operation: 500 (an unexpected error; the body names no internals) and the `X-Request-ID` header;
- operations with parameters or a body: 422, either our error body (`ErrorOut`: `detail`, `field`, `error`,
  `request_id`, `limit`) or FastAPI's list of validation errors (`ValidationErrorOut`);
- operations with a body: 400 (not JSON at all), 413 and 408 from the body guard (`api/limits.py`);
- operations that need the model: 503 (model not ready, or the encoder queue full with `Retry-After`);
- operations that fetch tiles: 502 (the tile source failed) and 504 (it timed out or the request's deadline
  passed);
- with API keys / rate limits on (`api/security.py`): 401 and 429 (`Retry-After`) on the routes they guard, and
  with keys the two ways to present one as OpenAPI security schemes (HTTP bearer, or the `X-API-Key` header),
  either of which satisfies a guarded operation's `security`;
- `/infer_samgis` answers its own errors in SamGIS's body (`SamgisErrorOut`: `msg` plus our keys);
- the tile-source names a request may use are the configured ones (`enum`), as `/v1/sources` lists them.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from api.resources import get_engine, get_service


class ErrorOut(BaseModel):
    """Our error body (`api/errors.py`)."""

    detail: str = Field(..., description="what went wrong, naming the field or the source; no internals")
    field: str | None = Field(None, description="the offending input, dotted (e.g. prompts[1]); null when none")
    error: str = Field(..., description="kind: InvalidRequest, LimitExceeded, UnknownSource, UpstreamError, "
                                        "UpstreamTimeout, DeadlineExceeded, Overloaded, ModelNotReady, …")
    request_id: str | None = Field(None, description="the X-Request-ID of this answer; the server log has it")
    limit: str | None = Field(None, description="the setting that refused the request (LimitExceeded)")


class ValidationItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """FastAPI's 422 for a body or parameter that does not match the schema, with the request id."""

    detail: list[ValidationItem]
    request_id: str | None = None


class SamgisErrorOut(BaseModel):
    """SamGIS's error body `{"msg": "Error - <reason>"}`, with our keys added (`api/routers/compat.py`)."""

    model_config = ConfigDict(extra="allow")
    msg: str = Field(..., description='"Error - " and the status\'s reason phrase, as SamGIS answers')
    detail: str | list[dict[str, Any]] | None = None
    field: str | None = None
    error: str | None = None
    request_id: str | None = None


class HealthOut(BaseModel):
    status: str = Field(..., description="ok | loading | error")
    model: str | None = Field(None, description="the loaded model (when ok)")
    detail: str | None = Field(None, description="why the model is not ready (loading, error)")


MODELS = (ErrorOut, ValidationItem, ValidationErrorOut, SamgisErrorOut, HealthOut)
COMPAT_PATH = "/infer_samgis"
TILE_PATH_PREFIX = "/v1/tiles/"


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(*models: type[BaseModel]) -> dict:
    schema = _ref(models[0]) if len(models) == 1 else {"anyOf": [_ref(m) for m in models]}
    return {"application/json": {"schema": schema}}


REQUEST_ID = {"X-Request-ID": {"description": "this request's id (32 hex digits); log lines about it carry it",
                               "schema": {"type": "string"}}}
#: OpenAPI 3.1 "Security Scheme Objects" for the two ways `api/security.py` reads a key; an operation's
#: `security` lists them as alternatives (either satisfies it).
SECURITY_SCHEMES = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "X-API-Key: <API key>"},
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _depends_on(route: APIRoute, calls: set) -> bool:
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        if dep.call in calls:
            return True
        stack.extend(dep.dependencies)
    return False


def operation_facts(app: FastAPI) -> dict[tuple[str, str], dict[str, bool]]:
    """{(path, method lower): {"model": needs the model, "tiles": fetches tiles}} of the app's API routes."""
    from api.routers.predict import get_predict_service  # here: that router's module imports this one's users

    facts = {}
    # FastAPI (0.16x) includes routers lazily; its OpenAPI builder walks them with `iter_route_contexts`
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        path = getattr(context, "path_format", route.path_format)
        model = _depends_on(route, {get_service, get_engine, get_predict_service})
        tiles = _depends_on(route, {get_service}) or path.startswith(TILE_PATH_PREFIX)
        for method in route.methods:
            facts[(path, method.lower())] = {"model": model, "tiles": tiles}
    return facts


def complete_schema(schema: dict, facts: dict, *, keys: bool = False, rate_limited: bool = False,
                    open_paths: frozenset[str] = frozenset(), sources: list[str] | None = None) -> dict:
    """`schema` (FastAPI's document) with the answers it leaves out (module docstring); a new dict."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if keys:
        schema["components"]["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    for model in MODELS:
        for name, sub in model.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs",
                                                                                                   {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components[model.__name__].pop("$defs", None)
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            fact = facts.get((path, method), {"model": False, "tiles": False})
            compat = path == COMPAT_PATH
            ours = (SamgisErrorOut, ErrorOut) if compat else (ErrorOut,)
            responses = op.setdefault("responses", {})

            def add(status: int, description: str, *models, headers: dict | None = None, replace: bool = False):
                entry = responses.setdefault(str(status), {"description": description})
                if replace or "content" not in entry:
                    entry["content"] = _json(*models)
                entry.setdefault("description", description)
                if headers:
                    entry.setdefault("headers", {}).update(headers)

            has_body = "requestBody" in op
            if has_body or op.get("parameters"):
                add(422, "invalid input: `field` names it (or FastAPI's list of validation errors); a work "
                         "limit names its setting in `limit`", *ours, ValidationErrorOut, replace=True)
            if has_body:
                add(400, "the body is not JSON", *ours)
                add(413, "request body over SAMGIS_MAX_BODY_BYTES (or an image over SAMGIS_MAX_IMAGE_PIXELS)",
                    ErrorOut)
                add(408, "the request body did not arrive within SAMGIS_BODY_TIMEOUT_S", ErrorOut)
            if fact["model"]:
                add(503, "the model is not ready, or the encoder queue is full (then with Retry-After)", *ours,
                    headers=RETRY_AFTER)
            if fact["tiles"]:
                add(502, "a tile source failed", *ours)
                add(504, "a tile source timed out, or the request's deadline passed (SAMGIS_DEADLINE_S)", *ours)
            if path not in open_paths:
                if keys:
                    op["security"] = [{name: []} for name in SECURITY_SCHEMES]
                    add(401, "an API key is required (Authorization: Bearer or X-API-Key) or is not valid",
                        ErrorOut)
                if rate_limited:
                    add(429, "rate limit reached", ErrorOut, headers=RETRY_AFTER)
            add(500, "unexpected error; the body names no internals, the log has them under the request id",
                *ours)
            for entry in responses.values():
                entry.setdefault("headers", {}).update(REQUEST_ID)
            if sources and path.startswith(TILE_PATH_PREFIX):
                for param in op.get("parameters", []):
                    if param.get("name") == "source" and param.get("in") == "path":
                        param["schema"] = {**param.get("schema", {}), "enum": list(sources)}
    if sources:
        for name in ("SegmentRequest", "EverythingRequest"):
            prop = components.get(name, {}).get("properties", {}).get("source")
            if prop is not None:
                prop["enum"] = list(sources)
    if not _uses(schema, "HTTPValidationError"):
        components.pop("HTTPValidationError", None)
    return schema


def _uses(schema: dict, name: str) -> bool:
    return f'"#/components/schemas/{name}"' in repr(schema.get("paths", {})).replace("'", '"')


def install_openapi(app: FastAPI, policy) -> None:
    """Serve `complete_schema` of the app's own document at /openapi.json (built once, on first request, when
    the configured sources are known)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            base = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
            res = getattr(app.state, "resources", None)
            sources = res.sources.names() if res is not None else None
            app.openapi_schema = complete_schema(base, operation_facts(app), keys=bool(policy.keys),
                                                 rate_limited=bool(policy.per_key or policy.per_ip),
                                                 open_paths=policy.open_paths, sources=sources)
        return app.openapi_schema

    app.openapi = openapi

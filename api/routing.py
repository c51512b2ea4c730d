"""The web map's static files, mounted at "/" without hiding the API's 405s.

Starlette's router hands a request to the first route that matches fully; a route whose path matches but not
its method only matches partially, so the mount at "/" (which matches every path) would take `GET /v1/segment`
(answering 404) and `POST /health` (answering 405 with StaticFiles' `Allow: GET, HEAD`). `WebFiles` answers
405 with the API route's own `Allow` header when an API route has that path, and serves files otherwise.
"""

from __future__ import annotations

from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app, scope) -> set[str]:
    """Methods for which one of the app's routes (mounts aside) fully matches this request's path; empty
    when no route has the path. Asks each route through Starlette's public `matches(scope)`, so routers that
    FastAPI includes lazily answer too."""
    routes = [r for r in getattr(app, "routes", ()) if not isinstance(r, Mount)]
    allowed: set[str] = set()
    for method in METHODS:
        probe = {**scope, "method": method}
        if any(r.matches(probe)[0] == Match.FULL for r in routes):
            allowed.add(method)
    return allowed


class WebFiles(StaticFiles):
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            allowed = allowed_methods(scope.get("app"), scope)
            if allowed and scope["method"] not in allowed:
                raise HTTPException(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        await super().__call__(scope, receive, send)

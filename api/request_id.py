"""One id per HTTP request: in `scope["state"]["request_id"]` (`request.state.request_id`), in the
`X-Request-ID` response header, in every error body (`request_id`) and in the log lines about the request.

The id is always made here (32 hex digits, uuid4); a client's own `X-Request-ID` is not trusted into logs.
"""

from __future__ import annotations

import uuid

HEADER = b"x-request-id"


def request_id_of(scope) -> str | None:
    """The id of the request whose ASGI scope (or Starlette `Request`) this is; None outside the middleware."""
    scope = getattr(scope, "scope", scope)
    return (scope.get("state") or {}).get("request_id")


class RequestIdMiddleware:
    """Outermost middleware: makes the id and puts it on the response's headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)

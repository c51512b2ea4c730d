"""ASGI middleware that reads each request body before the app sees it, and refuses bad ones early.

- over `max_bytes` (declared in Content-Length, or counted while a chunked body streams in) → 413;
- not all there within `timeout_s` of the request's start (a client that declares more than it sends, or
  trickles it) → 408;
- a JSON body holding a number that is not finite (`NaN`, `Infinity`, `1e400`, an integer too large for a
  float) or an integer of more than Python's 4300 digits → 422 naming the field, e.g. `instances[0].points[1][0]`.
  RFC 8259 has no NaN or Infinity, but Python's `json` accepts them; a validation error echoing one could not
  be encoded as JSON and became a 500.

The error answers close the connection (`Connection: close`): the unread rest of a body must not be taken for
the next request. The body is handed to the app unchanged; later `receive()` calls reach the server again
(disconnect detection).
"""

from __future__ import annotations

import asyncio
import json
import math
import re

from api.request_id import request_id_of

# Cheap byte-level test run on every JSON body; only bodies it matches are parsed and walked here.
_SUSPECT = re.compile(rb"NaN|Infinity|[0-9][eE]\+?[0-9]{3}|[0-9]{300}")
_BODY_METHODS = {b"POST", b"PUT", b"PATCH"}


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int, timeout_s: float = 60.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if declared is None and not chunked and scope["method"].encode() not in _BODY_METHODS:
            return await self.app(scope, receive, send)  # no body (GET, HEAD, …)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, send, f"request body of {int(declared)} bytes")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await reject(scope, send, 408, "RequestTimeout", "body",
                                    f"the request body did not arrive within {self.timeout_s:g} s "
                                    f"({size} bytes received); send it in one go")
            if message["type"] == "http.disconnect":
                return  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope, send, f"request body of more than {size - len(chunk)} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        if b"json" in headers.get(b"content-type", b"").lower() and _SUSPECT.search(body):
            problem = nonfinite_problem(body)
            if problem is not None:
                field, message = problem
                return await reject(scope, send, 422, "InvalidRequest", field, f"{field}: {message}")

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope, send, what: str):
        await reject(scope, send, 413, "PayloadTooLarge", "body",
                     f"{what} exceeds the limit of {self.max_bytes} bytes (SAMGIS_MAX_BODY_BYTES)")


def nonfinite_problem(body: bytes) -> tuple[str, str] | None:
    """(dotted field, message) of the first number in a JSON body that is not finite, or None.

    None as well for a body that is not JSON at all (the app answers that one).
    """
    try:
        doc = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) or "digits" not in str(exc):
            return None
        # int("…") past sys.get_int_max_str_digits(): a JSON integer of thousands of digits
        return "body", "a number has too many digits (more than 4300); numbers must be finite"
    return _walk(doc, "")


def _walk(value, path: str) -> tuple[str, str] | None:
    stack = [(value, path)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return path or "body", f"must be a finite number, got {json.dumps(value)}"
        elif isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > 1000 and not _fits_float(value):
                return path or "body", f"must be a finite number, got an integer of {len(str(abs(value)))} digits"
        elif isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


async def reject(scope, send, status: int, kind: str, field: str, message: str) -> None:
    """Answer `status` with our error body; the connection is closed after it."""
    body = json.dumps({"detail": message, "field": field, "error": kind,
                       "request_id": request_id_of(scope)}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})

"""Access control for shared deployments: API keys, rate limits, CORS. All off by default.

- API keys (`SAMGIS_API_KEYS`): comma-separated keys, or the path of a file with one key per line (blank lines
  and `#` comments skipped). When set, every API route needs `Authorization: Bearer <key>` or
  `X-API-Key: <key>`; 401 otherwise. Open without a key: `/health` (and Vertex AI's `AIP_HEALTH_ROUTE`), KServe's
  readiness `GET /v1/models/samgis`, the API docs (`/docs`, `/redoc`, `/openapi.json`) and everything that is
  not an API route (the web map's static files, 404s). The tile proxy `/v1/tiles/…` is an API route.
- Rate limits (`SAMGIS_RATE_LIMIT_PER_KEY`, `SAMGIS_RATE_LIMIT_PER_IP`): `limits` rate strings such as
  `"10/second;300/minute"`, counted over a moving window (`limits.strategies.MovingWindowRateLimiter`,
  in process memory) per API key and per client IP, on the same routes as the keys. Over a limit → 429 with
  `Retry-After` (seconds until the window admits the request) and a JSON error body. A request counts against
  its key's and its IP's limits only when both admit it. The client IP is the ASGI `client`, which uvicorn sets
  from `X-Forwarded-For` only for proxies in `--forwarded-allow-ips` (default 127.0.0.1).
- CORS (`SAMGIS_CORS_ORIGINS`): comma-separated allowed origins for Starlette's `CORSMiddleware`; none by
  default, so browsers on other origins cannot call the API. Preflights are answered before the key check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match, Mount

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/v1/models/samgis"})
"""API routes that stay open when keys are on: health, KServe readiness, the API's documentation."""


def load_api_keys(value: str | None) -> frozenset[str]:
    """The keys `SAMGIS_API_KEYS` names: an existing file's non-blank, non-`#` lines, else the comma-separated
    keys of the value itself. Empty or unset → no keys (access control off). A value that looks like a path
    (it holds "/" or starts with "~" or ".") but is not a file raises ValueError rather than becoming a key;
    so does a key shorter than 16 characters."""
    if value is None or not value.strip():
        return frozenset()
    value = value.strip()
    path = Path(value).expanduser()
    if path.is_file():
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        keys = frozenset(line for line in lines if line and not line.startswith("#"))
        if not keys:
            raise ValueError(f"SAMGIS_API_KEYS: the file {value} holds no key")
    elif "/" in value or value.startswith(("~", ".")):
        raise ValueError(f"SAMGIS_API_KEYS: {value!r} looks like a path but is not a readable file")
    else:
        keys = frozenset(k.strip() for k in value.split(",") if k.strip())
    short = sorted(k for k in keys if len(k) < 16)
    if short:
        raise ValueError(f"SAMGIS_API_KEYS: {len(short)} key(s) shorter than 16 characters; use long random keys "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return keys


def parse_rate(value: str | None, name: str) -> list[RateLimitItem]:
    """`limits` items of a rate string ("10/second;300/minute"); empty/None → no limit."""
    if value is None or not value.strip():
        return []
    try:
        return parse_many(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a rate such as \"10/second;300/minute\"") from None


def parse_origins(value: str | None) -> list[str]:
    return [o.strip().rstrip("/") for o in (value or "").split(",") if o.strip()]


def key_id(key: str) -> str:
    """A short stable id of a key, for rate-limit buckets and logs (the key itself is never stored or logged)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class AccessPolicy:
    keys: frozenset[str] = frozenset()
    per_key: list[RateLimitItem] = field(default_factory=list)
    per_ip: list[RateLimitItem] = field(default_factory=list)
    open_paths: frozenset[str] = OPEN_PATHS

    @property
    def active(self) -> bool:
        return bool(self.keys or self.per_key or self.per_ip)

    @classmethod
    def from_settings(cls, settings, env: Mapping[str, str] | None = None) -> AccessPolicy:
        open_paths = set(OPEN_PATHS)
        if env and env.get("AIP_HEALTH_ROUTE"):
            open_paths.add(env["AIP_HEALTH_ROUTE"])
        keys = load_api_keys(settings.api_keys)
        per_key = parse_rate(settings.rate_limit_per_key, "SAMGIS_RATE_LIMIT_PER_KEY")
        if per_key and not keys:
            raise ValueError("SAMGIS_RATE_LIMIT_PER_KEY needs SAMGIS_API_KEYS (without keys there is no key to "
                             "count by; use SAMGIS_RATE_LIMIT_PER_IP)")
        return cls(keys=keys, per_key=per_key,
                   per_ip=parse_rate(settings.rate_limit_per_ip, "SAMGIS_RATE_LIMIT_PER_IP"),
                   open_paths=frozenset(open_paths))


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of `Authorization: Bearer <key>` or `X-API-Key: <key>`, if either header is present."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def is_api_route(scope) -> bool:
    """Whether the app has a route (mounts aside) for this path, under any method."""
    app = scope.get("app")
    routes = [r for r in getattr(app, "routes", ()) if not isinstance(r, Mount)]
    return any(r.matches(scope)[0] != Match.NONE for r in routes)


def _describe(items: list[RateLimitItem]) -> str:
    return "; ".join(str(i) for i in items)


class AccessControlMiddleware:
    """ASGI middleware enforcing an `AccessPolicy` on API routes (see the module docstring)."""

    def __init__(self, app, policy: AccessPolicy):
        self.app = app
        self.policy = policy
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in self.policy.open_paths \
                or not is_api_route(scope):
            return await self.app(scope, receive, send)
        key = presented_key(scope.get("headers") or [])
        if self.policy.keys:
            if key is None:
                return await reject(send, 401, "an API key is required: send 'Authorization: Bearer <key>' or "
                                               "'X-API-Key: <key>'", "Unauthorized", {"WWW-Authenticate": "Bearer"})
            if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.policy.keys):
                return await reject(send, 401, "the API key is not valid", "Unauthorized",
                                    {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        checks = []
        if self.policy.per_key and key is not None:
            checks += [(item, "key", key_id(key)) for item in self.policy.per_key]
        client = scope.get("client")
        if self.policy.per_ip:
            checks += [(item, "ip", client[0] if client else "unknown") for item in self.policy.per_ip]
        for item, kind, ident in checks:
            if not self.limiter.test(item, kind, ident):
                stats = self.limiter.get_window_stats(item, kind, ident)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                limits = self.policy.per_key if kind == "key" else self.policy.per_ip
                return await reject(send, 429, f"rate limit per {'API key' if kind == 'key' else 'client IP'} "
                                               f"({_describe(limits)}) reached; retry in {retry} s",
                                    "RateLimited", {"Retry-After": str(retry)})
        for item, kind, ident in checks:
            self.limiter.hit(item, kind, ident)
        return await self.app(scope, receive, send)


async def reject(send, status: int, detail: str, error: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail, "field": None, "error": error}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def install_access_control(app, settings, env: Mapping[str, str] | None = None) -> AccessPolicy:
    """Add the access-control middleware (when keys or limits are set) and CORS (when origins are set).
    CORS goes outside, so preflights and the 401/429 answers carry its headers. Bad settings raise ValueError."""
    policy = AccessPolicy.from_settings(settings, env)
    if policy.active:
        app.add_middleware(AccessControlMiddleware, policy=policy)
    origins = parse_origins(settings.cors_origins)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["Retry-After", "X-Request-ID"], max_age=600)
    return policy

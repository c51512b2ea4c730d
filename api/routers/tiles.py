"""GET /v1/tiles/{source}/{z}/{x}/{y}: configured sources through the server's tile cache.

The web map shows basemaps through this route, so local sources (folders, MBTiles) display too and API keys
stay on the server.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from api.resources import Resources, get_resources
from samgis.errors import InvalidRequest

router = APIRouter(tags=["tiles"])


def media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@router.get("/v1/tiles/{source}/{z}/{x}/{y}", summary="One tile of a configured source")
async def tile(source: str, z: int, x: int, y: str, res: Resources = Depends(get_resources)) -> Response:
    src = res.sources.get(source)
    y_num = y.split(".", 1)[0]
    if not y_num.isdigit():
        raise InvalidRequest("y", f"tile row {y!r} is not a number")
    yi = int(y_num)
    n = 1 << z if 0 <= z <= 30 else 0
    if not (0 <= x < n and 0 <= yi < n):
        raise InvalidRequest("x", f"tile {z}/{x}/{yi} does not exist")
    data = await res.fetcher.fetch_tile(src, z, x, yi)
    return Response(data, media_type=media_type(data), headers={"Cache-Control": "public, max-age=86400"})

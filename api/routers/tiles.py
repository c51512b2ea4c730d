"""GET /v1/tiles/{source}/{z}/{x}/{y}: configured sources through the server's tile cache.

The web map shows basemaps through this route, so local sources (folders, MBTiles) display too and API keys
stay on the server.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Depends, Response

from api.resources import Resources, get_resources
from samgis.errors import InvalidRequest

router = APIRouter(tags=["tiles"])

# ASCII digits only (str.isdigit() takes "²" and "١", which int() refuses or reads), as many as a zoom-30 row
# needs, then an optional extension.
_ROW = re.compile(r"([0-9]{1,10})(\.[A-Za-z0-9]{1,8})?")


def media_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


TILE_MEDIA = ("image/png", "image/jpeg", "image/webp", "application/octet-stream")


@router.get("/v1/tiles/{source}/{z}/{x}/{y}", summary="One tile of a configured source", response_class=Response,
            responses={200: {"description": "the tile's bytes as the source sent them",
                             "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in TILE_MEDIA}}})
async def tile(source: str, z: int, x: int, y: str, res: Resources = Depends(get_resources)) -> Response:
    src = res.sources.get(source)
    m = _ROW.fullmatch(y)
    if m is None:
        raise InvalidRequest("y", f"tile row {y[:40]!r} is not a tile number (ASCII digits, optionally "
                                  "followed by an extension such as .png)")
    yi = int(m[1])
    n = 1 << z if 0 <= z <= 30 else 0
    if not (0 <= x < n and 0 <= yi < n):
        raise InvalidRequest("x", f"tile {z}/{x}/{yi} does not exist")
    data = await res.readers(src).display_tile(z, x, yi, deadline=time.monotonic() + res.settings.deadline_s)
    return Response(data, media_type=media_type(data), headers={"Cache-Control": "public, max-age=86400"})

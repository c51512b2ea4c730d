"""A disk cache of tile bytes with per-tile expiry.

Layout: ROOT/<source>/<z>/<x>/<y>.tile, where <source> is a filesystem-safe form of the source's
cache id. Each file holds an 8-byte header (magic + version), the expiry time (float64 seconds
since the epoch, big-endian) and the tile bytes. Writes go to a temporary file in the same folder
and are renamed into place, so readers in any thread or process see either the old or the new
tile, never half of one.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

_MAGIC = b"SGTILE01"
_HEADER = struct.Struct(">8sd")


def ttl_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds an HTTP response may be cached, from its headers (names case-insensitive).

    None: the headers say nothing (use the cache's default). 0.0: do not cache
    (Cache-Control no-store / no-cache / max-age=0, or an Expires in the past or invalid).
    s-maxage wins over max-age, which wins over Expires; Age is subtracted.

    >>> ttl_from_headers({"Cache-Control": "public, max-age=3600"}, now=0)
    3600.0
    >>> ttl_from_headers({"cache-control": "no-store"}, now=0)
    0.0
    >>> ttl_from_headers({"Expires": "Thu, 01 Jan 1970 00:01:40 GMT"}, now=40)
    60.0
    >>> ttl_from_headers({}) is None
    True
    """
    h = {k.lower(): v for k, v in headers.items()}
    age = _number(h.get("age")) or 0.0
    directives = _cache_control(h.get("cache-control", ""))
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in directives:
            value = _number(directives[name])
            if value is not None:
                return max(0.0, value - age)
    if "expires" in h:
        expires = _http_date(h["expires"])
        if expires is None:
            return 0.0
        base = _http_date(h.get("date", "")) if "date" in h else None
        if base is None:
            base = time.time() if now is None else now
        return max(0.0, expires - base)
    return None


def _cache_control(value: str) -> dict[str, str]:
    out = {}
    for part in value.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = arg.strip().strip('"')
    return out


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class TileCache:
    """Tile bytes on disk under `root`, each with its own expiry.

    `clock` returns the current time in seconds since the epoch (tests pass a fake one).
    """

    def __init__(
        self,
        root: Path | str,
        default_ttl_s: float = 7 * 86400,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.root = Path(root)
        self.default_ttl_s = float(default_ttl_s)
        self.clock = clock

    def path(self, source_id: str, z: int, x: int, y: int) -> Path:
        """Where tile (z, x, y) of `source_id` is stored."""
        return self.root / _safe_name(source_id) / str(int(z)) / str(int(x)) / f"{int(y)}.tile"

    def get(self, source_id: str, z: int, x: int, y: int) -> bytes | None:
        """The cached tile bytes, or None when missing, expired or unreadable."""
        try:
            blob = self.path(source_id, z, x, y).read_bytes()
        except OSError:
            return None
        if len(blob) < _HEADER.size:
            return None
        magic, expires = _HEADER.unpack_from(blob)
        if magic != _MAGIC or expires <= self.clock():
            return None
        return blob[_HEADER.size :]

    def put(
        self, source_id: str, z: int, x: int, y: int, data: bytes, ttl_s: float | None = None
    ) -> bool:
        """Store tile bytes for `ttl_s` seconds (None: the default). Returns whether it stored.

        A ttl of 0 or less (e.g. from Cache-Control: no-store) stores nothing and drops any
        older copy.
        """
        target = self.path(source_id, z, x, y)
        ttl = self.default_ttl_s if ttl_s is None else float(ttl_s)
        if ttl <= 0:
            target.unlink(missing_ok=True)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, self.clock() + ttl))
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True


def _safe_name(source_id: str) -> str:
    """A folder name for a source id: readable part plus a digest, so ids never collide or
    escape the cache root.

    >>> _safe_name("OpenStreetMap.Mapnik@1a2b")[:25]
    'OpenStreetMap.Mapnik_1a2b'
    >>> _safe_name("../etc")[:7]
    '_.._etc'
    """
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", source_id)[:64]
    digest = hashlib.sha1(source_id.encode()).hexdigest()[:10]
    return f"_{readable}-{digest}" if readable.startswith(".") else f"{readable}-{digest}"

"""Fetch tiles and mosaic a window into an RGB array.

One shared httpx.AsyncClient with a real User-Agent; at most `per_source` requests in flight per
source and `per_host` per host, so a slow source holds only its own connection slots, never those
of other sources on the same host; retries with exponential backoff on connect errors, timeouts,
5xx and 429; the disk tile cache is read before the network and written with the expiry the
server asked for. Folder and MBTiles sources are read from disk in worker threads.

Deadlines: every fetch may carry `deadline`, a `time.monotonic()` instant. Waiting for a
connection slot, each attempt's timeout and the backoff between attempts all fit in what is left
of it; when nothing is left the fetch fails with `UpstreamTimeout` (HTTP 504) at once, instead of
after `retries + 1` full timeouts.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from samgis import __version__
from samgis.errors import InvalidRequest, SamgisError, UpstreamError, UpstreamTimeout
from samgis.geo.sources import TileSource
from samgis.geo.tilecache import TileCache, ttl_from_headers
from samgis.geo.tiles import Window

log = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"samgis/{__version__} (+https://github.com/samgis)"
#: Largest tile body accepted from the network, in bytes.
MAX_TILE_BYTES = 16 * 2**20
#: Colour of missing tiles in windows of local (folder, MBTiles) sources.
BLANK_RGB = (255, 255, 255)


class TileNotFound(UpstreamError):
    """The source has no such tile (HTTP 404, or a missing file / MBTiles row)."""


class TileFetcher:
    """Fetches tiles of configured sources; share one per process (per event loop).

    `stats` counts "network" (HTTP requests sent, retries included), "retries",
    "cache_hits" (tiles from the disk cache), "local" (tiles read from folder / MBTiles
    sources) and "errors" (tile fetches that failed).
    """

    def __init__(
        self,
        cache: TileCache | None = None,
        *,
        user_agent: str = DEFAULT_USER_AGENT,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        per_source: int = 2,
        per_host: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        if per_source < 1 or per_host < 1 or retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise ValueError("need per_source >= 1, per_host >= 1, retries >= 0, timeout_s > 0, backoff_s >= 0")
        self.cache = cache
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.per_source = per_source  # 2: OpenStreetMap's tile policy, one source per host there
        self.per_host = per_host
        self.stats: dict[str, int] = dict.fromkeys(
            ("network", "retries", "cache_hits", "local", "errors"), 0
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._per_source: dict[tuple[str, str], asyncio.Semaphore] = {}

    async def __aenter__(self) -> TileFetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client; a later fetch opens a new one.

        A client made in another (finished) event loop cannot be closed from this one and is
        dropped instead.
        """
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def fetch_tile(self, source: TileSource, z: int, x: int, y: int,
                         deadline: float | None = None) -> bytes:
        """The encoded bytes of tile (z, x, y), checked to decode as a source.tile_size image.

        `deadline`: `time.monotonic()` instant by which to answer or fail (`UpstreamTimeout`)."""
        data, _ = await self._tile(source, z, x, y, deadline)
        return data

    async def fetch_window(self, source: TileSource, window: Window, deadline: float | None = None) -> np.ndarray:
        """The window's pixels: (size, size, 3) uint8 RGB, row 0 = north, window px frame.

        Tiles are fetched concurrently. Transparent pixels come out white; so do tiles missing
        from a local source, as long as the source has at least one tile of the window.
        `deadline`: `time.monotonic()` instant by which to answer or fail (`UpstreamTimeout`); the
        first failing tile cancels the others.
        """
        check_zoom(source, window.z)
        if window.tile_size != source.tile_size:
            raise InvalidRequest(
                "source",
                f"tile source {source.id!r} has {source.tile_size} px tiles, "
                f"the window expects {window.tile_size} px",
            )
        tiles = window.tiles_list()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._window_tile(source, t.z, t.x, t.y, deadline)) for t in tiles]
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None
        arrays = [task.result() for task in tasks]
        if all(a is None for a in arrays):
            z, x, y = window.z, window.x, window.y
            raise TileNotFound(
                f"tile source {source.id!r} has no tiles in window z={z} x={x} y={y} "
                f"({window.tiles}x{window.tiles} tiles)"
            )
        out = np.empty((window.size, window.size, 3), np.uint8)
        ts = window.tile_size
        for tile, rgb in zip(tiles, arrays, strict=True):
            i, j = tile.x - window.x, tile.y - window.y
            out[j * ts : (j + 1) * ts, i * ts : (i + 1) * ts] = BLANK_RGB if rgb is None else rgb
        return out

    async def _window_tile(self, source: TileSource, z: int, x: int, y: int,
                           deadline: float | None) -> np.ndarray | None:
        try:
            _, rgb = await self._tile(source, z, x, y, deadline)
        except TileNotFound:
            if source.is_local:
                return None
            raise
        return rgb

    async def _tile(self, source: TileSource, z: int, x: int, y: int,
                    deadline: float | None = None) -> tuple[bytes, np.ndarray]:
        """(bytes, (tile_size, tile_size, 3) uint8 RGB) of one tile: cache, disk or network."""
        check_zoom(source, z)
        if not (0 <= x < 2**z and 0 <= y < 2**z):
            raise InvalidRequest("tile", f"tile {z}/{x}/{y} is outside the tile grid")
        try:
            return await self._load(source, z, x, y, deadline)
        except SamgisError:
            self.stats["errors"] += 1
            raise

    async def _load(self, source: TileSource, z: int, x: int, y: int,
                    deadline: float | None) -> tuple[bytes, np.ndarray]:
        where = f"tile source {source.id!r} tile {z}/{x}/{y}"  # no URL or path: messages reach clients
        if source.is_local:
            data = await asyncio.to_thread(read_local_tile, source, z, x, y)
            self.stats["local"] += 1
            return data, await asyncio.to_thread(decode_tile, data, source.tile_size, where)
        if self.cache is not None:
            data = await asyncio.to_thread(self.cache.get, source.cache_id, z, x, y)
            if data is not None:
                try:
                    rgb = await asyncio.to_thread(decode_tile, data, source.tile_size, where)
                except UpstreamError:
                    log.warning("dropping undecodable cached %s", where)
                else:
                    self.stats["cache_hits"] += 1
                    return data, rgb
        data, ttl = await self._download(source, z, x, y, deadline)
        rgb = await asyncio.to_thread(decode_tile, data, source.tile_size, where)
        if self.cache is not None:
            try:
                await asyncio.to_thread(self.cache.put, source.cache_id, z, x, y, data, ttl)
            except OSError as e:
                log.warning("could not write %s to the tile cache: %s", where, e)
        return data, rgb

    def _http(self) -> httpx.AsyncClient:
        """The shared client, (re)made for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                headers={"User-Agent": self.user_agent},
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=True,
                transport=self._transport,
            )
            self._loop = loop
            self._per_host, self._per_source = {}, {}
        return self._client

    def _slots(self, host: str, source: TileSource) -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
        """(this source's, this host's) connection slots; a request holds one of each, source first."""
        mine = self._per_source.setdefault((host, source.cache_id), asyncio.Semaphore(self.per_source))
        return mine, self._per_host.setdefault(host, asyncio.Semaphore(self.per_host))

    async def _download(
        self, source: TileSource, z: int, x: int, y: int, deadline: float | None = None
    ) -> tuple[bytes, float | None]:
        """(body, cache ttl from headers) of a 2xx answer, retrying transient failures while the
        deadline (a `time.monotonic()` instant, None = none) leaves time."""
        url = source.tile_url(z, x, y)
        shown = source.tile_url(z, x, y, redact=True)  # for the log only (`detail`), key redacted
        what = f"tile source {source.id!r}"
        tile = f"tile {z}/{x}/{y}"
        client = self._http()
        source_slots, host_slots = self._slots(urlsplit(url).netloc, source)
        attempts = self.retries + 1
        problem, timed_out, delay, detail = "", False, 0.0, shown
        tried = 0
        for attempt in range(attempts):
            if attempt:
                if deadline is not None and time.monotonic() + delay >= deadline:
                    break  # no time left for another attempt
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
            delay = self.backoff_s * 2**attempt
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            tried += 1
            try:
                # waiting for a connection slot counts against the deadline only; the request itself gets
                # tile_timeout_s, or what is left of the deadline when that is less
                async with asyncio.timeout(left):
                    async with source_slots, host_slots:
                        budget = self.timeout_s if deadline is None else min(self.timeout_s,
                                                                             deadline - time.monotonic())
                        async with asyncio.timeout(budget):
                            self.stats["network"] += 1
                            status, headers, body = await _get(client, url)
            except (TimeoutError, httpx.TimeoutException):
                if deadline is not None and time.monotonic() >= deadline - 0.01:
                    problem = "gave no answer within the request's deadline"
                else:
                    problem = f"timed out: no answer within {self.timeout_s:g} s"
                timed_out = True
                continue
            except httpx.TransportError as e:
                problem, timed_out = "could not be reached", False
                detail = f"{shown}: {str(e).replace(url, shown) or type(e).__name__}"
                continue
            except httpx.HTTPError as e:  # redirect loops, bad content encodings: not transient
                raise UpstreamError(f"{what} failed for {tile}: {type(e).__name__}",
                                    detail=f"{shown}: {str(e).replace(url, shown)}") from None
            if 200 <= status < 300:
                if len(body) > MAX_TILE_BYTES:
                    raise UpstreamError(f"{what} sent more than {MAX_TILE_BYTES} bytes for {tile}", detail=shown)
                return body, ttl_from_headers(headers)
            problem, timed_out, detail = f"answered {status}", False, shown
            if status == 429 or status >= 500:
                delay = max(delay, min(_retry_after(headers), self.timeout_s))
                continue
            error = TileNotFound if status == 404 else UpstreamError
            raise error(f"{what} answered {status} for {tile}", detail=shown)
        if tried == 0:
            raise UpstreamTimeout(f"{what}: the request's deadline passed before {tile} could be fetched",
                                  detail=detail)
        if tried < attempts and "deadline" not in problem:
            problem += "; the request's deadline left no time to retry"
        error = UpstreamTimeout if timed_out else UpstreamError
        raise error(f"{what} {problem} for {tile}; gave up after {tried} attempt{'s' if tried != 1 else ''}",
                    detail=detail)


async def _get(client: httpx.AsyncClient, url: str) -> tuple[int, httpx.Headers, bytes]:
    """(status, headers, body) of GET url; the body is read only for 2xx, up to MAX_TILE_BYTES + 1."""
    async with client.stream("GET", url) as response:
        if not response.is_success:
            return response.status_code, response.headers, b""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_TILE_BYTES:
                break
        return response.status_code, response.headers, b"".join(chunks)


def _retry_after(headers: httpx.Headers) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def check_zoom(source: TileSource, z: int) -> None:
    """Raise InvalidRequest("zoom") unless source serves zoom z."""
    if not source.min_zoom <= z <= source.max_zoom:
        raise InvalidRequest(
            "zoom",
            f"tile source {source.id!r} serves zooms {source.min_zoom}..{source.max_zoom}, got {z}",
        )


def decode_tile(data: bytes, tile_size: int, where: str = "tile") -> np.ndarray:
    """Decode an encoded tile to (tile_size, tile_size, 3) uint8 RGB, row 0 = north.

    RGBA / LA / palette images with transparency are composited over white; L and P become
    grey / palette colours. Raises UpstreamError for undecodable bytes or another size (Pillow's own
    message, which names Python objects, only in `detail`).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (tile_size, tile_size):
                w, h = im.size
                raise UpstreamError(f"{where}: tile is {w}x{h} px, expected {tile_size}x{tile_size}")
            im.load()
            rgb = _rgb(im)
    except UpstreamError:
        raise
    except Exception as e:  # Pillow raises many types for bad data
        raise UpstreamError(f"{where}: not a decodable image ({type(e).__name__})", detail=str(e)) from e
    return np.array(rgb, dtype=np.uint8)


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (*BLANK_RGB, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def read_local_tile(source: TileSource, z: int, x: int, y: int) -> bytes:
    """Encoded bytes of tile (z, x, y) of a folder or MBTiles source (blocking; run in a thread).

    MBTiles rows are TMS: tile_row = 2**z - 1 - y. Raises TileNotFound when the tile is absent.
    """
    what = f"tile source {source.id!r}"
    if source.kind == "folder":
        path = Path(source.tile_url(z, x, y))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise TileNotFound(f"{what} has no tile {z}/{x}/{y}", detail=str(path)) from None
        except OSError as e:
            raise UpstreamError(f"{what} cannot read tile {z}/{x}/{y} ({type(e).__name__})",
                                detail=f"{path}: {e}") from e
    if source.kind == "mbtiles":
        assert source.path is not None
        row = _mbtiles_row(source.path, z, x, 2**z - 1 - y, what)
        if row is None:
            raise TileNotFound(f"{what} has no tile {z}/{x}/{y}", detail=str(source.path))
        return row
    raise ValueError(f"{what} is not a local source")


def mbtiles_bounds(path: str) -> tuple[float, float, float, float] | None:
    """The `bounds` row of an MBTiles file's `metadata` table as (west, south, east, north) degrees EPSG:4326,
    or None when the file has no such row (MBTiles 1.3 only suggests it: github.com/mapbox/mbtiles-spec,
    1.3/spec.md, "bounds": WGS 84 "left, bottom, right, top", e.g. "-180.0,-85,180,85"). Blocking.

    Raises UpstreamError when the file cannot be read, ValueError when the row is not four numbers with
    west < east, south < north within lng [-180, 180], lat [-90, 90].
    """
    file = Path(path)
    try:
        con = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = con.execute("SELECT value FROM metadata WHERE name = 'bounds'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise UpstreamError("cannot read the MBTiles file's metadata", detail=f"{path}: {e}") from e
    if found is None or found[0] is None or not str(found[0]).strip():
        return None
    try:
        west, south, east, north = (float(v) for v in str(found[0]).split(","))
    except ValueError:
        raise ValueError(f"MBTiles metadata bounds {found[0]!r} is not 'west,south,east,north'") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError(f"MBTiles metadata bounds {found[0]!r} is not a lng/lat box (west < east, south < north)")
    return west, south, east, north


def _mbtiles_row(path: str, z: int, col: int, row: int, what: str) -> bytes | None:
    file = Path(path)
    if not file.is_file():
        raise UpstreamError(f"{what} is unavailable: its MBTiles file does not exist", detail=str(path))
    try:
        con = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = con.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
                (z, col, row),
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise UpstreamError(f"{what} is unavailable: cannot read its MBTiles file", detail=f"{path}: {e}") from e
    return None if found is None or found[0] is None else bytes(found[0])

"""Tile fetching and the disk tile cache (samgis.geo.fetch, samgis.geo.tilecache).

Fetching runs against a real HTTP server on 127.0.0.1 (http.server in a thread, ephemeral port)
that serves small generated PNG tiles and misbehaves on purpose on some routes.
"""

from __future__ import annotations

import asyncio
import doctest
import functools
import io
import json
import socket
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import samgis.geo.tilecache as tilecache_module
from samgis.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from samgis.geo.fetch import DEFAULT_USER_AGENT, TileFetcher, TileNotFound, decode_tile, mbtiles_bounds
from samgis.geo.sources import SourceRegistry, TileSource
from samgis.geo.tilecache import TileCache, ttl_from_headers
from samgis.geo.tiles import Window

MARKER = (1, 2, 3)  # colour of a 16x16 px square in each tile's NW corner


def tile_colour(z: int, x: int, y: int) -> tuple[int, int, int]:
    """A colour that differs between neighbouring tiles."""
    return ((x * 40 + 20) % 256, (y * 40 + 20) % 256, (z * 10 + 5) % 256)


@functools.lru_cache(maxsize=None)
def tile_png(z: int, x: int, y: int, size: int = 256, mode: str = "RGB") -> bytes:
    """A PNG tile: solid tile_colour with a MARKER square at its NW corner."""
    arr = np.empty((size, size, 3), np.uint8)
    arr[:] = tile_colour(z, x, y)
    arr[:16, :16] = MARKER
    img = Image.fromarray(arr)
    if mode == "RGBA":  # west half opaque, east half fully transparent
        alpha = np.zeros((size, size), np.uint8)
        alpha[:, : size // 2] = 255
        img.putalpha(Image.fromarray(alpha))
    elif mode == "L":
        img = Image.new("L", (size, size), 77)
    elif mode == "P":
        img = Image.new("P", (size, size), 1)
        img.putpalette([0, 0, 0, 10, 200, 30] + [0] * (254 * 3))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def expected_window(window: Window) -> np.ndarray:
    """(size, size, 3) uint8: what fetch_window must return for /ok tiles."""
    out = np.empty((window.size, window.size, 3), np.uint8)
    for t in window.tiles_list():
        i, j = t.x - window.x, t.y - window.y
        block = out[j * 256 : (j + 1) * 256, i * 256 : (i + 1) * 256]
        block[:] = tile_colour(t.z, t.x, t.y)
        block[:16, :16] = MARKER
    return out


class TileServer:
    """XYZ tiles at http://127.0.0.1:PORT/ROUTE/{z}/{x}/{y}.png; ROUTE picks the behaviour.

    ok: the tile; cc: the tile with `cache_headers`; missing: 404; forbidden: 403;
    flaky: 500 on the first request of each tile, then the tile; down: always 500;
    busy: 429 (Retry-After: 0) first, then the tile; slow: sleeps `slow_s` first;
    garbage: 200 with a text body; big: a 512 px tile; rgba / gray / pal: other PNG modes;
    moved: 301 to the same tile under ok; loop: 302 to itself, forever.
    Every tile answer waits `delay_s`. Counts requests per path and the peak in flight.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # client hung up: fine
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.requests: Counter[str] = Counter()
            self.user_agents: list[str] = []
            self.in_flight = 0
            self.max_in_flight = 0
        self.delay_s = 0.0
        self.slow_s = 1.0
        self.cache_headers: dict[str, str] = {}

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/{{z}}/{{x}}/{{y}}.png"

    def source(self, route: str, **kw: object) -> TileSource:
        return TileSource(f"test-{route}", "xyz", url=self.url(route), max_zoom=22, **kw)

    def count(self, route: str) -> int:
        with self.lock:
            return sum(n for p, n in self.requests.items() if p.startswith(f"/{route}/"))

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests[h.path] += 1
            seen = self.requests[h.path]
            self.user_agents.append(h.headers.get("User-Agent", ""))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.answer(h, seen)
        finally:
            with self.lock:
                self.in_flight -= 1

    def answer(self, h: BaseHTTPRequestHandler, seen: int) -> None:
        route, *rest = h.path.strip("/").split("/")
        z, x, y = (int(v) for v in (rest[0], rest[1], rest[2].split(".")[0]))
        time.sleep(self.delay_s)
        headers: dict[str, str] = {}
        if route == "missing":
            return self.send(h, 404, b"no such tile")
        if route == "forbidden":
            return self.send(h, 403, b"go away")
        if route == "down" or (route == "flaky" and seen == 1):
            return self.send(h, 500, b"oops")
        if route == "busy" and seen == 1:
            return self.send(h, 429, b"slow down", {"Retry-After": "0"})
        if route == "moved":
            return self.send(h, 301, b"", {"Location": h.path.replace("/moved/", "/ok/", 1)})
        if route == "loop":
            return self.send(h, 302, b"", {"Location": h.path})
        if route == "slow":
            time.sleep(self.slow_s)
        if route == "garbage":
            return self.send(h, 200, b"hello, not a png", {"Content-Type": "text/plain"})
        if route == "cc":
            headers = dict(self.cache_headers)
        size = 512 if route == "big" else 256
        mode = {"rgba": "RGBA", "gray": "L", "pal": "P"}.get(route, "RGB")
        self.send(h, 200, tile_png(z, x, y, size, mode), {"Content-Type": "image/png", **headers})

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(status)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout tests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tile_server():
    server = TileServer()
    yield server
    server.close()


@pytest.fixture
def server(tile_server):
    tile_server.reset()
    return tile_server


def fetcher(cache: TileCache | None = None, **kw: object) -> TileFetcher:
    options = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01}
    options.update(kw)
    return TileFetcher(cache, **options)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- fetching over HTTP


@pytest.mark.asyncio
async def test_fetch_window_mosaics_tiles_north_up(server):
    window = Window(z=10, x=100, y=200)
    async with fetcher() as f:
        rgb = await f.fetch_window(server.source("ok"), window)
    assert rgb.shape == (1024, 1024, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, expected_window(window))
    assert server.count("ok") == 16
    assert f.stats["network"] == 16 and f.stats["errors"] == 0
    assert set(server.user_agents) == {DEFAULT_USER_AGENT}
    assert DEFAULT_USER_AGENT.startswith("samgis/")


@pytest.mark.asyncio
async def test_fetch_tile_returns_the_served_bytes(server):
    async with fetcher() as f:
        data = await f.fetch_tile(server.source("ok"), 3, 1, 2)
    assert data == tile_png(3, 1, 2)
    assert server.requests["/ok/3/1/2.png"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("route, status", [("missing", 404), ("forbidden", 403)])
async def test_4xx_is_an_upstream_error_without_retry(server, route, status):
    async with fetcher(retries=3) as f:
        with pytest.raises(UpstreamError) as e:
            await f.fetch_tile(server.source(route), 3, 1, 2)
    message = str(e.value)
    assert f"tile source 'test-{route}' answered {status} for tile 3/1/2" in message
    # the URL (internal host:port) is for the log only
    assert "127.0.0.1" not in message and f"127.0.0.1:{server.port}/{route}/3/1/2.png" in e.value.detail
    assert not isinstance(e.value, UpstreamTimeout)
    assert isinstance(e.value, TileNotFound) == (status == 404)
    assert server.count(route) == 1
    assert f.stats["errors"] == 1 and f.stats["retries"] == 0


@pytest.mark.asyncio
async def test_404_inside_a_window_fails_the_window(server):
    async with fetcher() as f:
        with pytest.raises(TileNotFound, match="answered 404"):
            await f.fetch_window(server.source("missing"), Window(z=5, x=4, y=4))


@pytest.mark.asyncio
@pytest.mark.parametrize("route", ["flaky", "busy"])
async def test_5xx_and_429_are_retried(server, route):
    async with fetcher(retries=2) as f:
        data = await f.fetch_tile(server.source(route), 4, 5, 6)
    assert data == tile_png(4, 5, 6)
    assert server.requests[f"/{route}/4/5/6.png"] == 2
    assert f.stats["retries"] == 1 and f.stats["network"] == 2 and f.stats["errors"] == 0


@pytest.mark.asyncio
async def test_persistent_5xx_gives_up_after_the_retries(server):
    async with fetcher(retries=2) as f:
        with pytest.raises(UpstreamError, match="answered 500 for tile 4/5/6.*after 3 attempts"):
            await f.fetch_tile(server.source("down"), 4, 5, 6)
    assert server.count("down") == 3


@pytest.mark.asyncio
async def test_redirects_are_followed_but_not_forever(server):
    async with fetcher() as f:
        assert await f.fetch_tile(server.source("moved"), 3, 2, 1) == tile_png(3, 2, 1)
        with pytest.raises(UpstreamError, match="failed for tile 3/2/1") as e:
            await f.fetch_tile(server.source("loop"), 3, 2, 1)
    assert not isinstance(e.value, UpstreamTimeout)
    assert server.requests["/ok/3/2/1.png"] == 1
    assert 5 < server.count("loop") <= 25  # httpx's redirect limit, one attempt only


@pytest.mark.asyncio
async def test_backoff_grows_exponentially(server):
    async with fetcher(retries=2, backoff_s=0.1) as f:
        start = time.perf_counter()
        with pytest.raises(UpstreamError):
            await f.fetch_tile(server.source("down"), 4, 5, 6)
        elapsed = time.perf_counter() - start
    assert 0.3 <= elapsed < 2.0  # 0.1 + 0.2 s of sleeping between the 3 attempts


@pytest.mark.asyncio
async def test_slow_server_times_out(server):
    server.slow_s = 1.0
    async with fetcher(timeout_s=0.2, retries=1) as f:
        start = time.perf_counter()
        with pytest.raises(UpstreamTimeout) as e:
            await f.fetch_tile(server.source("slow"), 2, 1, 1)
        elapsed = time.perf_counter() - start
    assert "timed out: no answer within 0.2 s for tile 2/1/1" in str(e.value)
    assert "after 2 attempts" in str(e.value)
    assert elapsed < 1.5
    assert server.count("slow") == 2


@pytest.mark.asyncio
async def test_unreachable_host_is_an_upstream_error(server):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = TileSource("closed", "xyz", url=f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png")
    async with fetcher(retries=1) as f:
        with pytest.raises(UpstreamError, match="could not be reached.*after 2 attempts") as e:
            await f.fetch_tile(source, 1, 0, 0)
    assert not isinstance(e.value, UpstreamTimeout)
    assert f.stats["network"] == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("per_source, per_host, peak", [(2, 8, {2}), (4, 8, {3, 4}), (4, 2, {2})])
async def test_at_most_per_source_and_per_host_requests_in_flight(server, per_source, per_host, peak):
    server.delay_s = 0.03
    async with fetcher(per_source=per_source, per_host=per_host) as f:
        await f.fetch_window(server.source("ok"), Window(z=6, x=8, y=8))
    assert server.count("ok") == 16
    assert server.max_in_flight in peak


@pytest.mark.asyncio
async def test_hanging_source_answers_504_within_the_deadline_retries_included(server):
    server.slow_s = 30.0  # hangs far longer than anyone waits
    async with fetcher(timeout_s=10.0, retries=3, backoff_s=0.2) as f:
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout) as e:
            await f.fetch_window(server.source("slow"), Window(z=6, x=8, y=8), deadline=start + 1.0)
        elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.4, elapsed  # not 4 attempts × 10 s
    assert "deadline" in str(e.value) and "tile 6/" in str(e.value)
    assert server.count("slow") == 2  # the source's two slots; the other tiles never got one


@pytest.mark.asyncio
async def test_deadline_leaves_no_time_for_a_retry(server):
    async with fetcher(timeout_s=5.0, retries=3, backoff_s=1.0) as f:
        start = time.monotonic()
        with pytest.raises(UpstreamError, match="answered 500.*no time to retry.*after 1 attempt") as e:
            await f.fetch_tile(server.source("down"), 4, 5, 6, deadline=start + 0.5)
        assert time.monotonic() - start < 0.4  # the 1 s backoff would pass the deadline: give up at once
    assert not isinstance(e.value, UpstreamTimeout)  # the source failed; it did not hang
    with pytest.raises(UpstreamTimeout, match="deadline passed before tile 4/5/6"):
        await fetcher().fetch_tile(server.source("ok"), 4, 5, 6, deadline=time.monotonic() - 1)
    assert server.count("ok") == 0


@pytest.mark.asyncio
async def test_slow_source_does_not_hold_the_slots_of_another_source_on_the_same_host(server):
    server.slow_s = 3.0
    async with fetcher(timeout_s=10.0, retries=0) as f:  # default slots: 2 per source, 8 per host
        slow = asyncio.create_task(f.fetch_window(server.source("slow"), Window(z=6, x=8, y=8)))
        await asyncio.sleep(0.2)  # the slow source now holds its connections
        start = time.monotonic()
        image = await f.fetch_window(server.source("ok"), Window(z=6, x=12, y=12))
        healthy_s = time.monotonic() - start
        slow.cancel()
    assert image.shape == (1024, 1024, 3)
    assert healthy_s < 1.0, healthy_s  # before: queued behind the slow source's requests (minutes)


@pytest.mark.asyncio
async def test_not_an_image_is_an_upstream_error_and_not_cached(server, tmp_path):
    cache = TileCache(tmp_path)
    async with fetcher(cache) as f:
        for _ in range(2):
            with pytest.raises(UpstreamError, match="not a decodable image"):
                await f.fetch_tile(server.source("garbage"), 3, 1, 1)
    assert server.count("garbage") == 2  # the bad body was not cached
    assert not list(tmp_path.rglob("*.tile"))


@pytest.mark.asyncio
async def test_tile_of_the_wrong_size_is_an_upstream_error(server):
    async with fetcher() as f:
        with pytest.raises(UpstreamError, match="tile is 512x512 px, expected 256x256"):
            await f.fetch_window(server.source("big"), Window(z=3, x=0, y=0))
        tile = await f.fetch_tile(server.source("big", tile_size=512), 3, 0, 0)
    assert Image.open(io.BytesIO(tile)).size == (512, 512)


@pytest.mark.asyncio
async def test_rgba_palette_and_grey_tiles_become_rgb(server):
    window = Window(z=1, x=0, y=0)
    async with fetcher() as f:
        rgba = await f.fetch_window(server.source("rgba"), window)
        grey = await f.fetch_window(server.source("gray"), window)
        pal = await f.fetch_window(server.source("pal"), window)
    assert rgba.shape == grey.shape == pal.shape == (512, 512, 3)
    # Tile (1, 0): west half opaque in its own colour, east half transparent -> white.
    np.testing.assert_array_equal(rgba[100, 256 + 100], tile_colour(1, 1, 0))
    np.testing.assert_array_equal(rgba[100, 256 + 200], (255, 255, 255))
    assert (grey == 77).all()
    assert (pal == np.array([10, 200, 30], np.uint8)).all()


@pytest.mark.asyncio
async def test_zoom_outside_the_source_range(server):
    source = TileSource("z", "xyz", url=server.url("ok"), min_zoom=2, max_zoom=5)
    async with fetcher() as f:
        for z in (1, 6):
            with pytest.raises(InvalidRequest) as e:
                await f.fetch_tile(source, z, 0, 0)
            assert e.value.field == "zoom" and "2..5" in str(e.value)
        with pytest.raises(InvalidRequest) as e:
            await f.fetch_window(source, Window(z=6, x=0, y=0))
        assert e.value.field == "zoom"
        with pytest.raises(InvalidRequest):
            await f.fetch_tile(source, 3, 8, 0)  # x beyond the grid at z=3
    assert server.count("ok") == 0


@pytest.mark.asyncio
async def test_api_key_is_sent_but_never_shown(server, monkeypatch):
    monkeypatch.setenv("TEST_TILE_KEY", "s3cret")
    source = TileSource(
        "keyed", "xyz", url=server.url("missing") + "?key={apikey}", api_key_env="TEST_TILE_KEY"
    )
    async with fetcher() as f:
        with pytest.raises(UpstreamError) as e:
            await f.fetch_tile(source, 3, 1, 2)
    assert "s3cret" not in str(e.value) and "s3cret" not in e.value.detail and "key=***" in e.value.detail
    assert server.requests["/missing/3/1/2.png?key=s3cret"] == 1


@pytest.mark.asyncio
async def test_providers_file_points_osm_at_a_mirror(server, tmp_path):
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"OpenStreetMap.Mapnik": {"url": server.url("ok")}}))
    source = SourceRegistry.from_config(providers).get("OpenStreetMap.Mapnik")
    window = Window(z=12, x=2000, y=1300)
    async with fetcher() as f:
        rgb = await f.fetch_window(source, window)
    np.testing.assert_array_equal(rgb, expected_window(window))
    assert server.requests["/ok/12/2000/1300.png"] == 1


@pytest.mark.asyncio
async def test_custom_transport_is_used():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=tile_png(2, 1, 3))

    source = TileSource("mock", "xyz", url="https://tiles.invalid/{z}/{x}/{y}.png")
    async with fetcher(transport=httpx.MockTransport(handler)) as f:
        assert await f.fetch_tile(source, 2, 1, 3) == tile_png(2, 1, 3)
    assert seen == ["https://tiles.invalid/2/1/3.png"]


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the first loop's client is dropped
def test_one_fetcher_across_event_loops(server):
    f = fetcher()
    source = server.source("ok")
    assert asyncio.run(f.fetch_tile(source, 2, 0, 0)) == tile_png(2, 0, 0)
    assert asyncio.run(f.fetch_tile(source, 2, 1, 0)) == tile_png(2, 1, 0)
    asyncio.run(f.aclose())


# ---------------------------------------------------------------- disk tile cache via the fetcher


@pytest.mark.asyncio
async def test_disk_cache_serves_the_second_fetch(server, tmp_path):
    window = Window(z=9, x=260, y=170)
    source = server.source("ok")
    async with fetcher(TileCache(tmp_path)) as f:
        first = await f.fetch_window(source, window)
    assert server.count("ok") == 16
    async with fetcher(TileCache(tmp_path)) as g:  # a new process would see the same files
        second = await g.fetch_window(source, window)
    assert server.count("ok") == 16
    assert g.stats["cache_hits"] == 16 and g.stats["network"] == 0
    np.testing.assert_array_equal(first, second)


@pytest.mark.asyncio
async def test_cache_honours_max_age(server, tmp_path):
    clock = FakeClock()
    server.cache_headers = {"Cache-Control": "public, max-age=60"}
    source = server.source("cc")
    async with fetcher(TileCache(tmp_path, default_ttl_s=10_000, clock=clock)) as f:
        await f.fetch_tile(source, 5, 3, 3)
        clock.now += 59
        await f.fetch_tile(source, 5, 3, 3)
        assert server.count("cc") == 1
        clock.now += 2
        await f.fetch_tile(source, 5, 3, 3)
        assert server.count("cc") == 2


@pytest.mark.asyncio
async def test_cache_uses_its_default_ttl_without_headers(server, tmp_path):
    clock = FakeClock()
    source = server.source("cc")
    async with fetcher(TileCache(tmp_path, default_ttl_s=10, clock=clock)) as f:
        await f.fetch_tile(source, 5, 3, 3)
        clock.now += 9
        await f.fetch_tile(source, 5, 3, 3)
        assert server.count("cc") == 1
        clock.now += 2
        await f.fetch_tile(source, 5, 3, 3)
        assert server.count("cc") == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "no-cache"},
        {"Cache-Control": "max-age=0"},
        {"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"},
    ],
)
async def test_uncacheable_answers_are_not_stored(server, tmp_path, headers):
    server.cache_headers = headers
    source = server.source("cc")
    async with fetcher(TileCache(tmp_path)) as f:
        await f.fetch_tile(source, 5, 3, 3)
        await f.fetch_tile(source, 5, 3, 3)
    assert server.count("cc") == 2
    assert not list(tmp_path.rglob("*.tile"))


@pytest.mark.asyncio
async def test_corrupt_cache_entry_is_refetched(server, tmp_path):
    cache = TileCache(tmp_path)
    source = server.source("ok")
    cache.put(source.cache_id, 4, 1, 1, b"not a png")
    async with fetcher(cache) as f:
        assert await f.fetch_tile(source, 4, 1, 1) == tile_png(4, 1, 1)
    assert server.count("ok") == 1
    assert cache.get(source.cache_id, 4, 1, 1) == tile_png(4, 1, 1)


# ---------------------------------------------------------------- local sources


def folder_source(root: Path, window: Window, skip: set[tuple[int, int]] = frozenset()) -> TileSource:
    for t in window.tiles_list():
        if (t.x, t.y) in skip:
            continue
        path = root / str(t.z) / str(t.x) / f"{t.y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tile_png(t.z, t.x, t.y))
    return TileSource("folder", "folder", path=str(root / "{z}" / "{x}" / "{y}.png"), max_zoom=22)


def mbtiles_source(path: Path, window: Window) -> TileSource:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    con.execute(
        "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)"
    )
    con.executemany(
        "INSERT INTO tiles VALUES (?, ?, ?, ?)",
        [(t.z, t.x, 2**t.z - 1 - t.y, tile_png(t.z, t.x, t.y)) for t in window.tiles_list()],
    )
    con.commit()
    con.close()
    return TileSource("drone", "mbtiles", path=str(path), max_zoom=22)


@pytest.mark.asyncio
async def test_folder_source(tmp_path):
    window = Window(z=5, x=4, y=8)
    source = folder_source(tmp_path, window)
    async with fetcher() as f:
        rgb = await f.fetch_window(source, window)
        assert await f.fetch_tile(source, 5, 5, 9) == tile_png(5, 5, 9)
        with pytest.raises(TileNotFound, match="has no tile 5/0/0"):
            await f.fetch_tile(source, 5, 0, 0)
    np.testing.assert_array_equal(rgb, expected_window(window))
    assert f.stats["local"] == 17 and f.stats["network"] == 0


@pytest.mark.asyncio
async def test_missing_local_tiles_are_blank(tmp_path):
    window = Window(z=5, x=4, y=8)
    source = folder_source(tmp_path, window, skip={(7, 8)})  # NE tile missing
    async with fetcher() as f:
        rgb = await f.fetch_window(source, window)
        with pytest.raises(TileNotFound, match="no tiles in window"):
            await f.fetch_window(source, Window(z=5, x=20, y=20))
    expect = expected_window(window)
    expect[:256, 768:] = 255
    np.testing.assert_array_equal(rgb, expect)


@pytest.mark.asyncio
async def test_mbtiles_source_flips_rows(tmp_path):
    window = Window(z=6, x=10, y=20)
    source = mbtiles_source(tmp_path / "ortho.mbtiles", window)
    async with fetcher() as f:
        rgb = await f.fetch_window(source, window)
        with pytest.raises(TileNotFound):
            await f.fetch_tile(source, 6, 0, 0)
    np.testing.assert_array_equal(rgb, expected_window(window))
    assert f.stats["local"] == 16


@pytest.mark.asyncio
async def test_mbtiles_source_bad_files(tmp_path):
    missing = TileSource("gone", "mbtiles", path=str(tmp_path / "gone.mbtiles"))
    broken_path = tmp_path / "broken.mbtiles"
    broken_path.write_bytes(b"this is not sqlite" * 100)
    broken = TileSource("broken", "mbtiles", path=str(broken_path))
    async with fetcher() as f:
        with pytest.raises(UpstreamError, match="does not exist"):
            await f.fetch_tile(missing, 1, 0, 0)
        with pytest.raises(UpstreamError, match="cannot read its MBTiles file") as e:
            await f.fetch_tile(broken, 1, 0, 0)
    assert str(tmp_path) not in e.value.message and str(broken_path) in e.value.detail
    assert broken_path.read_bytes() == b"this is not sqlite" * 100  # opened read-only


def test_mbtiles_footprint_from_metadata_bounds(tmp_path, caplog):
    from samgis.geo.readers.tiles import WORLD, TileReader

    window = Window(z=6, x=10, y=20)
    source = mbtiles_source(tmp_path / "ortho.mbtiles", window)
    reader = TileReader(source, fetcher())
    assert reader.footprint_lnglat().equals(WORLD)  # no bounds row: MBTiles 1.3 only suggests it

    con = sqlite3.connect(tmp_path / "ortho.mbtiles")
    con.execute("INSERT INTO metadata VALUES ('bounds', '11.25,45.5,16.875,48.9')")
    con.commit()
    con.close()
    assert mbtiles_bounds(source.path) == (11.25, 45.5, 16.875, 48.9)
    footprint = TileReader(source, fetcher()).footprint_lnglat()
    assert footprint.bounds == (11.25, 45.5, 16.875, 48.9)
    # the whole Earth "minus the poles" of the spec's example is clipped to the Web Mercator map
    con = sqlite3.connect(tmp_path / "ortho.mbtiles")
    con.execute("UPDATE metadata SET value = '-180.0,-89,180,89' WHERE name = 'bounds'")
    con.commit()
    con.close()
    assert TileReader(source, fetcher()).footprint_lnglat().equals(WORLD)

    for bad in ("11,45,16", "east,south,west,north", "16,45,11,48"):
        con = sqlite3.connect(tmp_path / "ortho.mbtiles")
        con.execute("UPDATE metadata SET value = ? WHERE name = 'bounds'", (bad,))
        con.commit()
        con.close()
        with pytest.raises(ValueError, match="MBTiles metadata bounds"):
            mbtiles_bounds(source.path)
        caplog.clear()
        assert TileReader(source, fetcher()).footprint_lnglat().equals(WORLD)
        assert "no footprint from its MBTiles metadata" in caplog.text


# ---------------------------------------------------------------- decode_tile, ttl_from_headers, TileCache


def test_decode_tile_rejects_truncated_png():
    with pytest.raises(UpstreamError, match="not a decodable image"):
        decode_tile(tile_png(1, 0, 0)[:200], 256, "t")


def test_tilecache_doctests():
    result = doctest.testmod(tilecache_module)
    assert result.attempted >= 4 and result.failed == 0


@pytest.mark.parametrize(
    "headers, ttl",
    [
        ({}, None),
        ({"Content-Type": "image/png"}, None),
        ({"Cache-Control": "max-age=300"}, 300.0),
        ({"CACHE-CONTROL": "public, MAX-AGE=300"}, 300.0),
        ({"Cache-Control": "max-age=300", "Age": "100"}, 200.0),
        ({"Cache-Control": "max-age=300, s-maxage=30"}, 30.0),
        ({"Cache-Control": "no-store, max-age=300"}, 0.0),
        ({"Cache-Control": "no-cache"}, 0.0),
        ({"Cache-Control": "max-age=300", "Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 300.0),
        ({"Expires": "Thu, 01 Jan 1970 00:10:00 GMT", "Date": "Thu, 01 Jan 1970 00:09:00 GMT"}, 60.0),
        ({"Expires": "Thu, 01 Jan 1970 00:10:00 GMT"}, 100.0),  # relative to now=500
        ({"Expires": "0"}, 0.0),  # invalid dates mean "already expired"
        ({"Cache-Control": "max-age=bogus"}, None),
    ],
)
def test_ttl_from_headers(headers, ttl):
    assert ttl_from_headers(headers, now=500.0) == ttl


def test_ttl_from_httpx_headers():
    assert ttl_from_headers(httpx.Headers({"cache-control": "max-age=5"})) == 5.0


def test_tilecache_roundtrip_and_expiry(tmp_path):
    clock = FakeClock()
    cache = TileCache(tmp_path, default_ttl_s=100, clock=clock)
    assert cache.get("src", 1, 0, 1) is None
    assert cache.put("src", 1, 0, 1, b"abc")
    assert cache.put("src", 1, 1, 1, b"def", ttl_s=10)
    assert cache.get("src", 1, 0, 1) == b"abc"
    assert cache.get("other", 1, 0, 1) is None
    clock.now += 11
    assert cache.get("src", 1, 1, 1) is None and cache.get("src", 1, 0, 1) == b"abc"
    clock.now += 90
    assert cache.get("src", 1, 0, 1) is None
    # A ttl of 0 stores nothing and drops the old copy.
    cache.put("src", 2, 0, 0, b"x")
    assert not cache.put("src", 2, 0, 0, b"y", ttl_s=0)
    assert cache.get("src", 2, 0, 0) is None


def test_tilecache_ignores_foreign_and_short_files(tmp_path):
    cache = TileCache(tmp_path)
    path = cache.path("src", 1, 0, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")
    assert cache.get("src", 1, 0, 0) is None
    path.write_bytes(b"X" * 100)
    assert cache.get("src", 1, 0, 0) is None


def test_tilecache_paths_stay_under_root(tmp_path):
    cache = TileCache(tmp_path / "root")
    for source_id in ("../../etc", "/abs", "a/b", "..", "."):
        path = cache.path(source_id, 3, 1, 2).resolve()
        assert path.is_relative_to((tmp_path / "root").resolve())
    assert cache.path("a/b", 1, 0, 0) != cache.path("a_b", 1, 0, 0)


def test_tilecache_concurrent_writers_never_expose_partial_tiles(tmp_path):
    cache = TileCache(tmp_path)
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    bad: list[bytes] = []
    stop = threading.Event()

    def write(data: bytes) -> None:
        for _ in range(20):
            cache.put("src", 3, 1, 1, data)

    def read() -> None:
        while not stop.is_set():
            got = cache.get("src", 3, 1, 1)
            if got is not None and got not in payloads:
                bad.append(got)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not bad
    assert cache.get("src", 3, 1, 1) in payloads
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]

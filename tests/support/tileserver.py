"""A real XYZ tile server on 127.0.0.1 serving a `Scene`, with routes that fail on purpose.

    with SceneTileServer(default_scene()) as tiles:
        providers = tiles.write_providers(tmp_path / "providers.json")   # for Settings(providers=...)
        httpx.get(tiles.url_template.format(z=16, x=34814, y=23566))

Routes (all GET, tile px are `tile_size` square PNGs):
    /scene/{z}/{x}/{y}.png    the scene tile, Cache-Control: max-age=3600
    /missing/{z}/{x}/{y}.png  404
    /error/{z}/{x}/{y}.png    500, always
    /slow/{z}/{x}/{y}.png     waits `slow_s` seconds, then the scene tile
    /garbage/{z}/{x}/{y}.png  200, Content-Type image/png, a body that is not an image
Anything else, or a tile off the grid, is a 404.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.support.local_http import QuietHTTPServer
from tests.support.scene import Scene, render_tile_png

ATTRIBUTION = "Synthetic scene © samgis tests"
GARBAGE = b"<html><body>this is not a tile</body></html>"
ROUTES = {"scene": "Scene", "missing": "SceneMissing", "error": "SceneError", "slow": "SceneSlow",
          "garbage": "SceneGarbage"}
_PATH = re.compile(r"^/(?P<route>[a-z]+)/(?P<z>\d{1,2})/(?P<x>\d{1,9})/(?P<y>\d{1,9})\.png$")


class SceneTileServer:
    """A `QuietHTTPServer` in a daemon thread on 127.0.0.1 (ephemeral port); a context manager.

    `requests` counts every HTTP request received (all routes, bad paths too) since the start or
    the last `reset_counts()`; `counts` splits it by route name ("scene", "slow", ..., "other").
    """

    def __init__(self, scene: Scene, tile_size: int = 256, cache_tiles: int = 4096):
        self.scene = scene
        self.tile_size = tile_size
        self.slow_s = 5.0
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._closing = threading.Event()
        self._png = lru_cache(maxsize=cache_tiles)(
            lambda z, x, y: render_tile_png(scene, z, x, y, tile_size))
        self._httpd: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.url_template = ""

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "SceneTileServer":
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._closing.clear()
        self._httpd = QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.url_template = self.route_template("scene")
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"scene-tiles:{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._closing.set()  # wakes /slow handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "SceneTileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- counters -------------------------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Requests received since start or the last `reset_counts()`."""
        with self._lock:
            return sum(self._counts.values())

    @property
    def counts(self) -> dict[str, int]:
        """Requests per route name ("scene", "missing", "error", "slow", "garbage", "other")."""
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def _count(self, route: str) -> None:
        with self._lock:
            self._counts[route] += 1

    # -- providers ------------------------------------------------------------------------------
    def route_template(self, route: str) -> str:
        """URL template of one route, e.g. "http://127.0.0.1:PORT/slow/{z}/{x}/{y}.png"."""
        if not self.base_url:
            raise RuntimeError("server not started")
        return f"{self.base_url}/{route}/{{z}}/{{x}}/{{y}}.png"

    def providers(self) -> dict:
        """Providers-file dict: "Scene" plus one failing source per failure route."""
        return {name: {"url": self.route_template(route), "max_zoom": 20, "attribution": ATTRIBUTION,
                       "tile_size": self.tile_size}
                for route, name in ROUTES.items()}

    def write_providers(self, path) -> Path:
        """Write `providers()` as JSON to `path`; returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.providers(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    def settings(self, tmp, **overrides):
        """Server `Settings` serving this scene from folder `tmp` (providers file, tile cache), with short
        tile timeouts and one retry so failure tests stay fast; `overrides` replace or add fields."""
        from samgis.settings import Settings

        tmp = Path(tmp)
        fields = {"providers": self.write_providers(tmp / "providers.json"), "cache_dir": tmp / "cache",
                  "tile_timeout_s": 1.0, "tile_retries": 1}
        return Settings(**{**fields, **overrides})

    def cache_info(self):
        """functools.lru_cache statistics of the rendered-tile cache (hits, misses, maxsize, currsize)."""
        return self._png.cache_info()

    def tile_png(self, z: int, x: int, y: int) -> bytes:
        """PNG bytes of scene tile (z, x, y), rendered once then kept (LRU)."""
        return self._png(z, x, y)


def _handler_for(server: SceneTileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "SceneTiles/1.0"

        def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
            pass

        def send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if cache:
                    self.send_header("Cache-Control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (e.g. timed out on /slow)

        def do_GET(self):  # noqa: N802 - http.server API
            if server._closing.is_set():  # a kept-alive connection outliving stop()
                self.close_connection = True
                return self.send(503, b"shutting down\n", "text/plain")
            m = _PATH.match(self.path.split("?", 1)[0])
            route = m["route"] if m and m["route"] in ROUTES else "other"
            server._count(route)
            if route == "other":
                return self.send(404, b"no such route\n", "text/plain")
            z, x, y = int(m["z"]), int(m["x"]), int(m["y"])
            if z > 30 or not (x < 2**z and y < 2**z):
                return self.send(404, f"tile {z}/{x}/{y} is off the grid\n".encode(), "text/plain")
            if route == "missing":
                return self.send(404, b"tile not found\n", "text/plain")
            if route == "error":
                return self.send(500, b"internal server error\n", "text/plain")
            if route == "garbage":
                return self.send(200, GARBAGE, "image/png")
            if route == "slow" and server._closing.wait(server.slow_s):
                return self.send(503, b"shutting down\n", "text/plain")
            return self.send(200, server.tile_png(z, x, y), "image/png", cache=True)

    return Handler

"""Vertex AI: a real server process started with AIP_* variables answers predict and health on those routes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from starlette.routing import Mount

from api.app import create_app
from api.routers.predict import vertex_routes
from samgis.settings import Settings
from tests.conftest import textured_image
from tests.test_predict import encoded

ROOT = Path(__file__).resolve().parent.parent
PREDICT = "/v1/endpoints/123/deployedModels/456:predict"
HEALTH = "/v1/endpoints/123/deployedModels/456"

# The real CLI: it must take its port from AIP_HTTP_PORT and its weights from AIP_STORAGE_URI.
SERVER = """
import sys
from tests.conftest import TINY  # registers the tiny test architecture
from samgis.cli.main import main

sys.exit(main(["serve", "--model", TINY.model_id, "--no-download", "--log-level", "warning"]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vertex_routes_go_before_the_web_mount(tmp_path):
    (tmp_path / "index.html").write_text("<html></html>")
    app = create_app(Settings(web_dir=tmp_path, builtin_sources=False))
    assert vertex_routes(app, {}) == []
    added = vertex_routes(app, {"AIP_PREDICT_ROUTE": PREDICT, "AIP_HEALTH_ROUTE": HEALTH, "AIP_HTTP_PORT": "8080"})
    assert added == [PREDICT, HEALTH]
    paths = [getattr(r, "path", None) for r in app.router.routes]
    mount = next(k for k, r in enumerate(app.router.routes) if isinstance(r, Mount))
    assert paths.index(PREDICT) < mount and paths.index(HEALTH) < mount


def test_vertex_server_process(tiny_checkpoint, tmp_path):
    port = free_port()
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<html>map</html>")
    env = {**os.environ, "AIP_HTTP_PORT": str(port), "AIP_PREDICT_ROUTE": PREDICT, "AIP_HEALTH_ROUTE": HEALTH,
           "AIP_STORAGE_URI": str(tiny_checkpoint.parent),
           "SAMGIS_CACHE_DIR": str(tmp_path / "cache"), "SAMGIS_WEB_DIR": str(web),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        health = None
        deadline = time.monotonic() + 120  # a cold interpreter importing torch on a loaded 2-core machine
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(url + HEALTH, timeout=2)
                if health.status_code == 200:
                    break
                time.sleep(0.2)  # 503 while the model loads in the background
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read() if proc.poll() is not None else "server did not start"
        assert health.status_code == 200 and health.json()["status"] == "ok"
        img = textured_image(48, 64, seed=21)
        body = {"instances": [{"image": encoded(img), "points": [[20, 10]]}], "parameters": {"mask_format": "png"}}
        r = httpx.post(url + PREDICT, json=body, timeout=60)
        assert r.status_code == 200, r.text
        (pred,) = r.json()["predictions"]
        assert pred["mode"] == "prompts" and pred["image_size"] == [48, 64] and len(pred["masks"][0]) == 1
        assert httpx.get(url + "/", timeout=5).text == "<html>map</html>"  # the web map is still served
    finally:
        proc.terminate()
        proc.wait(timeout=10)

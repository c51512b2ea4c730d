"""The `samgis` console script: a real `samgis serve` process with real sam_vit_b architecture weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.scene import default_scene
from tests.support.tileserver import SceneTileServer

SAMGIS = str(Path(sys.executable).with_name("samgis"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_models_command_lists_registry():
    out = subprocess.run([SAMGIS, "models"], capture_output=True, text=True, check=True).stdout
    assert "sam_vit_b" in out and "sam_vit_h" in out and "sam2.1_hiera_tiny" in out and "onnx" in out


def test_serve_without_weights_explains_how_to_get_them(tmp_path):
    port = free_port()
    env = {**os.environ, "SAMGIS_CACHE_DIR": str(tmp_path)}
    proc = subprocess.Popen([SAMGIS, "serve", "--port", str(port), "--no-download"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        body = None
        for _ in range(300):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                body = r.json()
                if body["status"] == "error":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert r.status_code == 503 and "SAMGIS_CHECKPOINT" in body["detail"] and "sam2.1_hiera_tiny.pt" in body["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_serve_real_vit_b_over_http(vit_b_checkpoint, tmp_path):
    scene = default_scene()
    shp = scene.shapes[0].polygon
    p = shp.representative_point()
    w, s, e, n = shp.buffer(0.01).bounds
    req = {"bbox": {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}, "zoom": 16, "source": "Scene",
           "prompts": [{"type": "point", "lat": p.y, "lng": p.x, "label": 1}], "multimask": True,
           # one window: random weights give masks that run off the window, and following them (tested with the
           # colour engine in test_follow.py) would cost more vit_b encoder passes than the deadline allows
           "window_budget": 1}
    with SceneTileServer(scene) as tiles:
        providers = tiles.write_providers(tmp_path / "providers.json")
        port = free_port()
        # a generous deadline: this checks the real model over HTTP and its cache, not the encoder's speed (a
        # random-weight vit_b pass on a busy 2-core machine can pass the 30 s default)
        env = {**os.environ, "SAMGIS_CACHE_DIR": str(tmp_path / "cache"), "SAMGIS_DEADLINE_S": "120"}
        proc = subprocess.Popen(
            [SAMGIS, "serve", "--port", str(port), "--model", "sam_vit_b", "--checkpoint", str(vit_b_checkpoint),
             "--providers", str(providers), "--device", "cpu"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(base + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail("server never became healthy")
            models = httpx.get(base + "/v1/models").json()
            assert models["loaded"]["id"] == "sam_vit_b" and models["loaded"]["device"] == "cpu"
            first = httpx.post(base + "/v1/segment", json=req, timeout=120)
            assert first.status_code == 200, first.text
            fc = first.json()
            assert fc["type"] == "FeatureCollection" and fc["samgis"]["cache"] == "miss"
            assert {f["properties"]["mask_index"] for f in fc["features"]} <= {0, 1, 2}
            second = httpx.post(base + "/v1/segment", json=req, timeout=120).json()
            assert second["samgis"]["cache"] == "hit"
            assert second["samgis"]["timings_ms"]["total"] < fc["samgis"]["timings_ms"]["total"]
        finally:
            proc.terminate()
            proc.wait(timeout=20)

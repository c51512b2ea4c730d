"""Shared deployments over real HTTP (uvicorn on 127.0.0.1): API keys, rate limits with 429 + Retry-After,
CORS allow-list, 405 with `Allow`, and error answers that never echo internals."""

from __future__ import annotations

import json

import httpx
import mercantile
import pytest

from api.app import create_app
from api.security import AccessPolicy, load_api_keys, parse_rate
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import BrokenDecodeEngine, ColourRegionEngine
from tests.support.scene import default_scene
from tests.test_e2e_segment import click_request, samgis_point, samgis_request

SCENE = default_scene()
KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
ORIGIN = "https://maps.example.org"


def web_dir(tmp):
    d = tmp / "web"
    d.mkdir()
    (d / "index.html").write_text("<!doctype html><title>samgis</title>")
    return d


def scene_tile(z: int = 16) -> str:
    p = SCENE.shapes[0].polygon.representative_point()
    t = mercantile.tile(p.x, p.y, z)
    return f"/v1/tiles/Scene/{t.z}/{t.x}/{t.y}.png"


@pytest.fixture(scope="module")
def secured(tiles, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secured")
    keys = tmp / "keys.txt"
    keys.write_text(f"# team keys\n{KEY_A}\n\n{KEY_B}\n")
    settings = tiles.settings(tmp, api_keys=str(keys), cors_origins=f"{ORIGIN}, https://other.example.org/",
                              web_dir=web_dir(tmp))
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server:
        yield server


@pytest.fixture(scope="module")
def limited(tiles, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limited")
    settings = tiles.settings(tmp, api_keys=f"{KEY_A},{KEY_B}", rate_limit_per_key="3/minute",
                              rate_limit_per_ip="5/minute")
    with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server:
        yield server


@pytest.fixture(scope="module")
def open_server(tiles, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("open")
    with LiveServer(create_app(tiles.settings(tmp, web_dir=web_dir(tmp)), engine=ColourRegionEngine())) as server:
        yield server


def test_keys_guard_the_api_and_tiles_but_not_health_or_the_page(secured):
    with httpx.Client(base_url=secured.url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        page = c.get("/")
        assert page.status_code == 200 and "samgis" in page.text
        doc = c.get("/openapi.json")
        assert doc.status_code == 200
        schemes = doc.json()["components"]["securitySchemes"]
        assert (schemes["bearerKey"]["type"], schemes["bearerKey"]["scheme"]) == ("http", "bearer")
        assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == ("header", "X-API-Key")
        segment = doc.json()["paths"]["/v1/segment"]["post"]
        assert segment["security"] == [{"bearerKey": []}, {"apiKeyHeader": []}] and "401" in segment["responses"]
        assert "security" not in doc.json()["paths"]["/health"]["get"]
        req = click_request(SCENE.shapes[0].polygon, 16)
        r = c.post("/v1/segment", json=req)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] == "Unauthorized" and "X-API-Key" in r.json()["detail"]
        r = c.post("/v1/segment", json=req, headers={"Authorization": "Bearer not-a-key-0123456789"})
        assert r.status_code == 401 and r.json()["detail"] == "the API key is not valid"
        assert c.post("/v1/segment", json=req, headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
        assert c.post("/v1/segment", json=req, headers={"X-API-Key": KEY_B}).status_code == 200
        # the tile proxy is an API route: same keys
        assert c.get(scene_tile()).status_code == 401
        tile = c.get(scene_tile(), headers={"X-API-Key": KEY_A})
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
        p = SCENE.shapes[0].polygon.representative_point()
        samgis = samgis_request([samgis_point(p.x, p.y)], SCENE.shapes[0].polygon)
        assert c.post("/infer_samgis", json=samgis).status_code == 401
        assert c.post("/infer_samgis", json=samgis, headers={"X-API-Key": KEY_A}).status_code == 200


def test_an_open_server_documents_no_security(open_server):
    doc = httpx.get(open_server.url + "/openapi.json", timeout=30).json()
    assert "securitySchemes" not in doc["components"]
    assert "security" not in doc["paths"]["/v1/segment"]["post"] and "401" not in doc["paths"]["/v1/segment"]["post"]["responses"]


def test_cors_allow_list(secured, open_server):
    with httpx.Client(base_url=secured.url, timeout=30) as c:
        pre = c.options("/v1/segment", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                "Access-Control-Request-Headers": "x-api-key, content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
        assert "x-api-key" in pre.headers["access-control-allow-headers"].lower()
        bad = c.options("/v1/segment", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        r = c.get("/v1/sources", headers={"Origin": "https://other.example.org", "X-API-Key": KEY_A})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://other.example.org"
        denied = c.get("/v1/sources", headers={"Origin": ORIGIN})  # a browser can read the 401 too
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == ORIGIN
        assert "access-control-allow-origin" not in c.get("/v1/sources", headers={
            "Origin": "https://evil.example", "X-API-Key": KEY_A}).headers
    with httpx.Client(base_url=open_server.url, timeout=30) as c:  # default: no keys, no CORS
        r = c.get("/v1/sources", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_rate_limits_per_key_and_per_ip(limited):
    with httpx.Client(base_url=limited.url, timeout=30) as c:
        a, b = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
        assert [c.get("/v1/sources", headers=a).status_code for _ in range(3)] == [200, 200, 200]
        r = c.get("/v1/sources", headers=a)
        assert r.status_code == 429 and r.json()["error"] == "RateLimited" and "API key" in r.json()["detail"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # another key has its own allowance, until the client IP's limit (5/minute) is reached; key A's refused
        # request did not count against the IP (else B's second request would be the IP's sixth)
        assert [c.get("/v1/sources", headers=b).status_code for _ in range(2)] == [200, 200]
        r = c.get("/v1/sources", headers=b)
        assert r.status_code == 429 and "client IP" in r.json()["detail"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert c.get(scene_tile(), headers=b).status_code == 429  # the tile proxy counts too
        assert c.get("/health").status_code == 200  # health is never limited
        assert c.get("/v1/sources", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401  # keys first


def test_undeclared_methods_get_405_with_allow(open_server, secured):
    for server in (open_server, secured):
        with httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": KEY_A}) as c:
            for method, path, allow in [("POST", "/health", "GET"), ("GET", "/v1/segment", "POST"),
                                        ("DELETE", "/infer_samgis", "POST"), ("GET", "/score", "POST"),
                                        ("PUT", "/v1/predict", "POST"), ("POST", scene_tile(), "GET")]:
                r = c.request(method, path)
                assert r.status_code == 405, (method, path, r.status_code)
                assert r.headers["allow"] == allow, (method, path, r.headers.get("allow"))
            assert c.get("/no/such/page").status_code == 404
            assert c.get("/").status_code == 200


def test_key_settings():
    assert load_api_keys(None) == frozenset() and load_api_keys("  ") == frozenset()
    assert load_api_keys(f" {KEY_A} , {KEY_B},") == {KEY_A, KEY_B}
    with pytest.raises(ValueError, match="not a readable file"):
        load_api_keys("/no/such/keys.txt")
    with pytest.raises(ValueError, match="shorter than 16"):
        load_api_keys("short,also-short")
    with pytest.raises(ValueError, match="10/second"):
        parse_rate("lots", "SAMGIS_RATE_LIMIT_PER_KEY")
    assert [str(i) for i in parse_rate("10/second;300/minute", "x")] == ["10 per 1 second", "300 per 1 minute"]
    with pytest.raises(ValueError, match="needs SAMGIS_API_KEYS"):
        AccessPolicy.from_settings(Settings(rate_limit_per_key="5/second"))
    assert not AccessPolicy.from_settings(Settings()).active  # everything off by default


def test_errors_never_echo_internals(tiles, tmp_path):
    settings = tiles.settings(tmp_path)
    with LiveServer(create_app(settings, engine=BrokenDecodeEngine())) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c:
        poly = SCENE.shapes[0].polygon
        r = c.post("/v1/segment", json=click_request(poly, 16))
        assert r.status_code == 500 and r.json()["error"] == "InternalError"
        assert "secret" not in r.text and "exploded" not in r.text and "RuntimeError" not in r.text
        p = poly.representative_point()
        r = c.post("/infer_samgis", json=samgis_request([samgis_point(p.x, p.y)], poly))
        assert r.status_code == 500 and r.json()["msg"] == "Error - Internal Server Error"
        assert "secret" not in r.text and "exploded" not in r.text
        assert json.loads(c.get("/health").text)["status"] == "ok"

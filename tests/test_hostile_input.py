"""Hostile input against a real uvicorn server (the synthetic-scene tile server, the colour-region engine):
each request of samgis issue 14 gets a fast, clear 4xx or a bounded answer, never a 5xx or a held connection."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from api.app import create_app
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.test_e2e_segment import SCENE, base_request, click_request

BODY_TIMEOUT_S = 1.0
MAX_BODY = 200_000


def png_b64(h: int = 64, w: int = 64) -> str:
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine()


def hostile_settings(tiles, tmp, **overrides) -> Settings:
    """The scene's sources plus a local MBTiles source whose file is missing."""
    providers = {**tiles.providers(), "Gone": {"path": str(tmp / "private" / "gone.mbtiles"), "max_zoom": 20}}
    path = tmp / "hostile-providers.json"
    path.write_text(json.dumps(providers))
    return tiles.settings(tmp, providers=path, body_timeout_s=BODY_TIMEOUT_S, max_body_bytes=MAX_BODY, **overrides)


@pytest.fixture(scope="module")
def live(tiles, engine, tmp_path_factory):
    with LiveServer(create_app(hostile_settings(tiles, tmp_path_factory.mktemp("hostile")), engine=engine)) as s:
        yield s


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


def post_raw(client: httpx.Client, route: str, text: str) -> httpx.Response:
    return client.post(route, content=text.encode(), headers={"content-type": "application/json"})


def assert_error(r: httpx.Response, status: int) -> dict:
    """`r` is `status` with our error body, whose request id is the X-Request-ID header's."""
    assert r.status_code == status, r.text
    body = r.json()
    assert len(r.headers["x-request-id"]) == 32 and body["request_id"] == r.headers["x-request-id"]
    return body


# --- 1. NaN, Infinity, 1e400 --------------------------------------------------------------------------------

def segment_text(**tokens) -> str:
    """/v1/segment body text with raw JSON tokens (NaN, 1e400 …) put in for some fields."""
    req = base_request()
    req["prompts"][0]["lat"] = "@lat@"
    req.update(simplify_px="@simplify_px@", min_area_px="@min_area_px@")
    text = json.dumps(req)
    defaults = {"lat": req["bbox"]["sw"]["lat"] + 1e-6, "simplify_px": 1, "min_area_px": 0}
    for name, value in {**defaults, **tokens}.items():
        text = text.replace(f'"@{name}@"', str(value))
    return text


NONFINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400 + ".5"]
ROUTE_CASES = [
    ("/v1/segment", lambda t: segment_text(lat=t), "prompts[0].lat"),
    ("/v1/segment", lambda t: segment_text(simplify_px=t), "simplify_px"),
    ("/v1/segment", lambda t: segment_text(min_area_px=t), "min_area_px"),
    ("/v1/segment/everything", lambda t: f'{{"lat":{t},"lng":11.25,"zoom":17,"source":"OpenStreetMap.Mapnik"}}',
     "lat"),
    ("/infer_samgis", lambda t: json.dumps({"bbox": base_request()["bbox"], "zoom": "@", "prompt": [
        {"type": "point", "data": {"lat": 1, "lng": 1}}]}).replace('"@"', t), "zoom"),
    ("/v1/predict", lambda t: json.dumps({"instances": [{"image": "x"}], "parameters": {"pred_iou_thresh": "@"}})
     .replace('"@"', t), "parameters.pred_iou_thresh"),
    ("/score", lambda t: json.dumps({"input_data": {"columns": ["image", "input_points"],
                                                    "data": [["x", [[[1, "@"]]]]]}}).replace('"@"', t),
     "input_data.data[0][1][0][0][1]"),
]


@pytest.mark.parametrize("token", NONFINITE)
@pytest.mark.parametrize("route,make,field", ROUTE_CASES, ids=[f"{r}:{f}" for r, _, f in ROUTE_CASES])
def test_non_finite_numbers_are_a_422_naming_the_field(client, route, make, field, token):
    t0 = time.perf_counter()
    body = assert_error(post_raw(client, route, make(token)), 422)
    assert body["field"] == field and "must be a finite number" in body["detail"]
    assert time.perf_counter() - t0 < 2


def test_integer_beyond_python_digits_limit_is_a_422(client):
    body = assert_error(post_raw(client, "/v1/segment", segment_text(min_area_px="9" * 5000)), 422)
    assert body["field"] == "body" and "too many digits" in body["detail"]


def test_issue_repro_nan_latitude(client):
    body = assert_error(post_raw(client, "/v1/segment/everything",
                                 '{"lat":NaN,"lng":11.25,"zoom":17,"source":"OpenStreetMap.Mapnik"}'), 422)
    assert body == {**body, "field": "lat", "error": "InvalidRequest"} and "finite" in body["detail"]


def test_validation_errors_echoing_huge_or_long_input_are_json(client):
    text = segment_text().replace('"zoom": 16', '"zoom": ' + "7" * 300)  # a float holds it; zoom ≤ 24 does not
    r = post_raw(client, "/v1/segment", text)
    assert r.status_code == 422 and r.json()["request_id"] == r.headers["x-request-id"]
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "zoom"] and err["input"] == "<an integer of 300 digits>"
    r = client.post("/v1/segment", json={**base_request(), "source": "S" * 5000})
    assert r.status_code == 422 and len(r.text) < 2000  # the unknown name is not echoed in full


# --- 2. tile rows and columns ------------------------------------------------------------------------------

@pytest.mark.parametrize("path,field", [
    ("/v1/tiles/Scene/3/1/%C2%B2.png", "y"),            # ² passes str.isdigit(), not int()
    ("/v1/tiles/Scene/3/1/%D9%A3.png", "y"),            # Arabic-Indic three
    (f"/v1/tiles/Scene/3/1/{'1' * 5000}.png", "y"),
    ("/v1/tiles/Scene/3/1/1.png.png", "y"),
])
def test_odd_tile_rows_are_a_422(client, path, field):
    body = assert_error(client.get(path), 422)
    assert body["field"] == field and "not a tile number" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/tiles/Scene/3/%C2%B2/1.png", f"/v1/tiles/Scene/3/{'1' * 5000}/1.png",
                                  f"/v1/tiles/Scene/{'9' * 5000}/1/1.png", "/v1/tiles/Scene/3/-1/1.png"])
def test_odd_tile_columns_and_zooms_are_a_422(client, path):
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_a_good_tile_still_comes(client, tiles):
    r = client.get("/v1/tiles/Scene/3/1/2.png")
    assert r.status_code == 200 and r.content == tiles.tile_png(3, 1, 2)


# --- 3. chunked bodies over the limit ----------------------------------------------------------------------

def test_chunked_body_over_the_limit_is_a_413(client):
    def chunks():
        for _ in range(MAX_BODY // 10_000 + 5):
            yield b" " * 10_000

    r = client.post("/v1/segment", content=chunks(), headers={"content-type": "application/json"})
    body = assert_error(r, 413)
    assert body["field"] == "body" and f"exceeds the limit of {MAX_BODY} bytes" in body["detail"]
    assert r.headers["connection"] == "close"
    r = client.post("/v1/segment", content=b" " * (MAX_BODY + 1), headers={"content-type": "application/json"})
    assert_error(r, 413)


def test_chunked_body_under_the_limit_still_works(client):
    data = json.dumps(base_request()).encode()
    r = client.post("/v1/segment", content=iter([data[:50], data[50:]]), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


# --- 4. slow bodies ----------------------------------------------------------------------------------------

def raw_http(url: str, head: bytes, body: bytes, read_s: float) -> tuple[bytes, float, bool]:
    """Send `head` + `body` on a socket and read until the server closes it (or `read_s` passes).

    Returns (bytes read, seconds until the close, whether the server closed the connection)."""
    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=read_s) as s:
        t0 = time.perf_counter()
        s.sendall(head + body)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except TimeoutError:
            return data, time.perf_counter() - t0, False
        return data, time.perf_counter() - t0, True


def test_slow_body_is_a_408_and_the_connection_closes(live):
    head = (b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 150000\r\n\r\n")  # under the limit, 10 bytes of it sent
    data, elapsed, closed = raw_http(live.url, head, b'{"bbox": {', read_s=10)
    assert closed and BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 3
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", data[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "RequestTimeout" and "did not arrive within 1 s" in body["detail"]


def test_trickled_body_is_cut_off_at_the_deadline(live):
    u = urlsplit(live.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n")
        t0 = time.perf_counter()
        answer = b""
        for _ in range(40):  # one byte every 0.1 s would take 10 s
            try:
                s.sendall(b" ")
            except OSError:
                break
            s.settimeout(0.1)
            try:
                answer += s.recv(65536)
                break
            except TimeoutError:
                continue
        assert answer.startswith(b"HTTP/1.1 408") and time.perf_counter() - t0 < BODY_TIMEOUT_S + 2


# --- 5. work per request ------------------------------------------------------------------------------------

def many_boxes(n: int, multimask: bool) -> dict:
    req = base_request()
    bb = req["bbox"]
    lat, lng = (bb["sw"]["lat"] + bb["ne"]["lat"]) / 2, (bb["sw"]["lng"] + bb["ne"]["lng"]) / 2
    req["prompts"] = [{"type": "box", "sw": {"lat": lat - 1e-4 * (k + 1), "lng": lng - 1e-4},
                       "ne": {"lat": lat, "lng": lng + 1e-4}} for k in range(n)]
    req["multimask"] = multimask
    return req


def test_many_multimask_boxes_are_refused_up_front(client, tiles, engine):
    tiles.reset_counts()
    embeds = engine.embed_calls
    t0 = time.perf_counter()
    body = assert_error(client.post("/v1/segment", json=many_boxes(100, True)), 422)
    assert time.perf_counter() - t0 < 2
    assert body["limit"] == "max_mask_pixels" and body["field"] == "prompts"
    assert "300 decoded" not in body["detail"] and "100 queries × 3 masks" in body["detail"]
    assert "SAMGIS_MAX_MASK_PIXELS" in body["detail"]
    assert tiles.requests == 0 and engine.embed_calls == embeds  # nothing fetched, nothing computed
    assert client.post("/v1/segment", json=many_boxes(20, True)).status_code == 200


def test_dense_everything_grid_is_refused_up_front(client):
    req = {**{k: base_request()[k] for k in ("zoom", "source")}, "points_per_side": 32,
           "lat": SCENE.shapes[0].polygon.representative_point().y,
           "lng": SCENE.shapes[0].polygon.representative_point().x}
    t0 = time.perf_counter()
    body = assert_error(client.post("/v1/segment/everything", json=req), 422)
    assert time.perf_counter() - t0 < 2
    assert body["limit"] == "max_grid_points" and body["field"] == "points_per_side" and "1024" in body["detail"]


def test_predict_limits_are_refused_up_front(client):
    img = png_b64(1024, 1024)
    boxes = [[10, 10, 500 + k, 500] for k in range(30)]
    body = assert_error(client.post("/v1/predict", json={"instances": [{"image": img, "boxes": boxes,
                                                                         "multimask": True}]}), 422)
    assert body["limit"] == "max_mask_pixels" and body["field"] == "instances[0]"
    body = assert_error(client.post("/v1/predict", json={"instances": [{"image": img, "points_per_side": 32}]}), 422)
    assert body["limit"] == "max_grid_points" and body["field"] == "instances[0].points_per_side"
    big = png_b64(2048, 1024)  # 2 Mpx: 16 × 16 points count twice
    body = assert_error(client.post("/v1/predict", json={"instances": [{"image": big}]}), 422)
    assert body["limit"] == "max_grid_points" and "512 counted" in body["detail"]
    r = client.post("/score", json={"input_data": {"columns": ["image", "input_boxes"],
                                                   "data": [[img, json.dumps(boxes)]]}})
    assert_error(r, 422)["limit"] == "max_mask_pixels"


@pytest.fixture(scope="module")
def tight(tiles, engine, tmp_path_factory):
    settings = hostile_settings(tiles, tmp_path_factory.mktemp("tight"), max_answer_vertices=20,
                                max_answer_bytes=500)
    with LiveServer(create_app(settings, engine=engine)) as server, httpx.Client(base_url=server.url) as c:
        yield c


def test_answer_vertices_and_bytes_are_bounded(tight):
    lake = next(s for s in SCENE.shapes if list(s.polygon.interiors))
    body = assert_error(tight.post("/v1/segment", json=click_request(lake.polygon, 16, simplify_px=0)), 422)
    assert body["limit"] == "max_answer_vertices" and body["field"] == "simplify_px"
    small = click_request(SCENE.shapes[0].polygon, 16, simplify_px=50)  # few vertices, still > 500 bytes
    body = assert_error(tight.post("/v1/segment", json=small), 422)
    assert body["limit"] == "max_answer_bytes"
    body = assert_error(tight.post("/v1/predict", json={"instances": [{"image": png_b64(), "points": [[32, 32]],
                                                                        "return_logits": True}]}), 422)
    assert body["limit"] == "max_answer_bytes" and body["field"] == "instances[0].return_logits"


# --- 6. messages without internals --------------------------------------------------------------------------

INTERNALS = ("127.0.0.1", "0x", "BytesIO", "/private/", "mbtiles", "Traceback")


@pytest.mark.parametrize("source,status", [("SceneMissing", 502), ("SceneGarbage", 502), ("Gone", 502)])
def test_upstream_errors_name_the_source_not_internals(client, caplog, source, status):
    with caplog.at_level(logging.WARNING, logger="samgis.api"):
        r = client.post("/v1/segment", json=click_request(SCENE.shapes[2].polygon, 16, source=source))
        body = assert_error(r, status)
    assert f"tile source {source!r}" in body["detail"]
    assert not any(bit in body["detail"] for bit in INTERNALS), body["detail"]
    logged = [rec.getMessage() for rec in caplog.records if body["request_id"] in rec.getMessage()]
    assert logged, "the log line carries the request id"
    internal = {"SceneMissing": "127.0.0.1", "SceneGarbage": "cannot identify image", "Gone": "gone.mbtiles"}
    assert internal[source] in logged[0]


def test_tile_route_errors_hide_paths(client):
    body = assert_error(client.get("/v1/tiles/Gone/1/0/0.png"), 502)
    assert "does not exist" in body["detail"] and "private" not in body["detail"]
    body = assert_error(client.get("/v1/tiles/SceneMissing/1/0/0.png"), 502)
    assert "answered 404" in body["detail"] and "127.0.0.1" not in body["detail"]


def test_undecodable_image_message_has_no_object_repr(client):
    bad = base64.b64encode(b"not an image at all").decode()
    body = assert_error(client.post("/v1/predict", json={"instances": [{"image": bad}]}), 422)
    assert "not a decodable PNG or JPEG" in body["detail"] and "0x" not in body["detail"]


def test_every_answer_has_its_own_request_id(client):
    ids = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    ids.add(client.get("/no/such/route").headers["x-request-id"])
    assert len(ids) == 4


# --- 7. strict types ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("route,body,loc", [
    ("/v1/segment", {**base_request(), "min_area_px": False}, ["body", "min_area_px"]),
    ("/v1/segment", {**base_request(), "simplify_px": "1"}, ["body", "simplify_px"]),
    ("/v1/segment", {**base_request(), "zoom": True}, ["body", "zoom"]),
    ("/v1/segment", {**base_request(), "zoom": 16.0}, ["body", "zoom"]),
    ("/v1/segment", {**base_request(), "multimask": 1}, ["body", "multimask"]),
    ("/v1/segment", {**base_request(), "multimask": "true"}, ["body", "multimask"]),
    ("/v1/segment", {**base_request(), "prompts": [{**base_request()["prompts"][0], "label": True}]},
     ["body", "prompts", 0, "point", "label"]),
    ("/v1/segment/everything", {"lat": 1, "lng": 1, "zoom": 17, "points_per_side": True}, ["body", "points_per_side"]),
    ("/v1/predict", {"instances": [{"image": "x", "points": [[True, 1]]}]}, ["body", "instances", 0, "points", 0, 0]),
    ("/v1/predict", {"instances": [{"image": "x"}], "parameters": {"multimask": 0}},
     ["body", "parameters", "multimask"]),
])
def test_booleans_and_strings_are_not_numbers(client, route, body, loc):
    r = client.post(route, json=body)
    assert r.status_code == 422, r.text
    assert any(e["loc"] == loc for e in r.json()["detail"]), r.json()

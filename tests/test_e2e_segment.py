"""End to end over real HTTP: uvicorn + the synthetic-scene tile server + a test engine that returns the
colour region under the click. Recovered polygons must match the scene's known lat/lng geometry."""

from __future__ import annotations

import asyncio
import json

import httpx
import mercantile
import pytest
from shapely.geometry import box, shape

from api.app import create_app
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import iou, union_geometry
from tests.support.scene import default_scene

SCENE = default_scene()


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine()


@pytest.fixture(scope="module")
def live(tiles, engine, tmp_path_factory):
    settings = tiles.settings(tmp_path_factory.mktemp("e2e"), max_prompts=20, max_body_bytes=50_000)
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def px_extent(poly, z: int) -> float:
    w, s, e, n = poly.bounds
    x0, y0 = mercantile.xy(w, s)
    x1, y1 = mercantile.xy(e, n)
    res = 2 * 20037508.342789244 / (256 * 2**z)
    return max(x1 - x0, y1 - y0) / res


def click_request(poly, z: int, source: str = "Scene", **extra) -> dict:
    p = poly.representative_point()
    w, s, e, n = poly.buffer(0.01).bounds
    return {"bbox": {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}, "zoom": z, "source": source,
            "prompts": [{"type": "point", "lat": p.y, "lng": p.x, "label": 1}], **extra}


GEOREF_CASES = [(s.name, z) for s in SCENE.shapes for z in (14, 15, 16, 17, 18)
                if 80 <= px_extent(s.polygon, z) <= 700]


def test_scene_covers_latitudes_and_zooms():
    lats = [s.polygon.centroid.y for s in SCENE.shapes]
    assert max(lats) >= 70 and min(lats) <= -70 and any(abs(v) < 10 for v in lats)
    assert len({z for _, z in GEOREF_CASES}) >= 3


@pytest.mark.parametrize("name,z", GEOREF_CASES)
def test_recovered_polygon_matches_known_geometry(client, name, z):
    truth = next(s.polygon for s in SCENE.shapes if s.name == name)
    r = client.post("/v1/segment", json=click_request(truth, z, simplify_px=0))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert fc["samgis"]["window"]["z"] == z
    got = union_geometry(fc)
    assert iou(got, truth) >= 0.97, (name, z, iou(got, truth))
    f = fc["features"][0]
    assert {"score", "mask_index", "area_m2", "zoom", "model", "source", "attribution"} <= set(f["properties"])
    assert f["properties"]["source"] == "Scene" and f["properties"]["zoom"] == z
    # RFC 7946: lon/lat order, closed rings
    ring = f["geometry"]["coordinates"][0] if f["geometry"]["type"] == "Polygon" else f["geometry"]["coordinates"][0][0]
    assert ring[0] == ring[-1]
    assert abs(ring[0][0] - truth.centroid.x) < 1 and abs(ring[0][1] - truth.centroid.y) < 1


def test_boxes_clip_to_their_own_extent(client):
    """Box prompts keep their orientation: each mask is the shape cut by its own box (the test engine
    intersects the colour region with the box), at the right place in lat/lng."""
    name, z = "north-building", 16
    truth = next(s.polygon for s in SCENE.shapes if s.name == name)
    w, s_, e, n = truth.bounds
    halves = [box(w - 1e-4, s_ - 1e-4, e + 1e-4, (s_ + n) / 2), box(w - 1e-4, (s_ + n) / 2, (w + e) / 2, n + 1e-4)]
    req = click_request(truth, z, simplify_px=0)
    req["prompts"] = [{"type": "box", "sw": {"lat": b.bounds[1], "lng": b.bounds[0]},
                       "ne": {"lat": b.bounds[3], "lng": b.bounds[2]}} for b in halves]
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 200, r.text
    fc = r.json()
    for k, half in enumerate(halves):
        got = union_geometry({"features": [f for f in fc["features"] if f["properties"]["prompt_index"] == k]})
        want = truth.intersection(half)
        assert iou(got, want) >= 0.9, (k, iou(got, want))


def test_holes_are_kept(client):
    lake = next(s for s in SCENE.shapes if list(s.polygon.interiors))
    z = next(z for n, z in GEOREF_CASES if n == lake.name)
    fc = client.post("/v1/segment", json=click_request(lake.polygon, z, simplify_px=0)).json()
    got = union_geometry(fc)
    assert any(len(list(p.interiors)) for p in getattr(got, "geoms", [got]))


def test_simplify_reduces_vertices_but_keeps_shape(client):
    lake = next(s for s in SCENE.shapes if list(s.polygon.interiors))
    z = max(z for n, z in GEOREF_CASES if n == lake.name)
    exact = client.post("/v1/segment", json=click_request(lake.polygon, z, simplify_px=0)).json()
    simple = client.post("/v1/segment", json=click_request(lake.polygon, z, simplify_px=2)).json()
    n_exact = len(json.dumps(exact["features"]))
    n_simple = len(json.dumps(simple["features"]))
    assert n_simple < n_exact
    assert iou(union_geometry(simple), lake.polygon) >= 0.95


def test_second_click_in_same_window_is_a_cache_hit(client, tiles, engine):
    shp = SCENE.shapes[0].polygon
    z = 17 if 40 <= px_extent(shp, 17) <= 700 else 16
    req = click_request(shp, z)
    client.post("/v1/segment", json=req)  # make sure it is warm
    tiles.reset_counts()
    embeds = engine.embed_calls
    r = client.post("/v1/segment", json=req)
    meta = r.json()["samgis"]
    assert meta["cache"] == "hit"
    assert "tiles" not in meta["timings_ms"] and "embed" not in meta["timings_ms"]
    assert tiles.requests == 0 and engine.embed_calls == embeds
    # the same stages as a Server-Timing header, for browser dev tools
    stages = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
    assert set(stages) == set(meta["timings_ms"]) >= {"validate", "decode", "vectorize", "total"}
    assert float(stages["total"]) == meta["timings_ms"]["total"]


def test_concurrent_cold_requests_compute_the_embedding_once(live, engine):
    shp = SCENE.shapes[1].polygon
    req = click_request(shp, 18)

    async def burst():
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
            return await asyncio.gather(*[c.post("/v1/segment", json=req) for _ in range(8)])

    before = engine.embed_calls
    engine.embed_delay_s = 0.3
    try:
        responses = asyncio.run(burst())
    finally:
        engine.embed_delay_s = 0
    assert all(r.status_code == 200 for r in responses)
    assert engine.embed_calls - before <= 1


def test_parallel_requests_over_many_windows_get_their_own_polygon(live):
    cases = [(n, z) for n, z in GEOREF_CASES][:10]
    assert len({n for n, _ in cases}) >= 5
    shapes = {s.name: s.polygon for s in SCENE.shapes}
    jobs = [(n, z) for n, z in cases for _ in range(2)]  # ≥ 20 requests

    async def run_all():
        async with httpx.AsyncClient(base_url=live.url, timeout=120) as c:
            return await asyncio.gather(*[c.post("/v1/segment", json=click_request(shapes[n], z, simplify_px=0))
                                          for n, z in jobs])

    responses = asyncio.run(run_all())
    assert len(responses) >= 20
    for (n, z), r in zip(jobs, responses):
        assert r.status_code == 200, r.text
        assert iou(union_geometry(r.json()), shapes[n]) >= 0.97, n


def test_embedding_cache_is_bounded_by_bytes(tiles, tmp_path):
    engine = ColourRegionEngine()
    one = 1024 * 1024 * 3
    settings = tiles.settings(tmp_path, cache_bytes=2 * one)
    with LiveServer(create_app(settings, engine=engine)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        for s in SCENE.shapes[:5]:
            assert c.post("/v1/segment", json=click_request(s.polygon, 16)).status_code == 200
        cache = c.get("/v1/models").json()["embedding_cache"]
    assert cache["bytes"] <= 2 * one and cache["entries"] <= 2 and cache["evictions"] >= 1


# --- bad input -------------------------------------------------------------------------------------

def base_request() -> dict:
    return click_request(SCENE.shapes[0].polygon, 16)


def mutate(**changes) -> dict:
    req = base_request()
    req.update(changes)
    return req


BAD = {
    "missing bbox": ({k: v for k, v in base_request().items() if k != "bbox"}, 422, "bbox"),
    "missing prompts": ({k: v for k, v in base_request().items() if k != "prompts"}, 422, "prompts"),
    "empty prompts": (mutate(prompts=[]), 422, "prompts"),
    "lat out of range": (mutate(prompts=[{"type": "point", "lat": 95, "lng": 0}]), 422, "lat"),
    "lng out of range": (mutate(prompts=[{"type": "point", "lat": 0, "lng": 200}]), 422, "lng"),
    "bad label": (mutate(prompts=[{"type": "point", "lat": 0, "lng": 0, "label": 3}]), 422, "label"),
    "unknown prompt type": (mutate(prompts=[{"type": "circle", "lat": 0, "lng": 0}]), 422, "prompts"),
    "zoom not int": (mutate(zoom="high"), 422, "zoom"),
    "unknown field": (mutate(colour="red"), 422, "colour"),
    "unknown source": (mutate(source="http://evil.example/{z}/{x}/{y}.png"), 422, "unknown tile source"),
    "zoom beyond source max": (mutate(zoom=21), 422, "zoom"),
    "negative simplify": (mutate(simplify_px=-1), 422, "simplify_px"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_4xx_naming_the_problem(client, case):
    body, status, needle = BAD[case]
    r = client.post("/v1/segment", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_prompt_outside_bbox_is_refused_not_moved(client):
    req = base_request()
    bb = req["bbox"]
    req["prompts"].append({"type": "point", "lat": bb["ne"]["lat"] + 0.001, "lng": bb["ne"]["lng"], "label": 1})
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 422 and r.json()["field"] == "prompts[1]" and "outside the bbox" in r.json()["detail"]


def test_too_many_prompts_and_oversized_body(client):
    req = base_request()
    p = req["prompts"][0]
    req["prompts"] = [dict(p) for _ in range(21)]
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 422 and "at most 20" in r.text
    req["prompts"] = [dict(p) for _ in range(2000)]
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 413 and "exceeds the limit" in r.text
    r = client.post("/v1/segment", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


@pytest.mark.parametrize("source,status,needle", [
    ("SceneMissing", 502, "404"), ("SceneError", 502, "500"), ("SceneGarbage", 502, "image"),
    ("SceneSlow", 504, "time"),
])
def test_tile_failures_are_gateway_errors_and_server_stays_up(client, source, status, needle):
    req = click_request(SCENE.shapes[2].polygon, 16, source=source)
    r = client.post("/v1/segment", json=req)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"].lower()
    assert client.get("/health").status_code == 200
    assert client.post("/v1/segment", json=base_request()).status_code == 200


# --- SamGIS compatibility --------------------------------------------------------------------------

def samgis_request(prompts: list[dict], poly, z: int = 16) -> dict:
    w, s, e, n = poly.buffer(0.01).bounds
    return {"bbox": {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}, "prompt": prompts, "zoom": z,
            "source_type": "Scene"}


def samgis_point(x: float, y: float, label: int = 1) -> dict:
    return {"type": "point", "data": {"lat": y, "lng": x}, "label": label}


def samgis_rect(poly) -> dict:
    w, s, e, n = poly.buffer(0.0001).bounds
    return {"type": "rectangle", "data": {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}}


def test_samgis_envelope_for_its_request_shapes(client):
    a, b = SCENE.shapes[0].polygon, SCENE.shapes[1].polygon
    pa = a.representative_point()
    near = a.union(b)
    cases = {
        "point": samgis_request([samgis_point(pa.x, pa.y)], a),
        "points": samgis_request([samgis_point(pa.x, pa.y), samgis_point(pa.x, pa.y, 1)], a),
        "rectangle": samgis_request([samgis_rect(a)], a),
        "points + two rectangles": samgis_request([samgis_point(pa.x, pa.y), samgis_rect(a), samgis_rect(b)], near),
        "id, debug, fractional zoom": {**samgis_request([samgis_point(pa.x, pa.y)], a, z=16),
                                       "id": "req-1", "debug": True, "zoom": 16.6},
    }
    for name, req in cases.items():
        r = client.post("/infer_samgis", json=req)
        assert r.status_code == 200, (name, r.text)
        body = json.loads(r.json()["body"])
        out = body["output"]
        assert body["duration_run"] >= 0
        assert isinstance(out["geojson"], str)  # SamGIS sends the FeatureCollection as a JSON string
        gj = json.loads(out["geojson"])
        assert gj["type"] == "FeatureCollection" and gj["features"], name
        # one Polygon feature per shape, foreground only, and n_shapes_geojson counts them
        assert out["n_shapes_geojson"] == len(gj["features"])
        assert out["n_predictions"] == (2 if "two rectangles" in name else 1)
        for k, f in enumerate(gj["features"]):
            assert f["geometry"]["type"] == "Polygon" and shape(f["geometry"]).is_valid
            assert f["id"] == str(k) and f["properties"]["raster_val"] == 255.0
            assert f["properties"]["source"] == "Scene"
        assert body["samgis"]["window"]["z"] <= 16, name  # Leaflet's fractional zoom → its integer part
        if name == "points + two rectangles":
            assert len(gj["features"]) == 2  # two separate objects: two shapes of the one merged raster
            assert iou(union_geometry(gj), a.union(b)) > 0.9
        else:
            assert iou(union_geometry(gj), a) > 0.9


def test_samgis_exclude_only_prompt_is_decoded_not_refused(client):
    a = SCENE.shapes[0].polygon
    pa = a.representative_point()
    r = client.post("/infer_samgis", json=samgis_request([samgis_point(pa.x, pa.y, 0)], a))
    assert r.status_code == 200, r.text
    out = json.loads(r.json()["body"])["output"]
    # the test engine segments nothing without an include point or a box; SamGIS answers that as 1 prediction
    assert out["n_predictions"] == 1 and out["n_shapes_geojson"] == 0
    assert json.loads(out["geojson"]) == {"type": "FeatureCollection", "features": []}
    # our own route still says that exclude points alone select nothing
    ours = client.post("/v1/segment", json={**click_request(a, 16), "prompts": [
        {"type": "point", "lat": pa.y, "lng": pa.x, "label": 0}]})
    assert ours.status_code == 422 and ours.json()["field"] == "prompts"


def test_samgis_source_names_match_loosely(client):
    a = SCENE.shapes[0].polygon
    pa = a.representative_point()
    req = samgis_request([samgis_point(pa.x, pa.y)], a)
    r = client.post("/infer_samgis", json={**req, "source_type": "scene"})  # xyzservices' query_name ignores case
    assert r.status_code == 200 and json.loads(r.json()["body"])["samgis"]["source"] == "Scene"


def test_samgis_error_bodies(client):
    a = SCENE.shapes[0].polygon
    pa = a.representative_point()
    r = client.post("/infer_samgis", json={})
    assert r.status_code == 422 and r.json()["msg"] == "Error - Unprocessable Entity"
    assert any(e["loc"][-1] == "bbox" for e in r.json()["detail"])
    r = client.post("/infer_samgis", json={**samgis_request([samgis_point(pa.x, pa.y)], a), "source_type": "fake"})
    assert r.status_code == 422 and r.json()["msg"] == "Error - Unprocessable Entity"
    assert r.json()["field"] == "source"
    outside = samgis_request([samgis_point(pa.x + 1, pa.y)], a)
    r = client.post("/infer_samgis", json=outside)
    assert r.status_code == 422 and r.json()["msg"] == "Error - Unprocessable Entity"
    assert r.json()["field"] == "prompts[0]"


# --- export, meta ----------------------------------------------------------------------------------

def test_export_geojson_and_geopackage(client, tmp_path):
    import pyogrio

    fc = client.post("/v1/segment", json=base_request()).json()
    r = client.post("/v1/export", params={"format": "gpkg", "name": "my lake"}, json=fc)
    assert r.status_code == 200 and 'filename="my_lake.gpkg"' in r.headers["content-disposition"]
    path = tmp_path / "out.gpkg"
    path.write_bytes(r.content)
    df = pyogrio.read_dataframe(path)
    assert len(df) == len(fc["features"]) and df.crs.to_epsg() == 4326
    r = client.post("/v1/export", params={"format": "geojson"}, json=fc)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    assert len(r.json()["features"]) == len(fc["features"])
    bad = client.post("/v1/export", json={"type": "FeatureCollection", "features": [{"type": "Feature"}]})
    assert bad.status_code == 422 and "features[0]" in bad.text


def test_meta_routes(client):
    assert client.get("/health").json()["status"] == "ok"
    src = client.get("/v1/sources").json()
    names = {s["id"] for s in src["sources"]}
    assert {"Scene", "OpenStreetMap.Mapnik"} <= names
    assert all("url" not in s for s in src["sources"])
    models = client.get("/v1/models").json()
    assert models["loaded"]["id"] == "test-colour" and models["status"] == "ready"
    assert client.get("/openapi.json").status_code == 200
    t = client.get("/v1/tiles/Scene/16/34815/23463.png")
    assert t.status_code == 200 and t.headers["content-type"] == "image/png"
    assert client.get("/v1/tiles/Nope/1/0/0.png").status_code == 422


def test_health_is_503_with_reason_until_model_loads(tiles, tmp_path):
    settings = tiles.settings(tmp_path, allow_download=False)
    with LiveServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(100):
            h = c.get("/health")
            if h.json()["status"] == "error":
                break
        assert h.status_code == 503 and "SAMGIS_CHECKPOINT" in h.json()["detail"]
        r = c.post("/v1/segment", json=base_request())
        assert r.status_code == 503 and "could not be loaded" in r.json()["detail"]

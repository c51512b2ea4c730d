"""`regularize` / `smooth` end to end over real HTTP: uvicorn + a scene tile server (a tilted building, a round
pond) + the colour-region engine. The option must be applied (right angles / no stair steps), reported in the
`samgis` metadata, areas recomputed, geometry valid; bad values are 422s naming the field."""

from __future__ import annotations

import httpx
import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import shape

from api.app import create_app
from samgis.vector.polygons import geodesic_area_m2
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import interior_angles_deg, iou, turning_angles_deg
from tests.support.scene import outline_scene
from tests.support.tileserver import SceneTileServer
from tests.test_e2e_segment import click_request

SCENE = outline_scene()
BUILDING, POND = SCENE.shape("tilted-building").polygon, SCENE.shape("round-pond").polygon
Z = 18
_TO_3857 = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)


def metric(geom):
    """lng/lat → EPSG:3857 metres (conformal: angles are true angles)."""
    return shapely.transform(geom, lambda xy: np.column_stack(_TO_3857.transform(xy[:, 0], xy[:, 1])))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with SceneTileServer(SCENE) as tiles:
        settings = tiles.settings(tmp_path_factory.mktemp("postprocess"), max_points_per_side=8)
        with LiveServer(create_app(settings, engine=ColourRegionEngine())) as server:
            yield server


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def only_geometry(fc: dict):
    assert len(fc["features"]) == 1, fc["features"]
    f = fc["features"][0]
    g = shape(f["geometry"])
    assert g.is_valid and g.geom_type == "Polygon"
    assert f["properties"]["area_m2"] == pytest.approx(geodesic_area_m2(g), abs=0.01)  # measured after
    return g


def test_off_by_default(client):
    fc = client.post("/v1/segment", json=click_request(BUILDING, Z, simplify_px=0)).json()
    assert fc["samgis"]["postprocess"] is None
    exact = only_geometry(fc)
    assert len(exact.exterior.coords) > 40  # the staircase of the tilted edges


def test_regularize_squares_the_tilted_building(client):
    r = client.post("/v1/segment", json=click_request(BUILDING, Z, regularize=True))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["samgis"]["postprocess"]["library"] == "buildingregulariser"
    assert fc["samgis"]["postprocess"]["regularize"]["tolerance_px"] == 2.0
    got = only_geometry(fc)
    corners = interior_angles_deg(metric(got))
    assert len(corners) == 4 and np.all(np.abs(corners - 90) < 3), corners
    assert iou(got, BUILDING) >= 0.9, iou(got, BUILDING)
    plain = only_geometry(client.post("/v1/segment", json=click_request(BUILDING, Z)).json())
    assert fc["features"][0]["properties"]["area_m2"] != pytest.approx(geodesic_area_m2(plain), abs=0.01)


def test_regularize_parameters_are_used_and_reported(client):
    params = {"tolerance_px": 3.0, "diagonal_deg": 22.5, "circles": False}
    fc = client.post("/v1/segment", json=click_request(BUILDING, Z, regularize=params)).json()
    reported = fc["samgis"]["postprocess"]["regularize"]
    assert {k: reported[k] for k in params} == params and reported["parallel_px"] == 2.0
    assert np.all(np.abs(interior_angles_deg(metric(only_geometry(fc))) - 90) < 3)


def test_smooth_rounds_the_pond(client):
    exact = only_geometry(client.post("/v1/segment", json=click_request(POND, Z, simplify_px=0)).json())
    r = client.post("/v1/segment", json=click_request(POND, Z, simplify_px=0, smooth={"iterations": 4}))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["samgis"]["postprocess"] == {"smooth": {"iterations": 4, "tolerance_px": 0.1, "preserve_area": True},
                                           "library": "smoothify"}
    got = only_geometry(fc)
    assert len(got.exterior.coords) < len(exact.exterior.coords)
    assert turning_angles_deg(metric(exact)).max() == pytest.approx(90, abs=1)
    assert turning_angles_deg(metric(got)).max() < 35
    assert iou(got, POND) >= 0.95 and iou(got, POND) >= iou(exact, POND) - 0.01


def test_everything_applies_and_reports_the_option(client):
    """One grid point (the window centre) falls on the pond: its automatic mask comes back smoothed."""
    p = POND.representative_point()
    req = {"lat": p.y, "lng": p.x, "zoom": Z, "source": "Scene", "points_per_side": 1, "simplify_px": 0}
    plain = client.post("/v1/segment/everything", json=req).json()
    r = client.post("/v1/segment/everything", json={**req, "smooth": True})
    assert r.status_code == 200, r.text
    fc = r.json()
    assert plain["samgis"]["postprocess"] is None and fc["samgis"]["postprocess"]["library"] == "smoothify"
    (before,), (after,) = ([shape(f["geometry"]) for f in x["features"]] for x in (plain, fc))
    assert after.is_valid and iou(after, POND) >= 0.95
    assert len(after.exterior.coords) < len(before.exterior.coords)
    assert np.median(turning_angles_deg(metric(before))) == pytest.approx(90, abs=1)
    turns = turning_angles_deg(metric(after))
    assert np.median(turns) < 20 and turns.max() < 60, turns  # the automatic mask has a 1 px spur or two
    props = fc["features"][0]["properties"]
    assert props["area_m2"] == pytest.approx(geodesic_area_m2(after), abs=0.01)


@pytest.mark.parametrize("route,extra,loc", [
    ("/v1/segment", {"regularize": {"tolerance_px": -1}}, ["regularize", "tolerance_px"]),
    ("/v1/segment", {"regularize": {"angle": 3}}, ["regularize", "angle"]),
    ("/v1/segment", {"regularize": {"allow_45": False}}, ["regularize", "allow_45"]),
    ("/v1/segment", {"regularize": "yes"}, ["regularize"]),
    ("/v1/segment", {"smooth": {"iterations": 0}}, ["smooth", "iterations"]),
    ("/v1/segment", {"smooth": {"iterations": 2.5}}, ["smooth", "iterations"]),
    ("/v1/segment/everything", {"smooth": {"tolerance_px": 99}}, ["smooth", "tolerance_px"]),
    ("/v1/segment/everything", {"regularize": {"diagonal_deg": 30}}, ["regularize", "diagonal_deg"]),
])
def test_bad_values_are_422_naming_the_field(client, route, extra, loc):
    p = BUILDING.representative_point()
    base = click_request(BUILDING, Z) if route == "/v1/segment" else {"lat": p.y, "lng": p.x, "zoom": Z,
                                                                       "source": "Scene"}
    r = client.post(route, json={**base, **extra})
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(loc[0] in e["loc"] and loc[-1] in e["loc"] for e in errors), errors


@pytest.mark.parametrize("route", ["/v1/segment", "/v1/segment/everything"])
def test_both_options_are_refused(client, route):
    p = BUILDING.representative_point()
    base = click_request(BUILDING, Z) if route == "/v1/segment" else {"lat": p.y, "lng": p.x, "zoom": Z,
                                                                       "source": "Scene"}
    r = client.post(route, json={**base, "regularize": True, "smooth": True})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "smooth" and "regularize" in r.json()["detail"]


def test_concept_answers_are_post_processed_too(tmp_path_factory):
    """Text prompts ("find every red") take the option as clicks do: every instance regularized, reported."""
    from samgis.engine.protocol import Capabilities
    from tests.support.scene import concept_bbox, concept_scene

    scene = concept_scene()
    w, s, e, n = concept_bbox(scene)
    body = {"bbox": {"ne": {"lat": n, "lng": e}, "sw": {"lat": s, "lng": w}}, "zoom": 16, "source": "Scene",
            "prompts": [{"type": "text", "text": "red"}]}
    engine = ColourRegionEngine(capabilities=Capabilities(text=True, exemplars=True))
    with SceneTileServer(scene) as tiles, \
            LiveServer(create_app(tiles.settings(tmp_path_factory.mktemp("pp_concepts")), engine=engine)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        plain = c.post("/v1/segment", json=body).json()
        r = c.post("/v1/segment", json={**body, "regularize": {"circles": False}})
    assert r.status_code == 200, r.text
    fc = r.json()
    assert fc["samgis"]["postprocess"]["library"] == "buildingregulariser" and plain["samgis"]["postprocess"] is None
    assert len(fc["features"]) == len(plain["features"]) == 3
    for f, g in zip(fc["features"], plain["features"]):
        got, before = shape(f["geometry"]), shape(g["geometry"])
        assert got.is_valid and iou(got, before) >= 0.85
        assert f["properties"]["area_m2"] == pytest.approx(geodesic_area_m2(got), abs=0.01)
        off = interior_angles_deg(metric(got)) % 45
        assert np.all(np.minimum(off, 45 - off) < 3), off  # multiples of 45° only (the round one gets diagonals)

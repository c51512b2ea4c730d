"""Property-based (hypothesis): non-finite numbers, Unicode digits, huge integers and other wrong scalars put in
every numeric field of a valid body of every JSON route, sent to a real uvicorn server: never a 5xx, always JSON,
and a non-finite number is always a 422."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.test_e2e_segment import SCENE, base_request
from tests.test_hostile_input import hostile_settings, png_b64

IMG = png_b64(64, 64)
BOX = [[4, 4, 40, 40]]


def segment_body() -> dict:
    req = base_request()
    bb = req["bbox"]
    lat, lng = (bb["sw"]["lat"] + bb["ne"]["lat"]) / 2, (bb["sw"]["lng"] + bb["ne"]["lng"]) / 2
    req["prompts"].append({"type": "box", "sw": {"lat": lat - 1e-3, "lng": lng - 1e-3},
                           "ne": {"lat": lat + 1e-3, "lng": lng + 1e-3}})
    return {**req, "multimask": False, "simplify_px": 1.0, "min_area_px": 0.5}


def everything_body() -> dict:
    p = SCENE.shapes[0].polygon.representative_point()
    return {"lat": p.y, "lng": p.x, "zoom": 16, "source": "Scene", "points_per_side": 2, "pred_iou_thresh": 0.5,
            "stability_score_thresh": 0.5, "box_nms_thresh": 0.7, "min_area_m2": 1.5, "min_area_px": 0.5,
            "simplify_px": 1.0}


def samgis_body() -> dict:
    req = base_request()
    p = req["prompts"][0]
    return {"bbox": req["bbox"], "zoom": 16.0, "source_type": "Scene", "prompt": [
        {"type": "point", "data": {"lat": p["lat"], "lng": p["lng"]}, "label": 1},
        {"type": "rectangle", "data": {"ne": req["bbox"]["ne"], "sw": req["bbox"]["sw"]}, "label": 0}]}


def predict_body() -> dict:
    params = {"points_per_side": 2, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5,
              "stability_score_offset": 1.0, "box_nms_thresh": 0.7, "crop_n_layers": 0, "crop_nms_thresh": 0.7,
              "crop_overlap_ratio": 0.3, "crop_n_points_downscale_factor": 1, "min_mask_region_area": 0}
    return {"instances": [{"image": IMG, "points": [[20.5, 20]], "labels": [1], "boxes": BOX},
                          {"image": IMG, "points_per_side": 2}], "parameters": params}


def score_body() -> dict:
    return {"input_data": {"columns": ["image", "input_points", "input_boxes", "input_labels",
                                       "multimask_output"],
                           "index": [0], "data": [[IMG, [[[20, 20]]], BOX, [[1]], False]]},
            "params": {"threshold": 0.5}}


def export_body() -> dict:
    ring = [[11.0, 45.0], [11.1, 45.0], [11.1, 45.1], [11.0, 45.0]]
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"score": 0.9, "mask_index": 0}}]}


ROUTES = {"/v1/segment": segment_body, "/v1/segment/everything": everything_body, "/infer_samgis": samgis_body,
          "/v1/predict": predict_body, "/score": score_body, "/v1/export?format=geojson": export_body}


def numeric_paths(value, path=()) -> list[tuple]:
    """Paths (keys and indices) of every JSON number (not true/false) in `value`."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in numeric_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in numeric_paths(v, (*path, i))]
    return []


def with_token(body: dict, path: tuple, token: str) -> str:
    """`body` as JSON text with the raw JSON `token` (e.g. NaN, 1e400, "²") at `path`."""
    doc = json.loads(json.dumps(body))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@BAD@@"
    return json.dumps(doc).replace('"@@BAD@@"', token)


NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E+999", "123456789.5e400"])
HUGE_INT = st.builds(lambda sign, n: sign + "7" * n, st.sampled_from(["", "-"]), st.integers(20, 6000))
LONG_FLOAT = st.integers(310, 3000).map(lambda n: "1" + "0" * n + ".25")  # a float overflowing to inf
UNICODE_DIGITS = st.sampled_from(["²", "١٢", "٣.٥", "½", "Ⅻ", "𝟠", "１２", "߃", "⁹⁹"]).map(json.dumps)
WRONG_KIND = st.sampled_from(["true", "false", '"1"', '""', "[]", "{}", "[1]", '"NaN"', '"Infinity"'])
EDGE = st.sampled_from(["1e-400", "-0", "0", "-1", "1e308", "-1e308", "4294967296", "9007199254740993"])
TOKENS = st.one_of(NON_FINITE, HUGE_INT, LONG_FLOAT, UNICODE_DIGITS, WRONG_KIND, EDGE)


def is_non_finite(token: str) -> bool:
    try:
        return not math.isfinite(float(token))
    except (ValueError, OverflowError):
        return False


@pytest.fixture(scope="module")
def client(tiles, tmp_path_factory):
    app = create_app(hostile_settings(tiles, tmp_path_factory.mktemp("property")), engine=ColourRegionEngine())
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_base_bodies_are_valid(client, route):
    r = client.post(route, json=ROUTES[route]())
    assert r.status_code == 200, r.text
    assert numeric_paths(ROUTES[route]())


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(ROUTES))
@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_5xx_for_odd_numbers_in_any_numeric_field(client, route, data):
    body = ROUTES[route]()
    path = data.draw(st.sampled_from(numeric_paths(body)), label="path")
    token = data.draw(TOKENS, label="token")
    r = client.post(route, content=with_token(body, path, token).encode(),
                    headers={"content-type": "application/json"})
    assert r.status_code < 500, (path, token[:40], r.text[:500])
    answer = r.json()  # always JSON
    if is_non_finite(token):
        assert r.status_code == 422 and "finite" in json.dumps(answer), (path, token[:40], r.text[:500])
    if r.status_code >= 400:
        assert answer["request_id"] == r.headers["x-request-id"]

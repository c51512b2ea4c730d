"""`regularize` / `smooth` on the plain-image predict path (mask_format "polygon") over real HTTP, with the
colour-region engine: the outline of a tilted rectangle comes back square, a pixelated disc comes back round;
wrong combinations are 422s naming the field."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import shapely
from shapely import affinity
from shapely.geometry import shape

from api.app import create_app
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.geometry import interior_angles_deg, iou, turning_angles_deg
from tests.test_predict import encoded
from tests.test_predict_http import with_predict_routes

H, W = 160, 200
RECT = affinity.rotate(shapely.box(30, 40, 110, 90), 17, origin=(70, 65))  # image px, pixel-edge frame
DISC = shapely.Point(155.3, 110.6).buffer(28, quad_segs=64)


def scene_image() -> np.ndarray:
    """(H, W, 3) uint8: grey background, a red tilted rectangle and a blue disc (pixel centres inside)."""
    img = np.full((H, W, 3), 230, np.uint8)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    img[shapely.contains_xy(RECT, xx, yy)] = (200, 30, 30)
    img[shapely.contains_xy(DISC, xx, yy)] = (20, 90, 220)
    return img


IMAGE = encoded(scene_image())


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(cache_dir=tmp_path_factory.mktemp("pp_predict") / "cache", builtin_sources=False,
                        max_body_bytes=2_000_000)
    with LiveServer(with_predict_routes(create_app(settings, engine=ColourRegionEngine()))) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            yield c


def click(shape_, **options) -> dict:
    c = shape_.centroid
    return {"instances": [{"image": IMAGE, "points": [[c.x - 0.5, c.y - 0.5]], "mask_format": "polygon",
                           **options}]}


def test_regularize_squares_the_polygon_mask(client):
    plain = client.post("/v1/predict", json=click(RECT)).json()["predictions"][0]
    assert "postprocess" not in plain
    r = client.post("/v1/predict", json=click(RECT, regularize=True))
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["postprocess"]["library"] == "buildingregulariser"
    got = shape(pred["masks"][0][0])
    assert got.is_valid and len(shape(plain["masks"][0][0]).exterior.coords) > 12
    corners = interior_angles_deg(got)
    assert len(corners) == 4 and np.all(np.abs(corners - 90) < 3), corners
    assert iou(got, RECT) >= 0.9


def test_smooth_in_parameters_rounds_the_disc(client):
    body = click(DISC)
    body["parameters"] = {"smooth": {"iterations": 3}}
    r = client.post("/v1/models/samgis:predict", json=body)
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["postprocess"]["smooth"]["iterations"] == 3
    got = shape(pred["masks"][0][0])
    assert got.is_valid and turning_angles_deg(got).max() < 35 and iou(got, DISC) >= 0.95


@pytest.mark.parametrize("body_extra,where", [
    ({"regularize": True, "mask_format": "rle"}, "instances[0].regularize"),
    ({"regularize": True, "smooth": True}, "instances[0].smooth"),
])
def test_service_refusals_name_the_field(client, body_extra, where):
    body = click(RECT)
    body["instances"][0].update(body_extra)
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == where


def test_schema_refusals_name_the_field(client):
    body = click(RECT)
    body["parameters"] = {"smooth": {"iterations": 0}}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert any("smooth" in loc and "iterations" in loc for loc in locs), locs


def test_geotiff_outlines_in_lnglat_and_crs_are_regularized(client, tmp_path):
    """A GeoTIFF (EPSG:32632, 2 m px): masks, masks_crs and masks_lnglat all carry the squared outline."""
    import base64

    import pyproj

    from tests.support.raster import write_raster

    origin, res = (500000.0, 5000000.0), 2.0
    to_crs = lambda xy: np.column_stack([origin[0] + xy[:, 0] * res, origin[1] - xy[:, 1] * res])  # noqa: E731
    rect_crs = shapely.transform(RECT, to_crs)
    r = write_raster(tmp_path / "tilted.tif", crs="EPSG:32632", origin=origin, res=res, width=W, height=H,
                     shapes=[("roof", rect_crs, (200, 30, 30))], background=(60, 120, 60))
    c = RECT.centroid
    body = {"instances": [{"image": base64.b64encode(r.path.read_bytes()).decode(), "points": [[c.x - 0.5, c.y - 0.5]],
                           "mask_format": "polygon", "regularize": True}]}
    resp = client.post("/v1/predict", json=body)
    assert resp.status_code == 200, resp.text
    pred = resp.json()["predictions"][0]
    px, native, lnglat = (shape(pred[k][0][0]) for k in ("masks", "masks_crs", "masks_lnglat"))
    for g in (px, native, lnglat):
        assert g.is_valid and len(g.exterior.coords) == 5
    assert np.all(np.abs(interior_angles_deg(native) - 90) < 3) and iou(native, rect_crs) >= 0.9
    utm = pyproj.Transformer.from_crs(4326, 32632, always_xy=True)
    back = shapely.transform(lnglat, lambda xy: np.column_stack(utm.transform(xy[:, 0], xy[:, 1])))
    assert iou(back, native) >= 0.99

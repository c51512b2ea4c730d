"""GeoTIFFs through the plain-image API (/v1/predict) on a live uvicorn with the colour-region test engine:
lng/lat and pixel prompts, polygons in EPSG:4326 and in the raster's CRS, nodata clipping, bad inputs."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from api.app import create_app
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.raster import write_raster
from tests.test_predict_http import with_predict_routes

ORIGIN, RES = (500000.0, 5000000.0), 2.0  # EPSG:32632, 2 m px, 200 × 160 px


def _box(c0, r0, c1, r1):
    """Px rectangle [c0, c1) × [r0, r1) as a polygon in EPSG:32632."""
    return shapely.box(ORIGIN[0] + c0 * RES, ORIGIN[1] - r1 * RES, ORIGIN[0] + c1 * RES, ORIGIN[1] - r0 * RES)


def iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geotiff")
    field = write_raster(tmp / "field.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=200, height=160,
                         shapes=[("field", _box(40, 30, 120, 90), (200, 40, 40))], background=(60, 120, 60))
    # uint16 with nodata margins: a shape running into the nodata area must be clipped to the valid px
    margin = write_raster(tmp / "margin.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=200, height=160,
                          shapes=[("roof", _box(100, 40, 190, 100), (3000, 800, 800))],
                          background=(900, 1800, 900), dtype="uint16", nodata=0, valid_px=(0, 0, 150, 160))
    return {"field": field, "margin": margin}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geotiff_server")
    settings = Settings(cache_dir=tmp / "cache", builtin_sources=False, max_body_bytes=2_000_000,
                        max_image_pixels=40_000)
    with LiveServer(with_predict_routes(create_app(settings, engine=ColourRegionEngine()))) as server:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            yield c


def predict(client, instance) -> dict:
    r = client.post("/v1/predict", json={"instances": [instance], "parameters": {"mask_format": "polygon"}})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def test_lnglat_and_pixel_clicks_return_the_shape_in_lnglat_and_raster_crs(client, rasters):
    r = rasters["field"]
    want = r.shape("field")
    lng, lat = want.inside_lnglat()
    by_lnglat = predict(client, {"image": b64(r.path), "points_lnglat": [[lng, lat]]})
    by_px = predict(client, {"image": b64(r.path), "points": [[80, 60]]})
    for pred in (by_lnglat, by_px):
        assert pred["crs"] == "EPSG:32632"
        assert iou(shape(pred["masks_lnglat"][0][0]), want.lnglat()) >= 0.97
        assert iou(shape(pred["masks_crs"][0][0]), want.polygon) >= 0.97
        # the pixel polygon is unchanged: pixel edges
        assert shape(pred["masks"][0][0]).bounds == (40.0, 30.0, 120.0, 90.0)
    # RFC 7946: exterior rings counter-clockwise, lng/lat order
    ring = shapely.LinearRing(by_lnglat["masks_lnglat"][0][0]["coordinates"][0])
    assert ring.is_ccw and 8 < ring.coords[0][0] < 10 and 45 < ring.coords[0][1] < 46


def test_lnglat_box_is_placed_through_the_raster_crs(client, rasters):
    r = rasters["field"]
    w, s, e, n = r.shape("field").lnglat().bounds  # the colour engine answers a box-only query with the box
    pred = predict(client, {"image": b64(r.path), "boxes_lnglat": [[w, s, e, n]]})
    assert iou(shape(pred["masks_crs"][0][0]), r.shape("field").polygon) >= 0.97


def test_nodata_pixels_are_never_part_of_a_mask(client, rasters):
    r = rasters["margin"]
    pred = predict(client, {"image": b64(r.path), "points": [[120, 70]]})
    valid_roof = _box(100, 40, 150, 100)  # the roof's part inside the valid columns 0..150
    assert iou(shape(pred["masks_crs"][0][0]), valid_roof) >= 0.97
    assert shape(pred["masks"][0][0]).bounds == (100.0, 40.0, 150.0, 100.0)
    assert pred["masks_lnglat"][0][0] is not None


def _png(h=20, w=30) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _error(client, instance, status=422):
    r = client.post("/v1/predict", json={"instances": [instance]})
    assert r.status_code == status, r.text
    return r.json()


def test_bad_inputs_name_their_fields(client, rasters, tmp_path):
    r = rasters["field"]
    outside = r.px_to_lnglat(250, 60)
    body = _error(client, {"image": b64(r.path), "points": [[80, 60]], "points_lnglat": [list(outside)]})
    assert "instances[0].points_lnglat[0]" in str(body) and "outside" in str(body)
    w, s, e, n = r.shape("field").lnglat().bounds
    body = _error(client, {"image": b64(r.path), "boxes_lnglat": [[w, s, e + 0.01, n]]})
    assert "instances[0].boxes_lnglat[0]" in str(body)
    body = _error(client, {"image": _png(), "points_lnglat": [[9.0, 45.1]]})
    assert "instances[0].points_lnglat" in str(body) and "no georeferencing" in str(body)
    body = _error(client, {"image": b64(r.path), "points_lnglat": [[9.0, 145.1]]})
    assert "instances[0].points_lnglat[0]" in str(body)
    body = _error(client, {"image": base64.b64encode(b"II*\x00garbage").decode(), "points": [[1, 1]]})
    assert "instances[0].image" in str(body)
    big = write_raster(tmp_path / "big.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=250, height=200,
                       shapes=[], background=(1, 2, 3))
    body = _error(client, {"image": b64(big.path), "points": [[1, 1]]}, 413)
    assert "instances[0].image" in str(body)
    body = _error(client, {"image": b64(r.path), "points_lnglat": [list(r.shape("field").inside_lnglat())],
                           "labels": [1, 1]})
    assert "instances[0].labels" in str(body)


def test_automatic_masks_carry_geometries(client, rasters):
    r = rasters["field"]
    r_ = client.post("/v1/predict", json={"instances": [{"image": b64(r.path), "mask_format": "polygon",
                                                         "points_per_side": 4}]})
    assert r_.status_code == 200, r_.text
    pred = r_.json()["predictions"][0]
    assert pred["mode"] == "automatic" and pred["crs"] == "EPSG:32632"
    best = max(iou(shape(m["segmentation_crs"]), r.shape("field").polygon) for m in pred["masks"]
               if m["segmentation_crs"])
    assert best >= 0.97
    best = max(iou(shape(m["segmentation_lnglat"]), r.shape("field").lnglat()) for m in pred["masks"]
               if m["segmentation_lnglat"])
    assert best >= 0.97


def test_tiff_without_georeferencing_segments_in_pixels_only(client, tmp_path):
    plain = write_raster(tmp_path / "plain.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=100, height=80,
                         shapes=[("s", _box(10, 10, 50, 40), (250, 250, 0))], background=(0, 0, 250),
                         georeferenced=False)
    pred = predict(client, {"image": b64(plain.path), "points": [[20, 20]]})
    assert "crs" not in pred and "masks_lnglat" not in pred
    assert shape(pred["masks"][0][0]).bounds == (10.0, 10.0, 50.0, 40.0)
    body = _error(client, {"image": b64(plain.path), "boxes_lnglat": [[9.0, 45.0, 9.1, 45.1]]})
    assert "instances[0].boxes_lnglat" in str(body) and "no georeferencing" in str(body)


def test_non_uint8_geotiff_gets_the_raster_sources_stretch(tmp_path):
    from samgis.geo.readers.raster import RasterReader, RasterWindow, raster_source
    from samgis.imaging.geotiff import read_geotiff

    r = write_raster(tmp_path / "f32.tif", crs="EPSG:32632", origin=ORIGIN, res=RES, width=128, height=128,
                     shapes=[("a", _box(10, 10, 60, 50), (0.9, 0.2, 0.1)),
                             ("b", _box(70, 60, 120, 120), (0.3, 0.8, 0.5))],
                     background=(0.1, 0.4, 0.2), dtype="float32", nodata=-1.0, valid_px=(0, 0, 128, 100))
    decoded = read_geotiff(r.path.read_bytes(), "image", 128 * 128)
    reader = RasterReader(raster_source("f32", {"raster": str(r.path)}), window_px=128)
    window = RasterWindow(1, 0, 0, 128, 0, reader.transform, reader.source.crs_wkt)
    from_reader = reader._read_window(window)
    np.testing.assert_array_equal(decoded.rgb, from_reader.rgb)
    np.testing.assert_array_equal(decoded.valid, from_reader.valid)
    assert decoded.valid[:100].all() and not decoded.valid[100:].any()
    assert decoded.rgb[:100].min() < 30 and decoded.rgb[:100].max() > 220  # stretched, not clipped float
    assert decoded.geo.name == "EPSG:32632" and decoded.geo.transform == r.transform

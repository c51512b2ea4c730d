"""POST /v1/segment/everything end to end: uvicorn + the synthetic-scene tile server + the colour-region engine,
run through segment_anything's SamAutomaticMaskGenerator. Every mask it returns must be a region the scene
really has (a shape, a lake's island, the background), in the right place in lng/lat."""

from __future__ import annotations

import httpx
import mercantile
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box, shape

from api.app import create_app
from samgis.geo.tiles import Window
from samgis.engine.protocol import AmgOptions
from samgis.errors import InvalidRequest
from samgis.settings import Settings
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine
from tests.support.scene import default_scene, render_mosaic
from tests.support.tileserver import ATTRIBUTION
from tests.support.geometry import iou
from tests.test_e2e_segment import click_request

SCENE = default_scene()
CAP = 8  # the server's max_points_per_side in these tests (the real default is 32)
ROUTE = "/v1/segment/everything"


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine()


@pytest.fixture(scope="module")
def live(tiles, engine, tmp_path_factory):
    settings = tiles.settings(tmp_path_factory.mktemp("everything"), max_points_per_side=CAP)
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


def everything_request(name: str, z: int, **extra) -> dict:
    p = SCENE.shape(name).polygon.representative_point()
    return {"lat": p.y, "lng": p.x, "zoom": z, "source": "Scene", "simplify_px": 0, **extra}


def truth_regions(window: dict) -> dict[str, Polygon]:
    """Every flat-colour region of the window in lng/lat: shapes, their holes (islands), the background."""
    w = Window(window["z"], window["x"], window["y"])
    frame = box(*w.bounds())
    regions, occupied = {}, []
    for s in SCENE.shapes:
        if s.polygon.intersects(frame):
            regions[s.name] = s.polygon.intersection(frame)
            occupied.append(Polygon(s.polygon.exterior))
            for k, ring in enumerate(s.polygon.interiors):
                regions[f"{s.name} island {k}"] = Polygon(ring).intersection(frame)
    regions["background"] = frame.difference(shapely.union_all(occupied)) if occupied else frame
    return regions


def best_match(geom, regions: dict[str, Polygon]) -> tuple[str, float]:
    return max(((name, iou(geom, truth)) for name, truth in regions.items()), key=lambda t: t[1])


@pytest.fixture(scope="module")
def lake_fc(client):
    """Automatic masks of the window around the mid-latitude lake at z 17 (lake 462 px across)."""
    r = client.post(ROUTE, json=everything_request("mid-lake", 17, points_per_side=6))
    assert r.status_code == 200, r.text
    return r.json()


def to_3857(geom):
    """A lng/lat geometry with every vertex projected to EPSG:3857 metres (mercantile.xy)."""
    return shapely.transform(geom, lambda c: np.array([mercantile.xy(x, y) for x, y in c], np.float64).reshape(-1, 2))


def centroid_offset_px(geom, truth, z: int) -> float:
    """Distance between the centroids of two lng/lat geometries, in Web Mercator px at zoom z."""
    a, b = to_3857(geom).centroid, to_3857(truth).centroid
    return float(np.hypot(a.x - b.x, a.y - b.y)) / (2 * 20037508.342789244 / (256 * 2**z))


@pytest.mark.parametrize("name,z,pps", [("mid-lake", 17, 6), ("north-lake", 16, 4), ("equator-field", 18, 4)])
def test_every_mask_is_a_real_region_in_the_right_place(client, lake_fc, name, z, pps):
    fc = lake_fc if name == "mid-lake" else client.post(ROUTE, json=everything_request(name, z,
                                                                                      points_per_side=pps)).json()
    meta = fc["samgis"]
    assert meta["window"]["z"] == z and meta["zoom_requested"] == z
    regions = truth_regions(meta["window"])
    matched = {}
    for f in fc["features"]:
        g = shape(f["geometry"])
        region, score = best_match(g, regions)
        assert score >= 0.95, (region, score)  # no mask is made up or misplaced
        assert region not in matched  # deduplicated: one feature per region
        matched[region] = (score, centroid_offset_px(g, regions[region], z))
    # The object and the background around it come back where the scene has them. Masks come from SAM's
    # 256² low-res logits upscaled to 1024 px (as SamPredictor does), so outlines are exact to ~1 px only.
    assert name in matched and "background" in matched, matched
    assert matched[name][0] >= 0.98 and matched[name][1] < 1.5, matched
    assert matched["background"][0] >= 0.995 and matched["background"][1] < 0.5, matched
    if name == "mid-lake":
        assert "mid-lake island 0" in matched  # a hole of the lake is its own mask too
        lake = next(f for f in fc["features"] if best_match(shape(f["geometry"]), regions)[0] == name)
        assert lake["geometry"]["type"] == "Polygon" and len(lake["geometry"]["coordinates"]) == 2  # hole kept


def test_response_shape_and_metadata(lake_fc):
    fc = lake_fc
    assert fc["type"] == "FeatureCollection" and fc["features"]
    meta = fc["samgis"]
    assert {"window", "zoom_requested", "cache", "timings_ms", "model", "source", "attribution"} <= set(meta)
    assert meta["model"] == "test-colour" and meta["source"] == "Scene" and meta["attribution"] == ATTRIBUTION
    assert set(meta["window"]) == {"z", "x", "y", "size"} and meta["window"]["size"] == 1024
    assert {"generate", "vectorize", "total"} <= set(meta["timings_ms"])
    assert meta["n_masks"] == len(fc["features"]) and meta["n_generated"] >= meta["n_masks"]
    gen = meta["generator"]
    assert gen["points_per_side"] == 6 and gen["grid_points"] == 36 and gen["crop_n_layers"] == 0
    assert all(type(gen[k]) is int for k in ("points_per_side", "grid_points", "crop_n_layers"))
    assert gen["pred_iou_thresh"] == 0.88 and gen["box_nms_thresh"] == 0.7 and gen["min_area_m2"] == 0
    scores = [f["properties"]["score"] for f in fc["features"]]
    assert scores == sorted(scores, reverse=True)
    assert [f["properties"]["mask_index"] for f in fc["features"]] == list(range(len(fc["features"])))
    for f in fc["features"]:
        p = f["properties"]
        assert {"score", "stability_score", "mask_index", "area_m2", "zoom", "model", "source",
                "attribution", "at_window_edge"} <= set(p)
        assert p["zoom"] == 17 and p["source"] == "Scene" and p["attribution"] == ATTRIBUTION
        assert p["score"] == pytest.approx(0.9) and 0.95 <= p["stability_score"] <= 1
        g = shape(f["geometry"])
        assert g.is_valid and p["area_m2"] > 0
        coords = f["geometry"]["coordinates"]
        polys = coords if f["geometry"]["type"] == "MultiPolygon" else [coords]
        for rings in polys:
            assert all(ring[0] == ring[-1] for ring in rings)  # closed
            assert shapely.is_ccw(shapely.LinearRing(rings[0]))  # RFC 7946: exterior counter-clockwise
            assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in rings[0])  # lon, lat order
            assert abs(rings[0][0][1] - 45.0) < 0.1
    # only the background reaches the window's border
    edge = [f for f in fc["features"] if f["properties"]["at_window_edge"]]
    largest = max(f["properties"]["area_m2"] for f in fc["features"])
    assert len(edge) == 1 and edge[0]["properties"]["area_m2"] == largest


def test_min_area_drops_small_masks(client, lake_fc):
    areas = sorted(f["properties"]["area_m2"] for f in lake_fc["features"])
    assert len(areas) == 3  # island < lake < background
    cut = (areas[0] + areas[1]) / 2
    fc = client.post(ROUTE, json=everything_request("mid-lake", 17, points_per_side=6, min_area_m2=cut)).json()
    assert fc["samgis"]["cache"] == "hit"
    assert sorted(f["properties"]["area_m2"] for f in fc["features"]) == areas[1:]
    assert fc["samgis"]["n_generated"] == lake_fc["samgis"]["n_generated"] and fc["samgis"]["n_masks"] == 2
    assert fc["samgis"]["generator"]["min_area_m2"] == cut


def test_near_duplicate_masks_are_dropped(client):
    """Box NMS off and every multimask candidate kept: the grid finds each region many times over, and
    the 2 px eroded/dilated candidates overlap the region with IoU > 0.9; one feature per region is left."""
    req = everything_request("north-lake", 16, points_per_side=4)
    plain = client.post(ROUTE, json=req).json()
    loose = client.post(ROUTE, json={**req, "pred_iou_thresh": 0.5, "box_nms_thresh": 1.0}).json()
    assert loose["samgis"]["n_generated"] >= 3 * plain["samgis"]["n_generated"]
    assert loose["samgis"]["n_masks"] == plain["samgis"]["n_masks"]
    geoms = [shape(f["geometry"]) for f in loose["features"]]
    for i in range(len(geoms)):
        for j in range(i + 1, len(geoms)):
            assert iou(geoms[i], geoms[j]) < 0.9
    # the best-scored candidate (the exact region, 0.9) wins over its eroded (0.8) and dilated (0.7) copies
    scores = [f["properties"]["score"] for f in plain["features"]]
    assert [f["properties"]["score"] for f in loose["features"]] == scores
    for a, b in zip(loose["features"], plain["features"]):
        assert iou(shape(a["geometry"]), shape(b["geometry"])) > 0.999


def test_embedding_cache_is_shared_with_segment(client, tiles, engine):
    # everything first, then a click in the same window: the click is a hit
    req = everything_request("south-lake", 16, points_per_side=4)
    first = client.post(ROUTE, json=req).json()["samgis"]
    assert first["cache"] == "miss" and {"tiles", "embed"} <= set(first["timings_ms"])
    tiles.reset_counts()
    embeds = engine.embed_calls
    click = client.post("/v1/segment", json=click_request(SCENE.shape("south-lake").polygon, 16)).json()["samgis"]
    assert click["cache"] == "hit" and click["window"] == first["window"]
    assert tiles.requests == 0 and engine.embed_calls == embeds

    # a click first, then everything in that window: everything is a hit
    click = client.post("/v1/segment", json=click_request(SCENE.shape("equator-lake").polygon, 17)).json()["samgis"]
    assert click["cache"] == "miss"
    tiles.reset_counts()
    embeds = engine.embed_calls
    meta = client.post(ROUTE, json=everything_request("equator-lake", 17, points_per_side=4)).json()["samgis"]
    assert meta["cache"] == "hit" and meta["window"] == click["window"]
    assert "tiles" not in meta["timings_ms"] and "embed" not in meta["timings_ms"]
    assert tiles.requests == 0 and engine.embed_calls == embeds


def test_points_per_side_is_capped_by_settings(client):
    r = client.post(ROUTE, json=everything_request("mid-lake", 17, points_per_side=CAP + 1))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "points_per_side" and f"[1, {CAP}]" in r.json()["detail"]
    assert Settings().max_points_per_side == 32


BAD = {
    "unknown source": ({"source": "http://evil.example/{z}/{x}/{y}.png"}, "source"),
    "zoom beyond source max": ({"zoom": 21}, "zoom"),
    "lat out of range": ({"lat": 95}, "lat"),
    "lat off the Web Mercator map": ({"lat": 86.0}, "lat"),
    "lng out of range": ({"lng": -181}, "lng"),
    "zero points per side": ({"points_per_side": 0}, "points_per_side"),
    "threshold above 1": ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
    "negative min area": ({"min_area_m2": -1}, "min_area_m2"),
    "negative simplify": ({"simplify_px": -1}, "simplify_px"),
    "unknown field": ({"prompts": []}, "prompts"),
    "missing zoom": ({"zoom": None}, "zoom"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_a_422_naming_the_field(client, case):
    changes, field = BAD[case]
    req = {k: v for k, v in {**everything_request("mid-lake", 17), **changes}.items() if v is not None}
    r = client.post(ROUTE, json=req)
    assert r.status_code == 422, r.text
    body = r.json()
    if isinstance(body["detail"], list):  # pydantic's schema errors
        assert any(field in [str(x) for x in e["loc"]] for e in body["detail"]), body
    else:
        assert body["field"] == field, body


@pytest.mark.parametrize("source,needle", [("SceneMissing", "404"), ("SceneGarbage", "image")])
def test_tile_failures_are_gateway_errors(client, source, needle):
    """Same error mapping as /v1/segment (whose tests also cover the 504 of a slow source)."""
    r = client.post(ROUTE, json=everything_request("mid-field", 16, points_per_side=2, source=source))
    assert r.status_code == 502, r.text
    assert needle in r.json()["detail"].lower()
    assert client.get("/health").status_code == 200


def test_openapi_documents_the_route(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"][ROUTE]["post"]
    assert {"422", "502", "504"} <= set(op["responses"])
    schema = spec["components"]["schemas"]["EverythingRequest"]
    assert schema["properties"]["points_per_side"]["default"] == 16
    assert {"lat", "lng", "zoom"} <= set(schema["required"])


def test_generator_runs_on_the_embedding_alone():
    """A cached window embedding is enough: same records as the generator given the image's pixels."""
    engine = ColourRegionEngine()
    p = SCENE.shape("mid-lake").polygon.representative_point()
    t = mercantile.tile(p.x, p.y, 16)
    image = render_mosaic(SCENE, 16, t.x - 1, t.y - 1, tiles=2)  # (512, 512, 3), the lake inside
    embedding = engine.embed(image)
    options = AmgOptions(points_per_side=4)
    ours = engine.generate(embedding, options)
    ref = engine.generate(embedding, options, image)
    assert len(ours) == len(ref) >= 2 and engine.embed_calls == 1
    for a, b in zip(ours, ref):
        assert np.array_equal(a["segmentation"], b["segmentation"])
        assert (a["bbox"], a["predicted_iou"], a["stability_score"]) == (b["bbox"], b["predicted_iou"],
                                                                         b["stability_score"])
    with pytest.raises(InvalidRequest, match="crops"):
        engine.generate(embedding, AmgOptions(points_per_side=4, crop_n_layers=1))

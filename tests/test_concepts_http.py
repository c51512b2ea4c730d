"""Concept prompts end to end over real HTTP (samgis issue 12, "Prompts and answers"): uvicorn, a tile server
serving `concept_scene()` (three reds, two greens, a blue and a yellow, all distinct exact colours) and the colour
engine with the text/exemplars capabilities, where "red" finds every region of the red colour family.

Every instance found must come back once, georeferenced exactly like a click (IoU ≥ 0.97 with its known lng/lat
polygon); the plain-image routes (ours, KServe, Vertex, Azure) must answer one mask per instance."""

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
from api.routers.predict import vertex_routes
from samgis.engine.protocol import Capabilities
from samgis.geo.tiles import candidate_windows
from samgis.imaging.masks import png_decode, rle_decode
from samgis.services.concepts import MAX_TEXT_CHARS
from samgis.vector.polygons import geodesic_area_m2
from tests.live_server import LiveServer
from tests.support.colour_engine import ColourRegionEngine, colour_family
from tests.support.geometry import iou
from tests.support.scene import (BACKGROUND, CONCEPT_COLOURS, concept_bbox, concept_scene, render_mosaic)
from tests.support.tileserver import SceneTileServer

SCENE = concept_scene()
CONCEPTS = Capabilities(text=True, exemplars=True)
Z = 16
VERTEX_ROUTE = "/v1/endpoints/concepts:predict"


def family_of(name: str) -> str:
    return colour_family(CONCEPT_COLOURS[name])[0]


def score_of(name: str) -> float:
    return 1.0 - colour_family(CONCEPT_COLOURS[name])[1] / 442.0


REDS = [s.name for s in SCENE.shapes if family_of(s.name) == "red"]
GREENS = [s.name for s in SCENE.shapes if family_of(s.name) == "green"]


@pytest.fixture(scope="module")
def scene_tiles():
    with SceneTileServer(SCENE) as server:
        yield server


@pytest.fixture(scope="module")
def engine():
    return ColourRegionEngine(capabilities=CONCEPTS)


@pytest.fixture(scope="module")
def live(scene_tiles, engine, tmp_path_factory):
    # small automatic-mask grid caps (below the default grid of 16): they must not refuse text, which decodes no
    # grid, nor click instances on the plain-image routes
    settings = scene_tiles.settings(tmp_path_factory.mktemp("concepts"), max_grid_points=16, max_points_per_side=8)
    app = create_app(settings, engine=engine)
    vertex_routes(app, {"AIP_PREDICT_ROUTE": VERTEX_ROUTE})
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def plain_client(scene_tiles, tmp_path_factory):
    """A server whose model has no concept capabilities (a SAM 1/2-class model)."""
    app = create_app(scene_tiles.settings(tmp_path_factory.mktemp("plain")), engine=ColourRegionEngine())
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def bbox_of(west, south, east, north) -> dict:
    return {"ne": {"lat": north, "lng": east}, "sw": {"lat": south, "lng": west}}


def find_request(*prompts, **extra) -> dict:
    return {"bbox": bbox_of(*concept_bbox(SCENE)), "zoom": Z, "source": "Scene", "prompts": list(prompts),
            "simplify_px": 0, **extra}


def text(phrase) -> dict:
    return {"type": "text", "text": phrase}


def exemplar(name: str, label: int = 1, pad: float = 1e-4) -> dict:
    w, s, e, n = SCENE.shape(name).polygon.bounds
    return {"type": "exemplar", **bbox_of(w - pad, s - pad, e + pad, n + pad), "label": label}


def matched(fc: dict) -> list[str]:
    """The scene shape each feature is (the one it overlaps most), asserting IoU ≥ 0.97 with it."""
    names = []
    for f in fc["features"]:
        got = shape(f["geometry"])
        best = max(SCENE.shapes, key=lambda s: got.intersection(s.polygon).area)
        assert iou(got, best.polygon) >= 0.97, (best.name, iou(got, best.polygon))
        names.append(best.name)
    return names


# --- /v1/segment ------------------------------------------------------------------------------------------

def test_text_finds_every_instance_once_georeferenced(client):
    r = client.post("/v1/segment", json=find_request(text("red")))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert sorted(matched(fc)) == sorted(REDS) and len(REDS) == 3
    props = [f["properties"] for f in fc["features"]]
    assert [p["instance"] for p in props] == [0, 1, 2] == [p["mask_index"] for p in props]
    assert [p["score"] for p in props] == sorted((p["score"] for p in props), reverse=True)
    for f in fc["features"]:
        p, name = f["properties"], matched({"features": [f]})[0]
        assert p["concept"] == "red" and p["score"] == pytest.approx(score_of(name), abs=1e-4)
        assert {"area_m2", "zoom", "model", "source", "attribution", "at_window_edge"} <= set(p)
        assert p["zoom"] == Z and p["source"] == "Scene" and p["at_window_edge"] is False
        assert p["area_m2"] == pytest.approx(geodesic_area_m2(SCENE.shape(name).polygon), rel=0.05)
    meta = fc["samgis"]
    assert meta["window"]["z"] == Z and meta["concept"] == "red" and meta["text"] == "red"
    assert meta["score_threshold"] == 0.5 and meta["n_instances"] == 3 == meta["n_found"]
    assert meta["exemplars"] == {"positive": 0, "negative": 0}
    assert {"find", "vectorize", "total"} <= set(meta["timings_ms"])


def test_other_family_and_unknown_phrase(client):
    fc = client.post("/v1/segment", json=find_request(text("  Green "))).json()
    assert sorted(matched(fc)) == sorted(GREENS) and fc["samgis"]["concept"] == "Green"
    fc = client.post("/v1/segment", json=find_request(text("greenhouse"))).json()
    assert fc["features"] == [] and fc["samgis"]["n_instances"] == 0


@pytest.mark.parametrize("threshold", [0.0, 0.95, 0.96, 0.99])
def test_score_threshold_filters(client, threshold):
    fc = client.post("/v1/segment", json=find_request(text("red"), score_threshold=threshold)).json()
    want = sorted(n for n in REDS if score_of(n) >= threshold)
    assert sorted(matched(fc)) == want and fc["samgis"]["score_threshold"] == threshold
    assert all(f["properties"]["score"] >= threshold - 1e-4 for f in fc["features"])


def test_positive_exemplar_finds_its_family(client):
    fc = client.post("/v1/segment", json=find_request(exemplar("green-park"))).json()
    assert sorted(matched(fc)) == sorted(GREENS)
    assert fc["samgis"]["concept"] == "exemplar" and fc["samgis"]["text"] is None
    assert fc["samgis"]["exemplars"] == {"positive": 1, "negative": 0}
    assert {f["properties"]["concept"] for f in fc["features"]} == {"exemplar"}


def test_text_with_exemplars(client):
    fc = client.post("/v1/segment", json=find_request(text("red"), exemplar("green-park"))).json()
    assert sorted(matched(fc)) == sorted(REDS + GREENS) and fc["samgis"]["concept"] == "red"
    fc = client.post("/v1/segment", json=find_request(text("red"), exemplar("red-shed", label=0))).json()
    assert fc["features"] == [] and fc["samgis"]["exemplars"] == {"positive": 0, "negative": 1}


def test_only_instances_touching_the_bbox(client):
    """The bbox is the area searched: a red outside it is not returned, one inside is returned whole."""
    w, s, e, n = SCENE.shape("red-roof").polygon.bounds
    req = find_request(text("red"))
    req["bbox"] = bbox_of(w - 1e-3, s - 1e-3, (w + e) / 2, n + 1e-3)  # the west half of red-roof
    fc = client.post("/v1/segment", json=req).json()
    assert matched(fc) == ["red-roof"] and fc["samgis"]["n_found"] >= 1


def test_concept_shares_the_click_embedding(client, engine, scene_tiles):
    """A concept on a window that was clicked reuses its embedding: no tile fetched, no encoder pass."""
    west, south, east, north = concept_bbox(SCENE)
    p = SCENE.shape("green-park").polygon.representative_point()
    click = {"bbox": bbox_of(west, south, east, north), "zoom": Z, "source": "Scene",
             "prompts": [{"type": "point", "lat": p.y, "lng": p.x}]}
    r = client.post("/v1/segment", json=click)
    assert r.status_code == 200, r.text
    clicked = r.json()["samgis"]["window"]
    cands = candidate_windows(np.array([[west, north], [east, south]]), Z)
    assert (Z, clicked["x"], clicked["y"], clicked["size"]) in [c.key() for c in cands]  # the test's premise
    scene_tiles.reset_counts()
    before = engine.embed_calls
    fc = client.post("/v1/segment", json=find_request(text("red"))).json()
    assert fc["samgis"]["cache"] == "hit" and fc["samgis"]["window"] == clicked
    assert engine.embed_calls == before and scene_tiles.requests == 0
    assert "embed" not in fc["samgis"]["timings_ms"] and len(fc["features"]) == 3


# --- /v1/segment/everything with text ----------------------------------------------------------------------

def everything(**extra) -> dict:
    lng, lat = SCENE.shape("green-park").polygon.representative_point().coords[0]
    return {"lat": lat, "lng": lng, "zoom": Z, "source": "Scene", "simplify_px": 0, **extra}


def test_everything_with_text(client):
    r = client.post("/v1/segment/everything", json=everything(text="red", score_threshold=0.93))
    assert r.status_code == 200, r.text
    fc = r.json()
    assert sorted(matched(fc)) == sorted(n for n in REDS if score_of(n) >= 0.93)
    meta = fc["samgis"]
    assert meta["concept"] == "red" and meta["score_threshold"] == 0.93
    assert meta["n_instances"] == meta["n_masks"] == len(fc["features"]) == 2 and meta["n_generated"] == 2
    assert meta["generator"]["score_threshold"] == 0.93
    assert [f["properties"]["instance"] for f in fc["features"]] == [0, 1]


@pytest.mark.parametrize("body,field", [
    (everything(text="red", points_per_side=8), "points_per_side"),
    (everything(text="red", pred_iou_thresh=0.5), "pred_iou_thresh"),
    (everything(score_threshold=0.5), "score_threshold"),
    (everything(text=" \t "), "text"),
])
def test_everything_text_refusals(client, body, field):
    r = client.post("/v1/segment/everything", json=body)
    assert r.status_code == 422, r.text
    assert field in (r.json().get("field") or str(r.json()["detail"]))


# --- refusals ---------------------------------------------------------------------------------------------

def test_model_without_the_capability_is_a_422_naming_it(plain_client):
    r = plain_client.post("/v1/segment", json=find_request(text("red")))
    assert r.status_code == 422 and r.json()["error"] == "MissingCapability", r.text
    assert r.json()["field"] == "prompts[0].text" and "does not support text" in r.json()["detail"]
    r = plain_client.post("/v1/segment", json=find_request(exemplar("red-roof")))
    assert r.status_code == 422 and "does not support exemplars" in r.json()["detail"]
    r = plain_client.post("/v1/segment/everything", json=everything(text="red"))
    assert r.status_code == 422 and r.json()["field"] == "text" and "text" in r.json()["detail"]
    r = plain_client.post("/v1/predict", json={"instances": [{"image": png_b64(), "text": "red"}]})
    assert r.status_code == 422 and r.json()["field"] == "instances[0].text", r.text
    r = plain_client.post("/score", json=azure_body([[png_b64(), "red"]]))
    assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].text", r.text


def point_prompt(name: str) -> dict:
    p = SCENE.shape(name).polygon.representative_point()
    return {"type": "point", "lat": p.y, "lng": p.x}


@pytest.mark.parametrize("req,field,words", [
    (find_request(text("red"), point_prompt("red-roof")), "prompts", "cannot be mixed"),
    (find_request(exemplar("red-roof"), {k: v for k, v in exemplar("green-park").items() if k != "label"}
                  | {"type": "box"}), "prompts", "cannot be mixed"),
    (find_request(text("red"), text("green")), "prompts[1]", "one text prompt"),
    (find_request(text("red"), multimask=True), "multimask", "one mask per instance"),
    (find_request(point_prompt("red-roof"), score_threshold=0.5), "score_threshold", "concept prompts"),
    (find_request(text("red\nroof")), "prompts[0].text", "control characters"),
    ({**find_request(text("red")), "bbox": bbox_of(-3.9, 40.2, -3.5, 40.6), "zoom": 16}, "bbox", "area to search"),
])
def test_refusals_name_the_field(client, req, field, words):
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["detail"], r.json()


def test_exemplar_outside_the_bbox_is_refused(client):
    req = find_request(exemplar("red-roof"))
    req["bbox"] = bbox_of(*SCENE.shape("green-park").polygon.buffer(1e-3).bounds)
    r = client.post("/v1/segment", json=req)
    assert r.status_code == 422 and r.json()["field"] == "prompts[0]" and "inside the bbox" in r.json()["detail"]


HOSTILE_TEXT = [
    ("huge", "x" * 100_000), ("over the limit", "y" * (MAX_TEXT_CHARS + 1)), ("empty", ""), ("spaces", "   "),
    ("number", 42), ("list", ["red"]), ("null", None), ("object", {"text": "red"}), ("bool", True),
]


@pytest.mark.parametrize("name,value", HOSTILE_TEXT, ids=[n for n, _ in HOSTILE_TEXT])
def test_hostile_text_is_a_422_naming_the_field(client, name, value):
    r = client.post("/v1/segment", json=find_request({"type": "text", "text": value}))
    assert r.status_code in (413, 422), r.text  # 100 kB of text may exceed the body limit first
    if r.status_code == 422:
        (err, *_) = r.json()["detail"]
        assert err["loc"][:3] == ["body", "prompts", 0] and err["loc"][-1] == "text", err
        assert len(r.text) < 5000  # a huge phrase is not echoed back whole
    for route, body in (("/v1/segment/everything", everything(text=value)),
                        ("/v1/predict", {"instances": [{"image": png_b64(), "text": value}]})):
        if value is None:  # null is "no text" there: automatic masks, a valid request (tested elsewhere)
            continue
        r = client.post(route, json=body)
        assert r.status_code in (413, 422), r.text
        if r.status_code == 422:
            err = r.json()["detail"][0]
            assert err["loc"][-1] == "text" or err["loc"][-2:] == ["text", "str"] or "text" in err["loc"], err


def test_openapi_documents_concept_prompts(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["TextIn"]["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert set(schemas["ExemplarIn"]["properties"]) == {"type", "ne", "sw", "label"}
    assert schemas["SegmentRequest"]["properties"]["score_threshold"]["anyOf"][0]["maximum"] == 1
    assert "text" in schemas["EverythingRequest"]["properties"] and "text" in schemas["PredictInstance"]["properties"]
    assert "ConceptMeta" in schemas


# --- plain images: /v1/predict, KServe, Vertex, Azure ------------------------------------------------------

def scene_image() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A (512, 512, 3) uint8 mosaic of the scene at z 16 and each shape's pixel mask in it."""
    import mercantile
    w, s, e, n = concept_bbox(SCENE)
    t = mercantile.tile(w, n, Z)
    img = render_mosaic(SCENE, Z, t.x, t.y, tiles=2)
    truth = {sh.name: np.all(img == sh.rgb, axis=-1) for sh in SCENE.shapes}
    assert all(m.sum() > 500 for m in truth.values()), "the mosaic must hold every shape"
    return img, truth


def png_b64(img: np.ndarray | None = None) -> str:
    if img is None:
        img = np.full((32, 32, 3), BACKGROUND, np.uint8)
        img[8:24, 8:24] = (200, 30, 30)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decoded(mask, fmt: str) -> np.ndarray:
    return rle_decode(mask) if fmt == "rle" else png_decode(mask)


@pytest.mark.parametrize("route", ["/v1/predict", "/v1/models/samgis:predict", VERTEX_ROUTE])
@pytest.mark.parametrize("fmt", ["rle", "png"])
def test_predict_routes_with_text(client, route, fmt):
    img, truth = scene_image()
    body = {"instances": [{"image": png_b64(img), "text": "red"},
                          {"image": png_b64(img), "exemplar_boxes": [[0, 0, 2, 2]], "exemplar_labels": [1]},
                          {"image": png_b64(img), "points": [[5, 5]]}],
            "parameters": {"mask_format": fmt, "score_threshold": 0.93}}
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    red, bg, click = r.json()["predictions"]
    assert red["mode"] == "concept" and red["concept"] == "red" and red["score_threshold"] == 0.93
    want = sorted(n for n in REDS if score_of(n) >= 0.93)
    assert len(red["masks"]) == len(red["scores"]) == len(red["boxes"]) == len(want) == 2
    assert red["scores"] == sorted(red["scores"], reverse=True)
    got = [decoded(m, fmt) for m in red["masks"]]
    for name, mask, score in zip(sorted(want, key=score_of, reverse=True), got, red["scores"]):
        assert np.array_equal(mask, truth[name]) and score == pytest.approx(score_of(name), abs=1e-5)
    assert bg["mode"] == "concept" and bg["concept"] == "exemplar"  # the background's own family (beige)
    assert click["mode"] == "prompts"  # other instances keep their meaning
    assert bg["cache"] == click["cache"] == "hit"  # one embedding of the image serves concepts and clicks


@pytest.mark.parametrize("instance,field", [
    ({"text": "red", "points": [[1, 1]]}, "instances[0].text"),
    ({"exemplar_boxes": [[1, 1, 5, 5]], "boxes": [[1, 1, 5, 5]]}, "instances[0].exemplar_boxes"),
    ({"text": "red", "multimask": True}, "instances[0].multimask"),
    ({"exemplar_boxes": [[1, 1, 500, 5]]}, "instances[0].exemplar_boxes[0]"),
    ({"exemplar_boxes": [[1, 1, 5, 5]], "exemplar_labels": [1, 0]}, "instances[0].exemplar_labels"),
    ({"text": "red\tcar"}, "instances[0].text"),
])
def test_predict_concept_refusals(client, instance, field):
    r = client.post("/v1/predict", json={"instances": [{"image": png_b64(), **instance}]})
    assert r.status_code == 422 and r.json()["field"] == field, r.text


def azure_body(rows: list[list], params: dict | None = None) -> dict:
    return {"input_data": {"columns": ["image", "text"], "index": list(range(len(rows))), "data": rows},
            "params": params or {}}


def test_azure_text_column(client):
    img, truth = scene_image()
    body = {"input_data": {"columns": ["image", "text", "input_boxes"], "index": [0, 1],
                           "data": [[png_b64(img), "green", ""], [png_b64(), "", "[[8, 8, 23, 23]]"]]},
            "params": {"score_threshold": 0.5}}
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    green, boxed = r.json()
    (prediction,) = green["predictions"]
    masks = prediction["mask_per_prediction"]
    assert [m["iou_score"] for m in masks] == sorted((m["iou_score"] for m in masks), reverse=True)
    for m, name in zip(masks, sorted(GREENS, key=score_of, reverse=True)):
        assert np.array_equal(png_decode(m["encoded_binary_mask"]), truth[name])
        assert m["iou_score"] == pytest.approx(score_of(name), abs=1e-5)
    assert len(masks) == 2
    (box_prediction,) = boxed["predictions"]  # "" is no phrase: the row's box prompt decodes as usual
    assert png_decode(box_prediction["mask_per_prediction"][0]["encoded_binary_mask"]).sum() == 16 * 16
    r = client.post("/score", json={"input_data": {"columns": ["image", "text", "input_boxes"],
                                                   "data": [[png_b64(img), "red", "[[1, 1, 9, 9]]"]]}})
    assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].text", r.text
    r = client.post("/score", json=azure_body([[png_b64(img), "red"]], {"score_threshold": 2}))
    assert r.status_code == 422 and r.json()["field"] == "params.score_threshold", r.text
    for bad in (42, ["red"], "x" * (MAX_TEXT_CHARS + 1), "   ", "a\x00b"):
        r = client.post("/score", json=azure_body([[png_b64(), bad]]))
        assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].text", (bad, r.text)


# --- raster sources: a concept on the raster's own grid, masks clipped to valid pixels -------------------------

from tests.test_raster_sources import rasters  # noqa: E402,F401  (the module's GeoTIFFs, as a fixture here too)


@pytest.fixture(scope="module")
def raster_client(rasters):  # noqa: F811
    from samgis.settings import Settings

    settings = Settings(providers=rasters["providers"], builtin_sources=False, cache_dir=rasters["tmp"] / "cc")
    with LiveServer(create_app(settings, engine=ColourRegionEngine(capabilities=CONCEPTS))) as server, \
            httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_concept_on_a_utm_raster(raster_client, rasters):  # noqa: F811
    utm = rasters["Ortho"]
    field = utm.shape("field").lnglat()
    req = {"bbox": bbox_of(*field.buffer(3e-4).bounds), "zoom": 18, "source": "Ortho",
           "prompts": [text("red")], "simplify_px": 0}
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 200, r.text
    fc = r.json()
    (f,) = fc["features"]
    assert fc["samgis"]["window"]["crs"] == utm.crs and f["properties"]["concept"] == "red"
    assert iou(shape(f["geometry"]), field) >= 0.97
    assert fc["samgis"]["bbox_clipped"] is False
    east = utm.px_to_lnglat(2200, 600)  # a bbox wholly east of the raster: nothing to search
    req["bbox"] = bbox_of(east[0], east[1] - 1e-3, east[0] + 1e-3, east[1])
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 422 and r.json()["field"] == "bbox" and "does not overlap" in r.json()["detail"], r.text


def view_lnglat(raster, col0, row0, col1, row1) -> dict:
    """The lng/lat bbox (a map view) of native px rectangle [col0, col1] × [row0, row1]."""
    (w, n), (e, s) = raster.px_to_lnglat(col0, row0), raster.px_to_lnglat(col1, row1)
    return bbox_of(w, s, e, n)


def test_a_view_past_the_raster_edge_searches_the_part_on_it(raster_client, rasters):  # noqa: F811
    """The web Find tool sends the map view: past a raster's edge the search is clipped to the raster's extent
    (samgis issue 12), not refused."""
    utm = rasters["Ortho"]
    field, pond = utm.shape("field").lnglat(), utm.shape("pond").lnglat()
    # the raster's north-west corner area, native px [0, 1000]² (it holds the field, not the pond), in a view
    # twice as wide: three quarters of the view are off the raster
    view = view_lnglat(utm, -1000, -1000, 1000, 1000)
    req = {"bbox": view, "zoom": 18, "source": "Ortho", "prompts": [text("red")], "simplify_px": 0}
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 200, r.text
    fc = r.json()
    (f,) = fc["features"]
    assert iou(shape(f["geometry"]), field) >= 0.97 and f["properties"]["concept"] == "red"
    meta = fc["samgis"]
    assert meta["bbox_clipped"] is True and meta["window"]["level"] == 1
    assert (meta["window"]["col"], meta["window"]["row"]) == (0, 0)
    expected = utm.data_area_lnglat(0, 0, utm.width, utm.height).intersection(
        shapely.box(view["sw"]["lng"], view["sw"]["lat"], view["ne"]["lng"], view["ne"]["lat"]))
    assert iou(shapely.box(*meta["area_searched"]), shapely.box(*expected.bounds)) >= 0.99
    # the whole raster in a view four times as wide: the search steps out to the overview that holds it
    req["bbox"] = view_lnglat(utm, -2048, -2048, 4096, 4096)
    req["prompts"] = [text("blue")]
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 200, r.text
    fc = r.json()
    (f,) = fc["features"]
    assert iou(shape(f["geometry"]), pond) >= 0.95 and fc["samgis"]["window"]["level"] == 2
    # an exemplar box in the view but off the raster has nothing to show
    west, north = utm.px_to_lnglat(-900, -900)
    east, south = utm.px_to_lnglat(-800, -800)
    req["prompts"] = [text("blue"), {"type": "exemplar", **bbox_of(west, south, east, north)}]
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 422 and r.json()["field"] == "prompts[1]" and "off source" in r.json()["detail"], r.text



def test_concept_masks_leave_out_nodata(raster_client, rasters):  # noqa: F811
    scene = rasters["Scene"]
    dark = scene.shape("dark")  # black after the stretch, like nodata, and it runs into the left margin
    valid = scene.data_area_lnglat(1400, 100, 2460, 924)
    w, s, e, n = dark.lnglat().bounds
    req = {"bbox": bbox_of(w + 1e-5, s - 1e-4, e + 1e-4, n + 1e-4), "zoom": 18, "source": "Scene",
           "prompts": [text("black")], "simplify_px": 0}
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 200, r.text
    geoms = [shape(f["geometry"]) for f in r.json()["features"]]
    assert max(iou(g, dark.lnglat().intersection(valid)) for g in geoms) >= 0.97
    assert all(g.difference(valid).area < 1e-3 * g.area for g in geoms)
    req["bbox"] = bbox_of(*scene.px_to_lnglat(100, 600), *scene.px_to_lnglat(400, 400))  # nodata only
    r = raster_client.post("/v1/segment", json=req)
    assert r.status_code == 422 and r.json()["field"] == "bbox", r.text


def test_predict_concept_on_a_geotiff_gives_lnglat_and_crs_polygons(client, tmp_path):
    """A georeferenced image: each instance also as EPSG:4326 and raster-CRS polygons, as the prompts mode."""
    import shapely

    from tests.support.raster import write_raster

    o, res = (500000.0, 5000000.0), 2.0  # EPSG:32632, 2 m px

    def px_box(c0, r0, c1, r1):
        return shapely.box(o[0] + c0 * res, o[1] - r1 * res, o[0] + c1 * res, o[1] - r0 * res)

    tif = write_raster(tmp_path / "two.tif", crs="EPSG:32632", origin=o, res=res, width=120, height=80,
                       background=(60, 60, 60), shapes=[("a", px_box(10, 10, 50, 40), (200, 30, 30)),
                                                        ("b", px_box(70, 30, 110, 70), (225, 45, 35))])
    body = {"instances": [{"image": base64.b64encode(tif.path.read_bytes()).decode(), "text": "red",
                           "mask_format": "polygon"}]}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert pred["mode"] == "concept" and pred["crs"] == "EPSG:32632" and len(pred["masks"]) == 2
    for name, lnglat, native in zip(("b", "a"), pred["masks_lnglat"], pred["masks_crs"]):  # best score first
        assert iou(shape(native), tif.shape(name).polygon) >= 0.97
        assert iou(shape(lnglat), tif.shape(name).lnglat()) >= 0.97


# --- odd numbers in every numeric field of concept bodies (as tests/test_hostile_property.py) ------------------

def concept_bodies() -> dict[str, dict]:
    return {
        "/v1/segment": find_request(text("red"), exemplar("green-park"), exemplar("red-shed", label=0),
                                    score_threshold=0.5, min_area_px=0.5, simplify_px=1.0),
        "/v1/segment/everything": everything(text="red", score_threshold=0.5, min_area_m2=1.5),
        "/v1/predict": {"instances": [{"image": png_b64(), "text": "red", "score_threshold": 0.5},
                                      {"image": png_b64(), "exemplar_boxes": [[8, 8, 23, 23]],
                                       "exemplar_labels": [1]}],
                        "parameters": {"score_threshold": 0.4}},
    }


@pytest.mark.parametrize("route", sorted(concept_bodies()))
def test_concept_base_bodies_are_valid(client, route):
    r = client.post(route, json=concept_bodies()[route])
    assert r.status_code == 200, r.text


@pytest.mark.slow
@pytest.mark.parametrize("route", sorted(concept_bodies()))
def test_no_5xx_for_odd_numbers_in_concept_bodies(client, route):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.test_hostile_property import TOKENS, is_non_finite, numeric_paths, with_token

    body = concept_bodies()[route]

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(path=st.sampled_from(numeric_paths(body)), token=TOKENS)
    def check(path, token):
        r = client.post(route, content=with_token(body, path, token).encode(),
                        headers={"content-type": "application/json"})
        assert r.status_code < 500, (path, token[:40], r.text[:500])
        answer = r.json()
        if is_non_finite(token):
            assert r.status_code == 422, (path, token, answer)

    check()

"""Plain-image prediction over real HTTP (uvicorn on 127.0.0.1): our API, KServe v1 and Azure ML's envelope,
checked against Meta's SamPredictor / SamAutomaticMaskGenerator on the same random-weight checkpoint."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from starlette.routing import Mount

from api.app import create_app
from api.routers import predict as predict_router
from samgis.imaging.masks import png_decode, rle_decode
from samgis.settings import Settings
from tests.conftest import textured_image
from tests.live_server import LiveServer
from tests.test_predict import AMG_PARAMS, encoded, iou

IMAGE = textured_image(120, 160, seed=11)


def with_predict_routes(app: FastAPI) -> FastAPI:
    """`app` serving the predict router, ahead of the web map's mount (a no-op once create_app includes it)."""
    if not any(getattr(r, "path", None) == "/v1/predict" for r in app.routes):
        app.include_router(predict_router.router)
        routes = app.router.routes
        mounts = [r for r in routes if isinstance(r, Mount)]
        routes[:] = [r for r in routes if not isinstance(r, Mount)] + mounts
    return app


@pytest.fixture(scope="module")
def live(tiny_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict_http")
    settings = Settings(cache_dir=tmp / "cache", builtin_sources=False, max_body_bytes=2_000_000, max_prompts=8,
                        max_image_pixels=200_000)
    with LiveServer(with_predict_routes(create_app(settings, engine=tiny_engine))) as server:
        yield server


@pytest.fixture
def client(live):
    with httpx.Client(base_url=live.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_engine):
    predictor = SamPredictor(tiny_engine.model)
    predictor.set_image(IMAGE)
    return predictor


def test_prompts_match_sam_predictor_over_http(client, reference):
    body = {"instances": [
        {"image": encoded(IMAGE), "points": [[40, 30], [100.5, 70.25]], "labels": [1, 0]},
        {"image": encoded(IMAGE), "points": [[60, 50]], "boxes": [[10, 10, 90, 80], [70, 20, 150, 110]],
         "multimask": True, "mask_format": "png"},
    ], "parameters": {"mask_format": "rle"}}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    masks, scores, _ = reference.predict(np.array([[40, 30], [100.5, 70.25]]), np.array([1, 0]),
                                         multimask_output=False)
    assert first["mode"] == "prompts" and np.array(first["scores"]).shape == (1, 1)
    assert iou(rle_decode(first["masks"][0][0]), masks[0]) >= 0.999
    np.testing.assert_allclose(first["scores"][0], scores, atol=1e-4)
    assert first["image_size"] == [120, 160] and "logits" not in first
    assert first["cache"] == "miss" and second["cache"] == "hit"  # same image: embedded once
    assert np.array(second["scores"]).shape == (2, 3)  # (queries = boxes, masks per query)
    for q, box in enumerate([[10, 10, 90, 80], [70, 20, 150, 110]]):
        masks, scores, _ = reference.predict(np.array([[60, 50]]), np.array([1]), np.array(box),
                                             multimask_output=True)
        for m in range(3):
            assert iou(png_decode(second["masks"][q][m]), masks[m]) >= 0.999
        np.testing.assert_allclose(second["scores"][q], scores, atol=1e-4)
    assert {"image", "embed", "decode", "encode", "total"} <= set(second["timings_ms"])


def test_kserve_route_gives_the_same_answer_and_polygons(client):
    body = {"instances": [{"image": encoded(IMAGE), "boxes": [[20, 20, 100, 90]], "mask_format": "polygon",
                           "return_logits": True}]}
    ours = client.post("/v1/predict", json=body).json()["predictions"][0]
    kserve = client.post("/v1/models/samgis:predict", json=body)
    assert kserve.status_code == 200
    theirs = kserve.json()["predictions"][0]
    assert theirs["masks"] == ours["masks"] and theirs["scores"] == ours["scores"]
    geom = ours["masks"][0][0]
    assert geom is None or geom["type"] in ("Polygon", "MultiPolygon")
    assert ours["logits"]["shape"] == [1, 1, 256, 256] and ours["logits"]["dtype"] == "float32"
    ready = client.get("/v1/models/samgis")
    assert ready.status_code == 200 and ready.json() == {"name": "samgis", "ready": True}


def test_no_prompts_match_sam_automatic_mask_generator_over_http(client, tiny_engine):
    ref = SamAutomaticMaskGenerator(tiny_engine.model, output_mode="coco_rle", **AMG_PARAMS).generate(IMAGE)
    r = client.post("/v1/predict", json={"instances": [{"image": encoded(IMAGE)}], "parameters": AMG_PARAMS})
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert pred["mode"] == "automatic" and pred["grid_points"] == 16
    assert len(ref) >= 5 and len(pred["masks"]) == len(ref)
    for o, rr in zip(pred["masks"], ref):
        assert iou(rle_decode(o["segmentation"]), rle_decode(rr["segmentation"])) >= 0.999
        assert o["bbox"] == rr["bbox"]
        assert o["predicted_iou"] == pytest.approx(rr["predicted_iou"], abs=1e-4)
        assert o["stability_score"] == pytest.approx(rr["stability_score"], abs=1e-3)
    assert pred["timings_ms"]["generate"] > 0


def test_azure_ml_envelope(client, reference):
    image = base64.encodebytes(base64.b64decode(encoded(IMAGE))).decode()  # as Azure's samples send it
    body = {"input_data": {
        "columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"],
        "index": [0, 1, 2],
        "data": [
            [image, "[[[40, 30]], [[100, 70]]]", "", "", False],  # one prediction per point batch
            [image, "[[[60, 50], [20, 20]]]", "[[10, 10, 90, 80]]", "[[1, 0]]", True],  # points + box together
            [image, "", "[[10, 10, 90, 80], [70, 20, 150, 110]]", "", False],  # one prediction per box
        ]}, "params": {}}
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    rows = r.json()
    # the model card's sample output: a list, one {"predictions": [...]} per row, "mask_per_prediction" items
    assert isinstance(rows, list) and len(rows) == 3 and all(set(row) == {"predictions"} for row in rows)
    assert all(set(p) == {"mask_per_prediction"} for row in rows for p in row["predictions"])
    assert all(set(m) == {"encoded_binary_mask", "iou_score"}
               for row in rows for p in row["predictions"] for m in p["mask_per_prediction"])

    def masks_of(row):
        return [[(png_decode(m["encoded_binary_mask"]), m["iou_score"]) for m in p["mask_per_prediction"]]
                for p in row["predictions"]]

    first = masks_of(rows[0])
    assert [len(p) for p in first] == [1, 1]
    for p, pt in zip(first, [[40, 30], [100, 70]]):
        masks, scores, _ = reference.predict(np.array([pt]), np.array([1]), multimask_output=False)
        assert iou(p[0][0], masks[0]) >= 0.999 and p[0][1] == pytest.approx(float(scores[0]), abs=1e-4)
    (second,) = masks_of(rows[1])
    masks, scores, _ = reference.predict(np.array([[60, 50], [20, 20]]), np.array([1, 0]),
                                         np.array([10, 10, 90, 80]), multimask_output=True)
    assert len(second) == 3
    for (mask, score), ref_mask, ref_score in zip(second, masks, scores):
        assert iou(mask, ref_mask) >= 0.999 and score == pytest.approx(float(ref_score), abs=1e-4)
    assert [len(p) for p in masks_of(rows[2])] == [1, 1]
    with Image.open(io.BytesIO(base64.b64decode(
            rows[0]["predictions"][0]["mask_per_prediction"][0]["encoded_binary_mask"]))) as im:
        assert im.format == "PNG" and im.size == (160, 120)


def test_azure_card_sample_input(client, reference):
    """The Azure AI model catalog's SAM card sample (facebook-sam-vit-base, "Sample input and output"): one row,
    a box only, multimask_output false, empty params → one prediction holding one mask."""
    body = {"input_data": {"columns": ["image", "input_points", "input_boxes", "input_labels", "multimask_output"],
                           "index": [0], "data": [[encoded(IMAGE), "", "[[65, 90, 100, 115]]", "", False]]},
            "params": {}}
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    (row,) = r.json()
    (pred,) = row["predictions"]
    (m,) = pred["mask_per_prediction"]
    masks, scores, _ = reference.predict(box=np.array([65, 90, 100, 115]), multimask_output=False)
    assert iou(png_decode(m["encoded_binary_mask"]), masks[0]) >= 0.999
    assert m["iou_score"] == pytest.approx(float(scores[0]), abs=1e-4)


def test_azure_errors_name_the_row(client):
    row = [encoded(IMAGE), "[[[40, 30]], [[50, 30]]]", "[[10, 10, 90, 80]]", "", False]
    r = client.post("/score", json={"input_data": {"columns": ["image", "input_points", "input_boxes",
                                                               "input_labels", "multimask_output"],
                                                   "data": [row]}})
    assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].input_boxes"
    r = client.post("/score", json={"input_data": {"columns": ["image", "input_points"],
                                                   "data": [[encoded(IMAGE), "__import__('os')"]]}})
    assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].input_points"
    r = client.post("/score", json={"input_data": {"columns": ["image", "input_points"],
                                                   "data": [[encoded(IMAGE), "[40, 30]"]]}})
    assert r.status_code == 422 and r.json()["field"] == "input_data.data[0].input_points"
    r = client.post("/score", json={"input_data": {"columns": ["image", "input_points", "input_labels"],
                                                   "data": [[encoded(IMAGE), "[[[40, 30], [0, 0]]]", "[[1, -10]]"]]}})
    assert r.status_code == 200  # the padding point is dropped


def test_bad_inputs_are_4xx_naming_the_field(client):
    good = encoded(IMAGE)
    r = client.post("/v1/predict", json={"instances": [{"image": good, "points": [[1, 1]]},
                                                       {"image": "bm90IGFuIGltYWdl", "points": [[1, 1]]}]})
    assert r.status_code == 422 and r.json()["field"] == "instances[1].image"
    assert "PNG or JPEG" in r.json()["detail"]

    big = encoded(np.zeros((500, 500, 3), np.uint8))  # 250 000 px, limit 200 000
    r = client.post("/v1/predict", json={"instances": [{"image": big, "points": [[1, 1]]}]})
    assert r.status_code == 413 and r.json()["field"] == "instances[0].image"
    assert "200000" in r.json()["detail"]

    r = client.post("/v1/predict", json={"instances": [{"image": good, "points": [[1, 2, 3]]}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:4] == ["body", "instances", 0, "points"]

    r = client.post("/v1/predict", json={"instances": [{"image": good, "points": [[1, 2], [3, 4]],
                                                        "labels": [1]}]})
    assert r.status_code == 422 and r.json()["field"] == "instances[0].labels"

    r = client.post("/v1/predict", json={"instances": [{"image": good, "boxes": [[0, 0, 500, 10]]}]})
    assert r.status_code == 422 and r.json()["field"] == "instances[0].boxes[0]"

    r = client.post("/v1/predict", json={"instances": [{"image": good, "points": [[1, 1]] * 9}]})
    assert r.status_code == 422 and "limit of 8 prompts" in r.json()["detail"]

    r = client.post("/v1/predict", json={"instances": [{"image": good}], "parameters": {"points_per_side": 64}})
    assert r.status_code == 422 and r.json()["field"] == "instances[0].points_per_side"

    r = client.post("/v1/predict", content=b"{" + b" " * 2_100_000 + b"}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413  # the body limit, before any parsing

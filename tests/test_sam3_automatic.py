"""Automatic masks of the SAM 3 backend: the `sam2` package's `SAM2AutomaticMaskGenerator` decoding on our engine's
instance-interactive path, against the same generator decoding on the `sam3` package's own interactive predictor
(`Sam3Image.predict_inst`), on random weights of the real architecture built by the package (no checkpoint, no
network); then through `/v1/segment/everything`, `/v1/predict` (KServe v1 / Vertex AI) and `samgis predict`.

Cost: one vision-backbone pass at 1008² (ViT-L + necks, ~45 s on an idle 2-core CPU), shared by the whole module:
the package's `Sam3Processor.set_image` reuses it (same input, checked), and every later image (crops, the map
window, the uploaded images) goes through `tests/support/sam3_backbone.BackboneReplay`: its backbone input is
recorded (and checked where the test knows it), everything after the backbone runs for real on the first image's
backbone output.
"""

from __future__ import annotations

import argparse
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from samgis.engine.backends.sam3.compat import cpu_only
from samgis.engine.backends.sam3.engine import LOW_RES_SIZE
from samgis.engine.protocol import AmgOptions, Engine
from samgis.engine.sam2_amg import ModelFrameDecoder
from tests.conftest import textured_image
from tests.support.amg_records import assert_sam1_form, assert_same_records
from tests.support.sam3_backbone import BackboneReplay

pytestmark = pytest.mark.slow  # the module's one 1008² ViT-L pass

# Random SAM 3 weights give low-contrast logits (|x| < 0.3) and masks spanning most of the image: a small stability
# offset, no thresholds and no box NMS keep every grid point's three masks, so the records are many and distinct.
AMG = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=0.05,
           box_nms_thresh=1.0)
H, W = 300, 400


@pytest.fixture(scope="module")
def case(sam3_case):
    """The session's shared SAM 3 (tests/support/sam3_case.py): model, engine, processor, and `image` embedded
    by both with one backbone pass (`backbone`: a `BackboneReplay`)."""
    assert sam3_case.setup_counts == (1, 1, 0)
    return sam3_case


def test_card_offers_automatic_masks(case):
    card = case.engine.describe()
    assert card.capabilities.automatic and card.capabilities.text and card.low_res_size == LOW_RES_SIZE
    assert isinstance(case.engine, Engine) and isinstance(case.engine, ModelFrameDecoder)


def test_point_batch_rows_equal_decode_rows(case):
    from samgis.engine.protocol import Prompts

    r = np.random.default_rng(8)
    points = (r.uniform(0, 1, (3, 2, 2)) * [W, H]).astype(np.float32)
    labels = np.array([[1, 0], [1, 1], [0, 1]], np.int32)
    low, scores = case.engine.decode_point_batch(case.embedding, points, labels, True)
    assert low.shape == (3, 3, LOW_RES_SIZE, LOW_RES_SIZE) and scores.shape == (3, 3) and low.dtype == torch.float32
    for b in range(3):
        res = case.engine.decode(case.embedding, Prompts(points[b], labels[b]), True)
        np.testing.assert_allclose(low[b].numpy(), res.logits[0], atol=1e-4)
        np.testing.assert_allclose(scores[b].numpy(), res.scores[0], atol=1e-5)


def test_generate_equals_the_package_generator_on_the_official_predictor(case, monkeypatch):
    """The reference: the same package generator with `Sam3Image.predict_inst`'s predictor (SAM 3's
    `SAM3InteractiveImagePredictor`), its features set by `predict_inst` from the official processor's state."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    ours = case.engine.generate(case.embedding, AmgOptions(**AMG))
    assert not case.backbone.replayed  # the window's embedding was reused, nothing embedded

    predictor = case.model.inst_interactive_predictor
    monkeypatch.setattr(predictor._transforms, "max_hole_area", 0.0)  # our choice: no hole filling (engine.py)
    gen = SAM2AutomaticMaskGenerator(predictor.model, output_mode="binary_mask", **AMG)
    gen.predictor = predictor
    # predict_inst sets the predictor's features from the processor's state, then calls its `predict`: the
    # generator runs there, with `set_image` / `reset_predictor` kept from dropping those features
    monkeypatch.setattr(predictor, "set_image", lambda image: None)
    monkeypatch.setattr(predictor, "reset_predictor", lambda: None)
    monkeypatch.setattr(predictor, "predict", lambda **kwargs: gen.generate(case.image))
    with cpu_only():
        ref = case.model.predict_inst(case.state)

    assert len(ref) == 48 and len(ours) == len(ref)  # 16 points × 3 masks
    assert len({r["area"] for r in ref}) > 40 and all(0 < r["area"] < H * W for r in ref)
    assert_same_records(ours, ref)
    assert all(o["crop_box"] == [0, 0, W, H] for o in ours)


def test_records_have_sam1_form(case, tiny_engine):
    from segment_anything import SamAutomaticMaskGenerator

    opts = {**AMG, "points_per_side": 2}
    sam1 = SamAutomaticMaskGenerator(tiny_engine.model, output_mode="binary_mask", **opts).generate(case.image)
    ours = case.engine.generate(case.embedding, AmgOptions(**opts, min_mask_region_area=40))
    assert_sam1_form(ours, sam1, (H, W))


def test_crops_are_embedded_from_their_pixels(case):
    from sam2.utils.amg import generate_crop_boxes

    opts = AmgOptions(**{**AMG, "points_per_side": 2}, crop_n_layers=1)
    with pytest.raises(ValueError, match="crops need the image"):
        case.engine.generate(case.embedding, opts)
    before = len(case.backbone.replayed)
    records = case.engine.generate(case.embedding, opts, image=case.image)
    boxes, layers = generate_crop_boxes((H, W), 1, opts.crop_overlap_ratio)
    crops = [b for b, layer in zip(boxes, layers) if layer == 1]
    inputs = case.backbone.replayed[before:]
    assert len(crops) == 4 and len(inputs) == 4  # the whole image's embedding reused, each crop embedded once
    for x, (x0, y0, x1, y1) in zip(inputs, crops):
        crop = torch.from_numpy(np.ascontiguousarray(case.image[y0:y1, x0:x1])).permute(2, 0, 1)
        assert torch.equal(x, case.engine.transform(crop)[None])  # what Sam3Processor.set_image feeds the backbone
    whole = [0, 0, W, H]
    xywh = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in crops]
    assert records and all(r["crop_box"] in [whole, *xywh] for r in records)
    for r in records:  # masks in the whole image's frame, inside their crop
        x0, y0, cw, ch = r["crop_box"]
        seg = r["segmentation"]
        assert seg.shape == (H, W) and r["area"] == int(seg.sum()) > 0
        inside = np.zeros_like(seg)
        inside[y0:y0 + ch, x0:x0 + cw] = True
        assert not (seg & ~inside).any()
        px, py = r["point_coords"][0]
        assert x0 <= px <= x0 + cw and y0 <= py <= y0 + ch


@pytest.fixture(scope="module")
def live(case, tiles, tmp_path_factory):
    from api.app import create_app
    from tests.live_server import LiveServer

    # 256 px map windows (one tile): random-weight masks are speckled, and their polygons at 1024² take minutes
    settings = tiles.settings(tmp_path_factory.mktemp("sam3_auto"), max_points_per_side=8, window_tiles=1,
                              everything_deadline_s=600.0)
    with LiveServer(create_app(settings, engine=case.engine)) as server:
        yield server


def test_segment_everything_over_http_returns_polygons(case, live):
    from tests.support.scene import default_scene

    p = default_scene().shapes[0].polygon.representative_point()
    # Random weights give speckled masks, whose polygons are slow to build and deduplicate (~2 s a mask on a
    # loaded 2-core CPU, at 256²): one grid point, and min_area_px drops the specks.
    body = {"lat": p.y, "lng": p.x, "zoom": 17, "source": "Scene", "simplify_px": 1, "min_area_px": 100,
            "points_per_side": 1,
            "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1}
    before = len(case.backbone.replayed)
    with httpx.Client(base_url=live.url, timeout=600) as client:
        r = client.post("/v1/segment/everything", json=body)
        assert r.status_code == 200, r.text
        fc = r.json()
        assert fc["type"] == "FeatureCollection" and fc["samgis"]["model"] == "sam3"
        assert fc["samgis"]["window"]["size"] == 256
        assert fc["samgis"]["n_generated"] == 3, fc["samgis"]  # 1 point × 3 masks, nothing filtered
        assert 1 <= fc["samgis"]["n_masks"] == len(fc["features"]) <= 3
        for f in fc["features"]:
            assert f["geometry"]["type"] in ("Polygon", "MultiPolygon") and f["properties"]["area_m2"] > 0
            assert f["properties"]["model"] == "sam3"
        assert len(case.backbone.replayed) == before + 1  # the map window, embedded once


def test_predict_automatic_over_http(case, live):
    from tests.test_predict import encoded

    image = textured_image(60, 80, seed=5)
    params = {**AMG, "points_per_side": 2}
    with httpx.Client(base_url=live.url, timeout=600) as client:
        r = client.post("/v1/predict", json={"instances": [{"image": encoded(image)}], "parameters": params})
        assert r.status_code == 200, r.text
        pred = r.json()["predictions"][0]
        assert pred["mode"] == "automatic" and pred["grid_points"] == 4 and len(pred["masks"]) == 12
        assert all(m["area"] > 0 and len(m["bbox"]) == 4 for m in pred["masks"])


def test_samgis_predict_automatic(case, tmp_path):
    from samgis.cli.predict import add_predict_parsers, run_predict

    path = tmp_path / "photo.png"
    Image.fromarray(textured_image(60, 80, seed=6)).save(path)
    parser = argparse.ArgumentParser(prog="samgis")
    add_predict_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["predict", str(path), "--out", str(tmp_path / "out"), "--points-per-side", "2",
                              "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--box-nms-thresh", "1"])
    assert run_predict(args, engine=case.engine) == 0
    doc = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert doc["mode"] == "automatic" and doc["model"] == "sam3" and len(doc["masks"]) == 12
    for entry in doc["masks"]:
        mask = np.asarray(Image.open(tmp_path / "out" / entry["file"]))
        assert mask.shape == (60, 80) and mask.any()


def test_samgis_batch_image_folder_automatic(case, tmp_path):
    from samgis.batch.job import run_batch
    from samgis.batch.work import JobConfig

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(textured_image(60, 80, seed=7)).save(folder / "tile.png")  # no prompts file: automatic
    cfg = JobConfig(amg=AmgOptions(**{**AMG, "points_per_side": 2}))
    summary = run_batch(folder, tmp_path / "out", lambda: case.engine, cfg=cfg, model_key="sam3", progress=False)
    assert (summary.total, summary.done, summary.failed) == (1, 1, 0), summary.errors
    doc = json.loads((tmp_path / "out" / "masks" / "tile.png" / "masks.json").read_text())
    assert (doc["height"], doc["width"]) == (60, 80) and len(doc["masks"]) == 12  # 4 points × 3 masks
    assert all(m["area"] > 0 for m in doc["masks"])

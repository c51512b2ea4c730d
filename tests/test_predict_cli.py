"""`samgis predict` and `samgis evaluate` (argparse sub-commands run in-process, weights loaded from a file)."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from PIL import Image
from segment_anything import SamPredictor

from samgis.engine.protocol import Capabilities
from samgis.errors import InvalidRequest
from samgis.imaging.masks import rle_decode
from samgis.cli.predict import (add_predict_parsers, evaluate_dirs, load_boxes, mask_metrics, read_mask, run_predict,
                                save_mask)
from tests.conftest import TINY, textured_image
from tests.support.colour_engine import ColourRegionEngine, colour_family
from tests.test_predict import iou

IMAGE = textured_image(90, 120, seed=31)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="samgis")
    add_predict_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(IMAGE).save(path)
    return path


def model_args(checkpoint) -> list[str]:
    return ["--model", TINY.model_id, "--checkpoint", str(checkpoint), "--device", "cpu"]


def test_predict_points_writes_masks_json_and_overlay(photo, tmp_path, tiny_checkpoint, tiny_engine, capsys):
    out = tmp_path / "out"
    assert run("predict", str(photo), "--points", "30,40", "70,20", "--labels", "1", "0", "--multimask",
               "--out", str(out), *model_args(tiny_checkpoint)) == 0
    doc = json.loads((out / "photo.json").read_text())
    assert doc["mode"] == "prompts" and doc["image_size"] == [90, 120] and len(doc["masks"]) == 3
    ref = SamPredictor(tiny_engine.model)
    ref.set_image(IMAGE)
    masks, scores, _ = ref.predict(np.array([[30, 40], [70, 20]]), np.array([1, 0]), multimask_output=True)
    for entry, mask, score in zip(doc["masks"], masks, scores):
        png = read_mask(out / entry["file"])
        assert np.array_equal(png, rle_decode(entry["rle"])) and iou(png, mask) >= 0.999
        assert entry["score"] == pytest.approx(float(score), abs=1e-4)
    best = masks[int(np.argmax(scores))]
    assert iou(read_mask(out / "photo.png"), best) >= 0.999
    with Image.open(out / "photo_overlay.png") as im:
        assert im.size == (120, 90) and im.mode == "RGB"
        pixels = np.asarray(im)
    assert not np.array_equal(pixels, IMAGE)  # masks and prompts are drawn
    assert tuple(pixels[40, 30]) == (0, 200, 0) and tuple(pixels[20, 70]) == (220, 0, 0)  # include / exclude dots
    assert "3 masks of photo.png" in capsys.readouterr().out


def test_boxes_from_coco_and_azure_files(photo, tmp_path, tiny_checkpoint):
    coco = tmp_path / "dets.json"
    coco.write_text(json.dumps([
        {"image_id": 7, "category_id": 1, "bbox": [10, 20, 50, 40], "score": 0.9},
        {"image_id": 7, "category_id": 2, "bbox": [60, 5, 30, 30], "score": 0.2},
        {"image_id": 8, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.99},
    ]))
    boxes, scores = load_boxes(coco, "photo.png", (90, 120), image_id="7", min_score=0.5)
    assert boxes.tolist() == [[10, 20, 60, 60]] and scores.tolist() == [0.9]
    with pytest.raises(InvalidRequest, match="--image-id"):
        load_boxes(coco, "photo.png", (90, 120))
    dataset = tmp_path / "coco.json"
    dataset.write_text(json.dumps({"images": [{"id": 1, "file_name": "other.png"},
                                              {"id": 2, "file_name": "a/photo.png"}],
                                   "annotations": [{"image_id": 1, "bbox": [0, 0, 9, 9]},
                                                   {"image_id": 2, "bbox": [5, 6, 10, 20]}]}))
    assert load_boxes(dataset, "photo.png", (90, 120))[0].tolist() == [[5, 6, 15, 26]]
    azure = tmp_path / "azure.json"
    azure.write_text(json.dumps([{"filename": "photo.png", "boxes": [
        {"box": {"topX": 0.25, "topY": 0.5, "bottomX": 0.75, "bottomY": 1.0}, "label": "can", "score": 0.8}]}]))
    assert load_boxes(azure, "photo.png", (90, 120))[0].tolist() == [[30, 45, 90, 90]]

    out = tmp_path / "out"
    assert run("predict", str(photo), "--boxes", str(azure), "--box", "0,0,40,40", "--out", str(out),
               *model_args(tiny_checkpoint)) == 0
    doc = json.loads((out / "photo.json").read_text())
    assert doc["prompts"]["boxes"] == [[0, 0, 40, 40], [30, 45, 90, 90]]
    assert [e["file"] for e in doc["masks"]] == ["photo_q0_m0.png", "photo_q1_m0.png"]


def test_predict_errors_exit_2_with_the_reason(photo, tmp_path, tiny_checkpoint, capsys):
    assert run("predict", str(photo), "--points", "30;40", *model_args(tiny_checkpoint)) == 2
    assert "expected 2 comma-separated numbers" in capsys.readouterr().err
    assert run("predict", str(photo), "--points", "500,40", *model_args(tiny_checkpoint)) == 2
    assert "outside the 120 × 90 image" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert run("predict", str(tmp_path / "bad.png"), *model_args(tiny_checkpoint)) == 2
    assert "not a decodable PNG or JPEG" in capsys.readouterr().err


def test_predict_without_prompts_is_automatic(photo, tmp_path, tiny_checkpoint):
    out = tmp_path / "auto"
    assert run("predict", str(photo), "--points-per-side", "3", "--pred-iou-thresh", "0.01",
               "--stability-score-thresh", "0", "--out", str(out), *model_args(tiny_checkpoint)) == 0
    doc = json.loads((out / "photo.json").read_text())
    assert doc["mode"] == "automatic" and doc["masks"]
    for e in doc["masks"]:
        assert np.array_equal(read_mask(out / e["file"]), rle_decode(e["rle"]))
        assert {"bbox", "area", "predicted_iou", "stability_score"} <= set(e)


def square(y0, x0, size=10, shape=(20, 20)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def test_metrics_of_known_overlap():
    m = mask_metrics(square(0, 5), square(0, 0))  # 50 px shared, 150 px union, 400 px in all
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["miou"] == pytest.approx((1 / 3 + 250 / 350) / 2)
    assert m["pixel_accuracy"] == pytest.approx(300 / 400)
    assert mask_metrics(np.zeros((4, 4), bool), np.zeros((4, 4), bool))["iou"] == 1.0
    with pytest.raises(ValueError, match="20 × 20"):
        mask_metrics(np.zeros((5, 5), bool), square(0, 0))


def test_evaluate_table_json_and_csv(tmp_path, capsys):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    save_mask(square(0, 0), truth / "a.png")
    save_mask(square(0, 5), pred / "a.png")           # IoU 1/3
    save_mask(square(5, 5), truth / "b.png")
    save_mask(square(5, 5), pred / "b.png")           # IoU 1
    Image.fromarray(square(2, 2).astype(np.uint8)).save(truth / "c.png")  # a 0/1 label image; no prediction
    save_mask(square(0, 0), pred / "a_overlay.png")   # other files in the prediction folder are ignored
    assert run("evaluate", "--pred", str(pred), "--truth", str(truth)) == 0
    out = capsys.readouterr()
    assert "a " in out.out and "0.3333" in out.out and "(no prediction)" in out.out and "mean" in out.out
    assert "1 truth masks had no prediction" in out.err
    report = json.loads((pred / "evaluation.json").read_text())
    ious = {r["image"]: r["iou"] for r in report["images"]}
    assert ious == pytest.approx({"a": 1 / 3, "b": 1.0, "c": 0.0})
    assert report["mean"]["iou"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert report["pooled"]["iou"] == pytest.approx((50 + 100) / (150 + 100 + 100))
    assert report["mean"]["pixel_accuracy"] == pytest.approx((0.75 + 1 + 0.75) / 3)
    with (pred / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["a", "b", "c", "pooled"]
    assert float(rows[0]["iou"]) == pytest.approx(1 / 3) and rows[2]["missing"] == "True"
    assert evaluate_dirs(pred, truth) == report


def test_predict_then_evaluate(photo, tmp_path, tiny_checkpoint, tiny_engine):
    out, truth = tmp_path / "out", tmp_path / "truth"
    truth.mkdir()
    ref = SamPredictor(tiny_engine.model)
    ref.set_image(IMAGE)
    masks, _, _ = ref.predict(box=np.array([20, 10, 100, 80]), multimask_output=False)
    save_mask(masks[0], truth / "photo.png")
    assert run("predict", str(photo), "--box", "20,10,100,80", "--out", str(out), *model_args(tiny_checkpoint)) == 0
    report = evaluate_dirs(out, truth)
    assert report["images"][0]["iou"] >= 0.999 and report["pooled"]["pixel_accuracy"] >= 0.999


# --- concept prompts: `--text` / `--exemplar` (every instance of a concept) ------------------------------------

CONCEPTS = Capabilities(text=True, exemplars=True)
#: Flat colour rectangles on grey (y0, x0, y1, x1 px): two of the red family, one green (colour_engine's families).
SHAPES = {"roof": ((10, 10, 30, 40), (200, 30, 30)), "hall": ((50, 60, 80, 110), (225, 45, 35)),
          "park": ((10, 70, 35, 100), (40, 170, 40))}


def shape_mask(name: str) -> np.ndarray:
    (y0, x0, y1, x1), _ = SHAPES[name]
    m = np.zeros((90, 120), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def scene_png(tmp_path):
    image = np.full((90, 120, 3), 128, np.uint8)
    for (y0, x0, y1, x1), rgb in SHAPES.values():
        image[y0:y1, x0:x1] = rgb
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    return path


def run_with(engine, *argv: str) -> int:
    """`samgis predict …` with `engine` in place of the one the options name (as an embedding program does)."""
    parser = argparse.ArgumentParser(prog="samgis")
    add_predict_parsers(parser.add_subparsers(dest="command", required=True))
    return run_predict(parser.parse_args(list(argv)), engine=engine)


def test_text_finds_every_instance_one_mask_each(scene_png, tmp_path, capsys):
    out = tmp_path / "out"
    engine = ColourRegionEngine(capabilities=CONCEPTS)
    assert run_with(engine, "predict", str(scene_png), "--text", " red ", "--out", str(out)) == 0
    doc = json.loads((out / "scene.json").read_text())
    assert doc["mode"] == "concept" and doc["concept"] == "red" and doc["score_threshold"] == 0.5
    assert doc["prompts"]["text"] == "red" and doc["model"] == engine.model_id
    # best score first: (225, 45, 35) is nearer the red reference (220, 30, 30) than (200, 30, 30)
    assert [e["file"] for e in doc["masks"]] == ["scene_c000.png", "scene_c001.png"]
    for entry, name in zip(doc["masks"], ["hall", "roof"]):
        png = read_mask(out / entry["file"])
        assert np.array_equal(png, shape_mask(name)) and np.array_equal(png, rle_decode(entry["rle"]))
        assert entry["concept"] == "red" and entry["area"] == int(shape_mask(name).sum())
        (y0, x0, y1, x1), rgb = SHAPES[name]
        assert entry["box"] == [x0, y0, x1 - 1, y1 - 1]  # outer pixel centres, SAM convention
        assert entry["score"] == pytest.approx(1 - colour_family(rgb)[1] / 442, abs=1e-6)
    assert doc["masks"][0]["score"] > doc["masks"][1]["score"]
    assert np.array_equal(read_mask(out / "scene.png"), shape_mask("roof") | shape_mask("hall"))
    with Image.open(out / "scene_overlay.png") as im:
        assert im.size == (120, 90)
    printed = capsys.readouterr().out
    assert "scene_c000.png  red  score 0.96" in printed and "2 instances of 'red' in scene.png" in printed

    # the same answer as POST /v1/predict's service function for the same image and text
    from samgis.services.image_predict import predict
    from samgis.services.predict_request import parse_instance
    image = np.asarray(Image.open(scene_png).convert("RGB"))
    ref = predict(engine, parse_instance({"text": "red"}, image=image))
    assert ref["scores"] == [e["score"] for e in doc["masks"]] and ref["boxes"] == [e["box"] for e in doc["masks"]]


def test_score_threshold_and_exemplars(scene_png, tmp_path):
    engine = ColourRegionEngine(capabilities=CONCEPTS)
    out = tmp_path / "hi"
    assert run_with(engine, "predict", str(scene_png), "--text", "red", "--score-threshold", "0.96",
                    "--out", str(out)) == 0
    doc = json.loads((out / "scene.json").read_text())
    assert doc["score_threshold"] == 0.96 and [e["area"] for e in doc["masks"]] == [int(shape_mask("hall").sum())]
    out = tmp_path / "ex"  # a positive exemplar on the park: its family, without text
    assert run_with(engine, "predict", str(scene_png), "--exemplar", "75,15,95,30", "--out", str(out)) == 0
    doc = json.loads((out / "scene.json").read_text())
    assert doc["concept"] == "exemplar" and doc["prompts"]["exemplars"] == {"positive": 1, "negative": 0}
    assert len(doc["masks"]) == 1 and np.array_equal(read_mask(out / "scene_c000.png"), shape_mask("park"))
    out = tmp_path / "neg"  # "red", but not like the roof: the red family is removed, nothing is left
    assert run_with(engine, "predict", str(scene_png), "--text", "red", "--exemplar", "15,15,30,25",
                    "--exemplar-labels", "0", "--out", str(out)) == 0
    doc = json.loads((out / "scene.json").read_text())
    assert doc["masks"] == [] and not read_mask(out / "scene.png").any()


def test_model_without_the_text_capability_exits_2_naming_it(scene_png, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "none"
    assert run_with(ColourRegionEngine(), "predict", str(scene_png), "--text", "red", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("samgis predict: --text: ") and "does not support text" in err
    assert not out.exists()  # refused before anything ran or was written
    engine = ColourRegionEngine(capabilities=Capabilities(text=True))
    assert run_with(engine, "predict", str(scene_png), "--exemplar", "1,1,5,5", "--out", str(out)) == 2
    assert "--exemplar: " in capsys.readouterr().err and engine.embed_calls == 0
    # a real SAM 1 checkpoint loaded from its options: no text either
    assert run("predict", str(scene_png), "--text", "red", "--out", str(out), *model_args(tiny_checkpoint)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model '{TINY.model_id}' does not support text" in err


@pytest.mark.parametrize("argv,option,words", [
    (["--text", "red", "--points", "5,5"], "--text", "cannot be mixed with --points"),
    (["--exemplar", "1,1,5,5", "--box", "0,0,9,9"], "--exemplar", "cannot be mixed with --box"),
    (["--text", "red", "--multimask"], "--multimask", "one mask per instance"),
    (["--text", "red", "--score-threshold", "1.5"], "--score-threshold", "[0, 1]"),
    (["--text", "red", "--score-threshold", "nan"], "--score-threshold", "expected a number"),
    (["--points", "5,5", "--score-threshold", "0.3"], "--score-threshold", "concept prompts"),
    (["--text", "   "], "--text", "empty"),
    (["--text", "x" * 201], "--text", "at most 200"),
    (["--text", "a\tb"], "--text", "control characters"),
    (["--exemplar", "1,1,500,5"], "--exemplar[0]", "inside the 120 × 90"),
    (["--exemplar", "1,1,5"], "--exemplar 1,1,5", "expected 4"),
    (["--exemplar", "1,1,5,5", "--exemplar-labels", "1", "0"], "--exemplar-labels", "2 labels for 1"),
    (["--exemplar-labels", "1"], "--exemplar-labels", "without exemplar_boxes"),
])
def test_concept_refusals_name_the_option(scene_png, tmp_path, capsys, argv, option, words):
    engine = ColourRegionEngine(capabilities=CONCEPTS)
    assert run_with(engine, "predict", str(scene_png), *argv, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"samgis predict: {option}: ") and words in err, err
    assert engine.embed_calls == 0

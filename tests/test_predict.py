"""samgis.predict without HTTP: image decoding, mask encodings (COCO RLE vs pycocotools and SAM), parsing
with field names, prompt decoding and the automatic mask generator against Meta's own classes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import shapely
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.utils.amg import coco_encode_rle, mask_to_rle_pytorch
from shapely.geometry import shape

from samgis.engine.protocol import AmgOptions, Prompts
from samgis.errors import ImageTooLarge, InvalidRequest
from samgis.imaging.images import decode_image
from samgis.imaging.masks import (
    decode_array,
    encode_array,
    png_decode,
    png_encode,
    polygon_encode,
    rle_decode,
    rle_encode,
)
from samgis.services.image_predict import predict
from samgis.services.limits import PredictLimits
from samgis.services.predict_request import InstanceQuery, build_instance, parse_instance
from tests.conftest import textured_image

# Thresholds that let a random-weight model's masks through (its logits are ~0.1 in size) with NMS off, so
# the automatic generator returns many masks to compare instead of one.
AMG_PARAMS = dict(points_per_side=4, pred_iou_thresh=0.01, stability_score_thresh=0.2,
                  stability_score_offset=0.05, box_nms_thresh=1.0)


def encoded(image: np.ndarray, fmt: str = "PNG", **save) -> str:
    """Base64 of `image` (H, W, 3) uint8 saved as `fmt`."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **save)
    return base64.b64encode(buf.getvalue()).decode()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def random_masks(rng: np.random.Generator, n: int = 6, h: int = 37, w: int = 53) -> list[np.ndarray]:
    masks = [np.zeros((h, w), bool), np.ones((h, w), bool)]
    for _ in range(n):
        m = rng.random((h, w)) < 0.3
        m[rng.integers(0, h):, rng.integers(0, w):] ^= True
        masks.append(m)
    return masks


# --- images ---------------------------------------------------------------------------------------------

def test_decode_png_jpeg_data_url_and_b64_object():
    img = textured_image(30, 40, seed=1)
    assert np.array_equal(decode_image(encoded(img)), img)
    assert np.array_equal(decode_image("data:image/png;base64," + encoded(img)), img)
    assert np.array_equal(decode_image({"b64": encoded(img)}), img)
    wrapped = base64.encodebytes(base64.b64decode(encoded(img))).decode()  # newlines every 76 chars
    assert "\n" in wrapped and np.array_equal(decode_image(wrapped), img)
    jpeg = decode_image(encoded(img, "JPEG", quality=95))
    assert jpeg.shape == (30, 40, 3) and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - img).mean() < 12


def test_decode_grey_and_rgba_become_rgb():
    grey = (np.arange(12 * 9) % 256).astype(np.uint8).reshape(12, 9)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, format="PNG")
    out = decode_image(base64.b64encode(buf.getvalue()).decode())
    assert out.shape == (12, 9, 3) and np.array_equal(out[..., 1], grey)
    rgba = np.dstack([textured_image(8, 8), np.full((8, 8), 128, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    assert decode_image(base64.b64encode(buf.getvalue()).decode()).shape == (8, 8, 3)


def test_exif_orientation_is_applied():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # left half white, stored 40 wide × 20 high
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", exif=exif, quality=100)
    out = decode_image(base64.b64encode(buf.getvalue()).decode())
    assert out.shape == (40, 20, 3)  # displayed upright: 20 wide × 40 high
    assert out[:15].mean() > 200 and out[-15:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("data, why", [
    ("not base64 at all!!", "not valid base64"),
    (base64.b64encode(b"GIF89a but not really").decode(), "not a decodable PNG or JPEG"),
    (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(), "not a decodable PNG or JPEG"),
    (42, "expected a base64 string"),
    ("https://example.com/cat.jpg", "URLs are not fetched"),
])
def test_undecodable_images_name_the_field(data, why):
    with pytest.raises(InvalidRequest) as err:
        decode_image(data, "instances[3].image")
    assert err.value.field == "instances[3].image" and why in err.value.message


def test_gif_is_refused_even_when_valid():
    buf = io.BytesIO()
    Image.fromarray(textured_image(8, 8)).save(buf, format="GIF")
    with pytest.raises(InvalidRequest, match="PNG or JPEG"):
        decode_image(base64.b64encode(buf.getvalue()).decode())


def test_pixel_limit_is_checked_from_the_header():
    buf = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buf, format="PNG")  # 30 Mpx, a few kB
    with pytest.raises(ImageTooLarge) as err:
        decode_image(base64.b64encode(buf.getvalue()).decode(), "instances[0].image", max_pixels=16_000_000)
    assert err.value.field == "instances[0].image" and "6000 × 5000" in err.value.message
    assert "16000000" in err.value.message


# --- mask encodings -------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2
def test_rle_is_pycocotools_and_sam_compatible(rng):
    for m in random_masks(rng):
        rle = rle_encode(m)
        assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
        # pycocotools reads ours, and SAM's own coco_rle encoding of the same mask is the same string
        assert np.array_equal(coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}), m)
        sam = coco_encode_rle(mask_to_rle_pytorch(torch.as_tensor(m)[None])[0])
        assert sam == rle
        assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == m.sum()
        assert np.array_equal(rle_decode(rle), m)


def test_rle_is_column_major_as_documented():
    # COCO RLE: run lengths over the mask read column by column, starting with a run of zeros.
    m = np.zeros((3, 4), bool)
    m[1:, 1] = True  # column 1, rows 1-2
    m[0, 2] = True   # column 2, row 0
    uncompressed = {"size": [3, 4], "counts": [4, 3, 5]}  # 4 zeros, 3 ones (col 1 rows 1,2 + col 2 row 0), 5 zeros
    assert np.array_equal(rle_decode(uncompressed), m)
    assert np.array_equal(rle_decode(rle_encode(m)), m)


def test_png_and_polygon_encodings(rng):
    for m in random_masks(rng, n=3):
        assert np.array_equal(png_decode(png_encode(m)), m)
        with Image.open(io.BytesIO(base64.b64decode(png_encode(m)))) as im:
            assert im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}
        geom = polygon_encode(m)
        if not m.any():
            assert geom is None
            continue
        poly = shape(geom)
        assert poly.is_valid and poly.area == m.sum()  # pixel-edge outlines enclose exactly the mask pixels
        x0, y0, x1, y1 = poly.bounds
        rows, cols = np.nonzero(m)
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_polygon_keeps_holes():
    m = np.zeros((10, 10), bool)
    m[1:9, 1:9] = True
    m[4:6, 4:6] = False
    geom = polygon_encode(m)
    assert geom["type"] == "Polygon" and len(geom["coordinates"]) == 2
    assert shapely.area(shape(geom)) == 60


def test_array_round_trip_and_errors():
    a = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    assert np.array_equal(decode_array(encode_array(a), "x"), a)
    assert np.array_equal(decode_array(a.tolist(), "x"), a)
    with pytest.raises(InvalidRequest) as err:
        decode_array({"shape": [5], "data": "AAAA"}, "instances[0].mask_input")
    assert err.value.field == "instances[0].mask_input"


# --- parsing --------------------------------------------------------------------------------------------

IMG = textured_image(60, 80, seed=2)


@pytest.mark.parametrize("obj, field, why", [
    ({"points": [[1, 2, 3]]}, "instances[1].points[0]", "expected 2 finite numbers"),
    ({"points": [[1, 2], "x"]}, "instances[1].points[1]", "expected 2 finite numbers"),
    ({"points": [[1, 2]], "labels": [1, 0]}, "instances[1].labels", "2 labels for 1 points"),
    ({"points": [[1, 2]], "labels": [2]}, "instances[1].labels", "1 (include) or 0"),
    ({"points": [[10, 10], [81, 5]]}, "instances[1].points[1]", "outside the 80 × 60 image"),
    ({"boxes": [[0, 0, 10, 10], [5, 5, 1, 9]]}, "instances[1].boxes[1]", "x0 ≤ x1"),
    ({"boxes": [[0, 0, 10, 61]]}, "instances[1].boxes[0]", "outside"),
    ({"boxes": [[0, 0, 10]]}, "instances[1].boxes[0]", "expected 4"),
    ({"points": {"x": 1}}, "instances[1].points", "expected a list"),
    ({"pionts": [[1, 2]]}, "instances[1].pionts", "unknown key"),
    ({"mask_format": "svg"}, "instances[1].mask_format", "rle, png, polygon"),
    ({"multimask": "yes"}, "instances[1].multimask", "true or false"),
    ({"points_per_side": 99}, "instances[1].points_per_side", "[1, 32]"),
    ({"mask_input": encode_array(np.zeros((256, 256)))}, "instances[1].mask_input", "needs at least one point"),
    ({"points": [[1, 2]], "mask_input": encode_array(np.zeros((64, 64)))}, "instances[1].mask_input", "256 × 256"),
])
def test_bad_instances_name_the_field(obj, field, why):
    with pytest.raises(InvalidRequest) as err:
        parse_instance(obj, "instances[1]", image=IMG)
    assert err.value.field == field and why in err.value.message


@pytest.mark.parametrize("query, field, why", [
    (InstanceQuery("-", points=np.array([[10.0, 10.0], [81.0, 5.0]])), "instances[1].points[1]", "outside the 80 × 60"),
    (InstanceQuery("-", points=np.array([[1.0, 2.0]]), labels=(1, 0)), "instances[1].labels", "2 labels for 1"),
    (InstanceQuery("-", boxes=np.array([[5.0, 5.0, 1.0, 9.0]])), "instances[1].boxes[0]", "x0 ≤ x1"),
    (InstanceQuery("-", options={"points_per_side": 99}), "instances[1].points_per_side", "[1, 32]"),
    (InstanceQuery("-", text="tree", points=np.array([[1.0, 2.0]])), "instances[1].text", "cannot be mixed"),
    (InstanceQuery("-", points_lnglat=np.array([[1.0, 2.0]])), "instances[1].points_lnglat", "no georeferencing"),
])
def test_typed_instances_are_checked_against_the_image_and_limits(query, field, why):
    """HTTP instances arrive typed (pydantic validated types and ranges at the edge); what needs the image or the
    server's limits is still refused, naming the field."""
    with pytest.raises(InvalidRequest) as err:
        build_instance(query, "instances[1]", PredictLimits(), IMG)
    assert err.value.field == field and why in err.value.message


def test_typed_and_dict_instances_agree():
    obj = {"points": [[3, 4], [20, 30]], "labels": [1, 0], "boxes": [[1, 1, 40, 50]], "multimask": True}
    a = parse_instance(obj, image=IMG)
    b = build_instance(InstanceQuery("-", points=np.array(obj["points"], float), labels=(1, 0),
                                     boxes=np.array(obj["boxes"], float), options={"multimask": True}),
                       "instances[0]", PredictLimits(), IMG)
    assert (a.multimask, a.mask_format, a.amg) == (b.multimask, b.mask_format, b.amg)
    for k in ("points", "labels", "boxes"):
        assert np.array_equal(getattr(a.prompts, k), getattr(b.prompts, k))


def test_prompt_and_grid_limits():
    with pytest.raises(InvalidRequest, match="over the limit of 3 prompts"):
        parse_instance({"points": [[1, 1]] * 2, "boxes": [[0, 0, 5, 5]] * 2}, image=IMG,
                       limits=PredictLimits(max_prompts=3))
    with pytest.raises(InvalidRequest, match="decode 1280 grid points"):
        parse_instance({"points_per_side": 16, "crop_n_layers": 1, "crop_n_points_downscale_factor": 1},
                       image=IMG, limits=PredictLimits(max_grid_points=1024))


def test_parameters_are_defaults_that_instances_override():
    inst = parse_instance({"points": [[3, 4]], "multimask": False}, image=IMG,
                          parameters={"multimask": True, "mask_format": "png", "points_per_side": 8})
    assert (inst.multimask, inst.mask_format, inst.amg.points_per_side) == (False, "png", 8)
    assert inst.prompts.labels.tolist() == [1]  # labels default to include
    assert parse_instance({}, image=IMG).prompts is None  # no prompts: automatic mode
    with pytest.raises(InvalidRequest) as err:
        parse_instance({}, image=IMG, parameters={"bogus": 1})
    assert err.value.field == "parameters.bogus"


# --- decoding ------------------------------------------------------------------------------------------

def test_prompts_match_sam_predictor(tiny_engine):
    img = textured_image(96, 128, seed=5)
    ref = SamPredictor(tiny_engine.model)
    ref.set_image(img)
    inst = parse_instance({"points": [[40, 30], [100, 70]], "labels": [1, 0],
                           "boxes": [[10, 10, 60, 50], [50, 20, 120, 90]], "multimask": True,
                           "return_logits": True}, image=img)
    out = predict(tiny_engine, inst)
    assert out["mode"] == "prompts" and len(out["masks"]) == 2 and all(len(q) == 3 for q in out["masks"])
    logits = decode_array(out["logits"], "logits")
    assert logits.shape == (2, 3, 256, 256)
    for q, box in enumerate(inst.prompts.boxes):
        masks, scores, low = ref.predict(inst.prompts.points, inst.prompts.labels, box, multimask_output=True)
        for m in range(3):
            assert iou(rle_decode(out["masks"][q][m]), masks[m]) >= 0.999
        np.testing.assert_allclose(out["scores"][q], scores, atol=1e-4)
        np.testing.assert_allclose(logits[q], low, atol=1e-3)
    assert {"embed", "decode", "encode", "total"} <= set(out["timings_ms"])


def test_mask_input_round_trip(tiny_engine):
    img = textured_image(64, 64, seed=6)
    first = predict(tiny_engine, parse_instance({"points": [[20, 20]], "return_logits": True}, image=img))
    again = parse_instance({"points": [[20, 20], [40, 50]], "labels": [1, 0], "mask_input": first["logits"],
                            "mask_format": "png"}, image=img)
    out = predict(tiny_engine, again)
    ref = tiny_engine.decode(tiny_engine.embed(img), Prompts(
        points=[[20, 20], [40, 50]], labels=[1, 0], mask_input=decode_array(first["logits"], "l")[0]))
    assert np.array_equal(png_decode(out["masks"][0][0]), ref.masks[0, 0])


def test_many_boxes_are_split_into_batches_with_the_same_result(tiny_engine, monkeypatch):
    img = textured_image(50, 70, seed=8)
    emb = tiny_engine.embed(img)
    inst = parse_instance({"boxes": [[i, i, 30 + i, 20 + i] for i in range(7)]}, image=img)
    whole = predict(tiny_engine, inst, emb)
    batches = []
    decode = tiny_engine.decode
    monkeypatch.setattr(tiny_engine, "decode", lambda e, p, m: batches.append(len(p.boxes)) or decode(e, p, m))
    per_query = 4 * (1024 * 1024 + 50 * 70) + 50 * 70
    split = predict(tiny_engine, inst, emb, PredictLimits(decode_bytes=3 * per_query))  # 3 queries a batch
    assert batches == [3, 3, 1]
    assert split["masks"] == whole["masks"]
    np.testing.assert_allclose(split["scores"], whole["scores"], atol=1e-6)


def test_automatic_masks_with_small_region_removal_match_sam(tiny_engine):
    # (the plain settings are compared over HTTP in test_predict_http.py)
    img = textured_image(120, 160, seed=3)
    params = {**AMG_PARAMS, "min_mask_region_area": 30}
    ref = SamAutomaticMaskGenerator(tiny_engine.model, output_mode="coco_rle", **params).generate(img)
    ours = tiny_engine.generate(tiny_engine.embed(img), AmgOptions(**params), img)
    assert len(ref) >= 5 and len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert iou(o["segmentation"], rle_decode(r["segmentation"])) >= 0.999
        assert o["bbox"] == r["bbox"] and o["crop_box"] == r["crop_box"]
        assert abs(o["area"] - r["area"]) <= 0.001 * r["area"] + 1
        assert o["predicted_iou"] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert o["stability_score"] == pytest.approx(r["stability_score"], abs=1e-3)
        np.testing.assert_allclose(o["point_coords"], r["point_coords"], atol=1e-6)


def test_automatic_mode_reuses_the_embedding_and_counts_points(tiny_engine, monkeypatch):
    img = textured_image(40, 50, seed=4)
    emb = tiny_engine.embed(img)
    calls = []
    monkeypatch.setattr(tiny_engine, "embed", lambda image: calls.append(image.shape) or emb)
    out = predict(tiny_engine, parse_instance({"points_per_side": 2, **{k: v for k, v in AMG_PARAMS.items()
                                                                        if k != "points_per_side"}}, image=img),
                  emb)
    assert calls == [] and out["mode"] == "automatic" and out["grid_points"] == 4
    for rec in out["masks"]:
        assert set(rec) == {"segmentation", "bbox", "area", "predicted_iou", "stability_score", "point_coords",
                            "crop_box"}
        assert rec["area"] == rle_decode(rec["segmentation"]).sum()

"""`SamEngine.decode_point_batch` (many point queries, low-res outputs only) and the automatic mask generator
over it: the same numbers as one `decode` per point, and the same masks as Meta's own generator."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator

from samgis.engine.amg import EnginePredictor, PointBatchDecoder, mask_generator
from samgis.engine.protocol import AmgOptions, Prompts
from tests.conftest import textured_image
from tests.support.amg_records import assert_same_records
from tests.support.colour_engine import ColourRegionEngine
from tests.test_predict import AMG_PARAMS


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return textured_image(96, 128, seed=11)  # not square: the input frame is padded and resized back


@pytest.fixture(scope="module")
def embedding(tiny_engine, image):
    return tiny_engine.embed(image)


def point_queries(seed: int, b: int, n: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    points = r.uniform([0, 0], [w - 1, h - 1], (b, n, 2))
    labels = r.integers(0, 2, (b, n))
    labels[:, 0] = 1
    return points, labels


def per_point(engine, embedding, points, labels, multimask):
    results = [engine.decode(embedding, Prompts(points=p, labels=lab), multimask) for p, lab in zip(points, labels)]
    return np.concatenate([r.logits for r in results]), np.concatenate([r.scores for r in results])


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("fast", [True, False], ids=["decode_masks", "mask_decoder"])
def test_batch_equals_one_decode_per_point(tiny_engine, embedding, multimask, n, fast):
    emb = embedding if fast else replace(embedding, aux=None)
    assert (emb.aux is not None) == fast
    points, labels = point_queries(seed=n, b=7, n=n)
    low, scores = tiny_engine.decode_point_batch(emb, points, labels, multimask)
    m = 3 if multimask else 1
    assert isinstance(low, torch.Tensor) and low.dtype == torch.float32 and low.shape == (7, m, 256, 256)
    assert isinstance(scores, torch.Tensor) and scores.dtype == torch.float32 and scores.shape == (7, m)
    ref_low, ref_scores = per_point(tiny_engine, emb, points, labels, multimask)
    np.testing.assert_allclose(low.numpy(), ref_low, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-4, rtol=0)
    assert np.abs(ref_low).max() > 1e-2  # the comparison is not between near-zero logits


def test_batch_inputs_chunks_and_errors(tiny_engine, embedding, monkeypatch):
    points, labels = point_queries(seed=5, b=11, n=1)
    whole_low, whole_scores = tiny_engine.decode_point_batch(embedding, points, labels, True)
    # torch inputs (what the generator passes: float64 points, int labels), run in passes of 4 queries
    monkeypatch.setattr(tiny_engine, "point_batch_rows", 4)
    low, scores = tiny_engine.decode_point_batch(embedding, torch.as_tensor(points), torch.as_tensor(labels), True)
    np.testing.assert_allclose(low.numpy(), whole_low.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores.numpy(), whole_scores.numpy(), atol=1e-5, rtol=0)
    empty_low, empty_scores = tiny_engine.decode_point_batch(embedding, np.zeros((0, 1, 2)), np.zeros((0, 1)), False)
    assert empty_low.shape == (0, 1, 256, 256) and empty_scores.shape == (0, 1)
    with pytest.raises(ValueError, match=r"\(B, N ≥ 1, 2\)"):
        tiny_engine.decode_point_batch(embedding, points[0], labels[0])
    with pytest.raises(ValueError, match=r"\(B, N ≥ 1, 2\)"):
        tiny_engine.decode_point_batch(embedding, points, labels[:, :0])
    with pytest.raises(ValueError, match="given to engine"):
        tiny_engine.decode_point_batch(replace(embedding, model_id="other"), points, labels)


def test_predictor_makes_one_batched_call_per_generator_batch(tiny_engine, embedding, image, monkeypatch):
    assert isinstance(tiny_engine, PointBatchDecoder)
    assert not isinstance(ColourRegionEngine(), PointBatchDecoder)  # test double: per-point fallback
    calls = []
    batch = tiny_engine.decode_point_batch
    monkeypatch.setattr(tiny_engine, "decode_point_batch",
                        lambda e, p, lab, m: calls.append(p.shape) or batch(e, p, lab, m))
    monkeypatch.setattr(tiny_engine, "decode", lambda *a: pytest.fail("per-point decode with a batch decoder"))
    predictor = EnginePredictor(tiny_engine, embedding)
    predictor.set_image(image)
    points, _ = point_queries(seed=2, b=5, n=1)
    masks, scores, low = predictor.predict_torch(torch.as_tensor(points), torch.ones(5, 1, dtype=torch.int),
                                                 multimask_output=True, return_logits=True)
    assert calls == [(5, 1, 2)] and predictor.embeds == 0
    assert masks.shape == (5, 3, 96, 128) and scores.shape == (5, 3) and low.shape == (5, 3, 256, 256)


def test_batched_generator_equals_per_point_generator(tiny_engine, image, embedding, monkeypatch):
    params = {**AMG_PARAMS, "points_per_side": 6}
    batched = tiny_engine.generate(embedding, AmgOptions(**params), image)
    decodes = []
    decode = tiny_engine.decode
    monkeypatch.setattr(tiny_engine, "decode_point_batch", None)  # not a PointBatchDecoder: the old loop
    monkeypatch.setattr(tiny_engine, "decode", lambda e, p, m: decodes.append(len(p.points)) or decode(e, p, m))
    looped = tiny_engine.generate(embedding, AmgOptions(**params), image)
    assert decodes == [1] * 36  # one per grid point
    assert len(batched) >= 5 and len(batched) == len(looped)
    assert_same_records(batched, looped, point_atol=1e-6)


def test_batched_generator_with_crops_matches_sam(tiny_engine):
    img = textured_image(120, 160, seed=12)
    params = {**AMG_PARAMS, "crop_n_layers": 1, "crop_nms_thresh": 1.0}
    ref = SamAutomaticMaskGenerator(tiny_engine.model, output_mode="binary_mask", **params).generate(img)
    ours = tiny_engine.generate(tiny_engine.embed(img), AmgOptions(**params), img)
    assert len(ref) >= 5 and len(ours) == len(ref)
    # (the random model's masks all touch the crops' inner edges, so only the whole-image layer's survive;
    # the crops are still embedded and decoded through the batch path, with the same filtering outcome)
    assert_same_records(ours, ref, point_atol=1e-6)


def test_masks_below_the_iou_threshold_are_not_upscaled_and_nothing_changes(tiny_engine, image, embedding,
                                                                               monkeypatch):
    """The generator drops masks whose predicted IoU is not above `pred_iou_thresh` before reading their
    logits, so the predictor skips their upscaling: same records, fewer masks upscaled."""
    predictor = EnginePredictor(tiny_engine, embedding)
    predictor.set_image(image)
    points = torch.as_tensor(np.stack(np.meshgrid(np.linspace(5, 120, 6), np.linspace(5, 90, 6)), -1)
                             .reshape(-1, 1, 2).astype(np.float32))
    _, scores, _ = predictor.predict_torch(points, torch.ones(36, 1, dtype=torch.int), return_logits=True)
    thresh = float(scores.median())  # about half the masks pass
    options = AmgOptions(**{**AMG_PARAMS, "points_per_side": 6, "pred_iou_thresh": thresh})
    upscaled = []
    real = tiny_engine.upscale_logits
    monkeypatch.setattr(tiny_engine, "upscale_logits", lambda low, e: upscaled.append(low.shape[0] * low.shape[1])
                        or real(low, e))
    skipping = tiny_engine.generate(embedding, options, image)
    n_skipping, upscaled[:] = sum(upscaled), []
    gen = mask_generator(tiny_engine, options, embedding, image_shape=image.shape[:2])
    assert gen.predictor.skip_iou_at_most == thresh
    gen.predictor.skip_iou_at_most = None  # upscale everything, as SamPredictor does
    everything = gen.generate(image)
    assert 0 < n_skipping < sum(upscaled) == 3 * 36
    assert len(skipping) == len(everything) > 0
    for a, b in zip(skipping, everything):
        assert np.array_equal(a["segmentation"], b["segmentation"])
        assert a["predicted_iou"] == b["predicted_iou"] and a["stability_score"] == b["stability_score"]

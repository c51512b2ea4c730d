"""Our engine vs segment_anything.SamPredictor on the same random-weight checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from samgis.engine.protocol import Prompts
from samgis.engine.registry import get_model_spec
from samgis.engine.backends.sam1 import SamEngine, build_sam
from tests.conftest import TINY, textured_image

CASES = {
    "one point": dict(points=[[300.0, 400.0]], labels=[1], box=None),
    "points in/out": dict(points=[[300.0, 400.0], [620.5, 200.25], [100.0, 650.0]], labels=[1, 0, 1], box=None),
    "box": dict(points=None, labels=None, box=[120.0, 90.0, 700.0, 600.0]),
    "points + box": dict(points=[[400.0, 300.0], [150.0, 120.0]], labels=[1, 0], box=[100.0, 80.0, 800.0, 640.0]),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def check_case(engine: SamEngine, predictor: SamPredictor, emb, case: dict, multimask: bool) -> None:
    pts = None if case["points"] is None else np.array(case["points"], np.float32)
    lab = None if case["labels"] is None else np.array(case["labels"], np.int32)
    box = None if case["box"] is None else np.array(case["box"], np.float32)
    ref_masks, ref_scores, ref_logits = predictor.predict(pts, lab, box, multimask_output=multimask)
    ours = engine.decode(emb, Prompts(points=pts if pts is not None else np.zeros((0, 2)),
                                      labels=lab if lab is not None else np.zeros(0),
                                      boxes=box[None] if box is not None else np.zeros((0, 4))), multimask)
    assert ours.masks.shape == (1, *ref_masks.shape)
    assert ours.masks.dtype == bool
    for m in range(ref_masks.shape[0]):
        assert iou(ours.masks[0, m], ref_masks[m]) >= 0.999
    np.testing.assert_allclose(ours.scores[0], ref_scores, atol=1e-4)
    np.testing.assert_allclose(ours.logits[0], ref_logits, atol=1e-3)


@pytest.mark.parametrize("shape", [(768, 1024), (1024, 1024), (500, 333)])
def test_tiny_parity_all_prompt_kinds(tiny_engine, shape):
    image = textured_image(*shape, seed=shape[0])
    predictor = SamPredictor(tiny_engine.model)
    predictor.set_image(image)
    emb = tiny_engine.embed(image)
    torch.testing.assert_close(emb.features, predictor.features, atol=1e-5, rtol=1e-5)
    assert emb.original_size == shape
    for case in CASES.values():
        for multimask in (False, True):
            check_case(tiny_engine, predictor, emb, case, multimask)


def test_several_boxes_decode_as_one_batch_like_one_call_per_box(tiny_engine):
    image = textured_image(1024, 1024, seed=7)
    predictor = SamPredictor(tiny_engine.model)
    predictor.set_image(image)
    emb = tiny_engine.embed(image)
    pts, lab = np.array([[500.0, 500.0]], np.float32), np.array([1], np.int32)
    boxes = np.array([[100, 100, 400, 400], [450, 450, 900, 950], [0, 600, 300, 1000]], np.float32)
    ours = tiny_engine.decode(emb, Prompts(points=pts, labels=lab, boxes=boxes), multimask=False)
    assert ours.masks.shape == (3, 1, 1024, 1024)
    for i, box in enumerate(boxes):
        ref_m, ref_s, _ = predictor.predict(pts, lab, box, multimask_output=False)
        assert iou(ours.masks[i, 0], ref_m[0]) >= 0.999
        np.testing.assert_allclose(ours.scores[i], ref_s, atol=1e-4)


def test_mask_input_round_trip(tiny_engine):
    image = textured_image(1024, 1024, seed=3)
    predictor = SamPredictor(tiny_engine.model)
    predictor.set_image(image)
    emb = tiny_engine.embed(image)
    pts, lab = np.array([[512.0, 512.0]], np.float32), np.array([1], np.int32)
    first = tiny_engine.decode(emb, Prompts(points=pts, labels=lab), multimask=False)
    prev = first.logits[0]  # (1, 256, 256)
    ours = tiny_engine.decode(emb, Prompts(points=pts, labels=lab, mask_input=prev), multimask=False)
    ref_m, ref_s, _ = predictor.predict(pts, lab, mask_input=prev, multimask_output=False)
    assert iou(ours.masks[0, 0], ref_m[0]) >= 0.999
    np.testing.assert_allclose(ours.scores[0], ref_s, atol=1e-4)


@pytest.mark.slow
def test_vit_b_parity(vit_b_checkpoint):
    """The real sam_vit_b architecture, loaded through the product's loader."""
    engine = SamEngine.from_spec(get_model_spec("sam_vit_b"), vit_b_checkpoint, device="cpu")
    image = textured_image(1024, 1024, seed=11)
    predictor = SamPredictor(engine.model)
    predictor.set_image(image)
    emb = engine.embed(image)
    assert tuple(emb.features.shape) == (1, 256, 64, 64)
    torch.testing.assert_close(emb.features, predictor.features, atol=1e-4, rtol=1e-4)
    for name in ("one point", "points + box"):
        for multimask in (False, True):
            check_case(engine, predictor, emb, CASES[name], multimask)


def test_engine_rejects_foreign_embedding(tiny_engine):
    emb = tiny_engine.embed(textured_image(64, 64))
    other = SamEngine(tiny_engine.model, "another_model", device="cpu")
    with pytest.raises(ValueError, match="embedding of"):
        other.decode(emb, Prompts(points=[[1, 1]], labels=[1]))


def test_prompts_validation():
    with pytest.raises(ValueError):
        Prompts()
    with pytest.raises(ValueError):
        Prompts(points=[[1, 2], [3, 4]], labels=[1])


def test_sdpa_encoder_matches_the_model_with_heads_in_chunks(monkeypatch):
    """Our encoder (fused attention, relative positions as a mask, heads a few at a time) computes what
    `ImageEncoderViT.forward` does; a tiny mask budget forces one head per chunk."""
    from samgis.engine.backends.sam1 import encoder as sam_encoder

    torch.manual_seed(3)
    model = build_sam(TINY.arch).eval()
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        ref = model.image_encoder(x)
        monkeypatch.setattr(sam_encoder, "MASK_BYTES", 1)
        chunked = sam_encoder.encode(model.image_encoder, x)
    assert torch.allclose(ref, chunked, atol=1e-4), (ref - chunked).abs().max()

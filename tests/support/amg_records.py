"""Checks shared by the automatic-mask tests of the SAM 2-style backends (sam2, sam3): records equal a
reference generator's, and records have SAM 1's form (`SamAutomaticMaskGenerator`, output_mode
"binary_mask")."""

from __future__ import annotations

import numpy as np
import pytest


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def assert_same_records(ours: list[dict], ref: list[dict], point_atol: float = 1e-4) -> None:
    """Record by record: mask IoU ≥ 0.999, the same bbox / crop_box, area within 0.1 % + 1 px, predicted IoU
    within 1e-4, stability score within 1e-3, point within `point_atol` px."""
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert mask_iou(o["segmentation"], r["segmentation"]) >= 0.999
        assert o["bbox"] == r["bbox"] and o["crop_box"] == r["crop_box"]
        assert abs(o["area"] - r["area"]) <= 0.001 * r["area"] + 1
        assert o["predicted_iou"] == pytest.approx(r["predicted_iou"], abs=1e-4)
        assert o["stability_score"] == pytest.approx(r["stability_score"], abs=1e-3)
        np.testing.assert_allclose(o["point_coords"], r["point_coords"], atol=point_atol)


def assert_sam1_form(ours: list[dict], sam1: list[dict], shape: tuple[int, int]) -> None:
    """The first and last of `ours` have the keys and value types of SAM 1's records (`sam1`), a (H, W) =
    `shape` bool segmentation whose area and inclusive XYWH bbox are its own, the whole image as crop box
    and one point."""
    h, w = shape
    assert sam1 and ours
    for rec, ref in ((ours[0], sam1[0]), (ours[-1], sam1[-1])):
        assert rec.keys() == ref.keys()
        for key in rec:
            assert type(rec[key]) is type(ref[key]), key
        for key in ("bbox", "crop_box", "point_coords"):
            assert [type(v) for v in np.ravel(rec[key])] == [type(v) for v in np.ravel(ref[key])], key
        seg = rec["segmentation"]
        assert seg.dtype == bool and seg.shape == (h, w) and rec["area"] == int(seg.sum())
        x, y, bw, bh = rec["bbox"]
        ys, xs = np.nonzero(seg)
        assert (x, y, x + bw, y + bh) == (xs.min(), ys.min(), xs.max(), ys.max())  # SAM's inclusive XYWH
        assert rec["crop_box"] == [0, 0, w, h] and len(rec["point_coords"]) == 1

"""The pure helpers of bench/compare_sam3_impl.py (instance matching, key renaming, the skip path); the
benchmark itself needs transformers and minutes of CPU, so it is not run here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "compare_sam3_impl.py"


@pytest.fixture(scope="module")
def cmp():
    spec = importlib.util.spec_from_file_location("compare_sam3_impl", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_mask_iou(cmp):
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert cmp.mask_iou(a, b) == 1.0  # both empty
    a[:2] = True
    b[1:3] = True
    assert cmp.mask_iou(a, b) == pytest.approx(4 / 12)
    assert cmp.mask_iou(a, ~a) == 0.0


def test_match_instances_finds_the_permutation(cmp):
    discs = np.stack([_disc(64, 64, 16, 16, 8), _disc(64, 64, 40, 40, 10), _disc(64, 64, 16, 48, 6)])
    shuffled = discs[[2, 0, 1]]
    pairs, ious = cmp.match_instances(discs, shuffled)
    assert sorted(pairs) == [(0, 1), (1, 2), (2, 0)]
    assert ious == [1.0, 1.0, 1.0]


def test_match_instances_prefers_total_iou_and_handles_unequal_counts(cmp):
    a = np.stack([_disc(64, 64, 32, 32, 12), _disc(64, 64, 32, 36, 12)])
    b = np.stack([_disc(64, 64, 32, 37, 12)])  # closest to a[1]
    pairs, ious = cmp.match_instances(a, b)
    assert pairs == [(1, 0)] and 0.8 < ious[0] < 1.0
    assert cmp.match_instances(a, np.zeros((0, 64, 64), bool)) == ([], [])


def test_key_renaming_round(cmp):
    state = {"backbone.vision_backbone.trunk.pos_embed": 1, "inst_interactive_predictor.model.no_mem_embed": 2}
    orig = cmp.to_original_keys(state)
    assert orig == {"sam3_model.backbone.vision_backbone.trunk.pos_embed": 1,
                    "sam2_predictor.model.no_mem_embed": 2}
    det, trk = cmp.split_converted({"detector_model.vision_encoder.neck.x": 1, "tracker_neck.fpn_layers.0.w": 2,
                                    "tracker_model.no_memory_embedding": 3})
    assert det == {"vision_encoder.neck.x": 1}
    assert trk == {"vision_encoder.neck.fpn_layers.0.w": 2, "no_memory_embedding": 3}


def test_table_and_sizes(cmp):
    t = cmp.table([("build", "1 s", "2 s")]).splitlines()
    assert len(t) == 3 and t[2] == "| build | 1 s | 2 s |"
    assert cmp.dist_bytes("numpy") > 1_000_000
    assert cmp.dist_bytes("no-such-distribution-xyz") is None


def test_skips_without_transformers(cmp, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers → ImportError
    monkeypatch.setattr(sys, "argv", ["compare_sam3_impl.py", "--no-rss"])
    cmp.main()
    out = capsys.readouterr().out
    assert "transformers with Sam3Model is not importable" in out and "--target" in out

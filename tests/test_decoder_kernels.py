"""The cached-constant decoder's eager CPU kernels (oneDNN products, the raster gather) against its plain
torch ops, the ones a traced pass (ONNX export) records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samgis.engine.backends.sam1 import decoder
from tests.conftest import textured_image


def test_raster_gather_is_the_permuted_copy():
    for b, m, size in [(1, 1, (64, 64)), (2, 3, (64, 64)), (1, 4, (3, 5))]:
        x = torch.randn(b, 16 * size[0] * size[1], m)
        ref = x.view(b, *size, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(b, m, 4 * size[0], 4 * size[1])
        assert torch.equal(decoder.raster_masks(x, size), ref), (b, m, size)


@pytest.mark.skipif(decoder._LINEAR is None, reason="this torch build has no oneDNN (mkldnn) linear")
@pytest.mark.parametrize("rows", [1, 2])
def test_onednn_products_match_the_plain_ops(tiny_engine, monkeypatch, rows):
    """`decode_masks` through oneDNN equals it with `torch.baddbmm` / `addmm` (what MKL runs) to float
    rounding, for one query and a point batch of two."""
    emb = tiny_engine.embed(textured_image(512, 640, seed=11))
    model = tiny_engine.model
    coords = torch.tensor([[[300.0, 200.0], [0.0, 0.0]], [[120.5, 400.0], [0.0, 0.0]]])[:rows]
    labels = torch.tensor([[1, -1], [1, -1]])[:rows]
    with torch.inference_mode():
        sparse, _ = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    grid = tuple(emb.features.shape[-2:])

    def run():
        return [decoder.decode_masks(model, emb.aux, tiny_engine._pos, sparse, mm, grid) for mm in (False, True)]

    fast = run()
    calls = []
    real = decoder._LINEAR
    monkeypatch.setattr(decoder, "_LINEAR", type("Counted", (), {
        "__call__": lambda self, *a: calls.append(1) or real(*a), "binary": real.binary})())
    run()
    assert calls, "the oneDNN path was not taken"
    monkeypatch.setattr(decoder, "_LINEAR", None)
    plain = run()
    for (m_fast, s_fast), (m_plain, s_plain) in zip(fast, plain):
        assert m_fast.shape == m_plain.shape and m_fast.shape[0] == rows
        torch.testing.assert_close(m_fast, m_plain, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(s_fast, s_plain, atol=1e-5, rtol=1e-5)
        assert np.array_equal((m_fast > 0).numpy(), (m_plain > 0).numpy()) or \
            float(((m_fast > 0) != (m_plain > 0)).float().mean()) < 1e-4

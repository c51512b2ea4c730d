"""Concept prompts (`ConceptPrompt`, `Engine.find`): the protocol and the colour engine's concept mode."""

from __future__ import annotations

import numpy as np
import pytest

from samgis.engine.protocol import Capabilities, ConceptPrompt, Engine
from samgis.errors import MissingCapability
from tests.support.colour_engine import ColourRegionEngine, colour_family

BG = (235, 235, 220)


def _image() -> np.ndarray:
    """(60, 80, 3) uint8: beige background, two reds, one green, one exact-blue square."""
    img = np.empty((60, 80, 3), np.uint8)
    img[:] = BG
    img[5:15, 5:20] = (200, 30, 30)     # red A, 150 px
    img[30:50, 50:70] = (225, 45, 35)   # red B, 400 px
    img[5:25, 40:60] = (40, 170, 40)    # green
    img[40:50, 10:20] = (30, 60, 220)   # blue
    return img


CONCEPTS = Capabilities(text=True, exemplars=True)


def test_concept_prompt_checks_its_shape():
    with pytest.raises(ValueError, match="text phrase or at least one exemplar"):
        ConceptPrompt(text="  ")
    with pytest.raises(ValueError, match="2 exemplar boxes but 1 labels"):
        ConceptPrompt(boxes=[[0, 0, 1, 1], [2, 2, 3, 3]], labels=[1])
    c = ConceptPrompt(text=" greenhouse ", boxes=[[0, 0, 4, 4]], labels=[0])
    assert c.text == "greenhouse" and c.boxes.dtype == np.float32 and c.needs() == ["text", "exemplars"]


def test_text_finds_every_region_of_the_family_best_first():
    eng = ColourRegionEngine(capabilities=CONCEPTS)
    assert isinstance(eng, Engine)
    img = _image()
    found = eng.find(eng.embed(img), ConceptPrompt(text="Red"), score_threshold=0.5)
    assert len(found) == 2 and found.masks.shape == (2, 60, 80) and found.masks.dtype == bool
    assert sorted(int(m.sum()) for m in found.masks) == [150, 400]
    assert list(found.scores) == sorted(found.scores, reverse=True)
    for m, s, b in zip(found.masks, found.scores, found.boxes):
        rgb = tuple(int(v) for v in img[m][0])
        assert s == pytest.approx(1 - colour_family(rgb)[1] / 442.0)
        rows, cols = np.nonzero(m)
        assert list(b) == [cols.min(), rows.min(), cols.max(), rows.max()]
    assert len(eng.find(eng.embed(img), ConceptPrompt(text="red"), score_threshold=0.999)) == 0
    assert len(eng.find(eng.embed(img), ConceptPrompt(text="greenhouse"))) == 0


def test_exemplar_boxes_add_and_remove_families():
    eng = ColourRegionEngine(capabilities=CONCEPTS)
    emb = eng.embed(_image())
    green_box = [40, 5, 59, 24]
    found = eng.find(emb, ConceptPrompt(boxes=[green_box], labels=[1]))
    assert len(found) == 1 and int(found.masks[0].sum()) == 400
    both = eng.find(emb, ConceptPrompt(text="red", boxes=[green_box], labels=[1]))
    assert len(both) == 3
    none = eng.find(emb, ConceptPrompt(text="red", boxes=[[5, 5, 19, 14]], labels=[0]))
    assert len(none) == 0
    exact = eng.find(emb, ConceptPrompt(text="#1e3cdc"))
    assert len(exact) == 1 and exact.scores[0] == 1.0 and int(exact.masks[0].sum()) == 100


@pytest.mark.parametrize("needs", ["text", "exemplars"])
def test_models_without_the_capability_refuse_naming_it(needs):
    eng = ColourRegionEngine()  # default capabilities: no concepts
    concept = ConceptPrompt(text="red") if needs == "text" else ConceptPrompt(boxes=[[0, 0, 3, 3]], labels=[1])
    with pytest.raises(MissingCapability, match=f"does not support {needs}"):
        eng.find(eng.embed(_image()), concept)

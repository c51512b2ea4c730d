"""Concept prompts in batch jobs (`samgis batch … --text PHRASE`): every instance of a phrase instead of
automatic masks.

An item (an AOI, or an image of a folder) with a phrase (`AoiItem.text` / `ImageItem.text`) is found with
`Engine.find` where an item without one gets `Engine.generate`; `window_masks` is that one switch, called
where each window / image is decoded. Its records have `Engine.generate`'s form, so everything downstream
(window pieces, stitching across seams, clipping, `--min-area-m2`, COCO RLE) treats instances exactly as
automatic masks.

A model without the "text" capability is refused once, when the job's engine is built
(`ConceptCheckedFactory`), not item by item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from samgis.engine.protocol import ConceptPrompt, Embedding, Engine, FoundInstances, require


def instance_records(found: FoundInstances, concept: str) -> list[dict]:
    """`Engine.generate` records of the instances in `found`, best score first, each with `concept`.

    `found.masks`: (N, H, W) bool, image px (row, col); `found.scores`: (N,) float32. Per record:
    `segmentation` (H, W) bool (the mask itself), `bbox` [x, y, w, h] px of the mask's pixels, `area` px,
    `predicted_iou` = `stability_score` = the instance's score (concept models give one score; stability is
    not theirs), `point_coords` [[x, y]] the mask's first pixel in row-major order (SAM convention: its
    centre), `crop_box` [0, 0, W, H], `concept` the phrase. Empty masks are left out.
    """
    masks = np.asarray(found.masks, bool)
    h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
    records = []
    for mask, score in zip(masks, np.asarray(found.scores, np.float64)):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        first = int(np.flatnonzero(mask[rows[0]])[0])
        records.append({"segmentation": mask,
                        "bbox": [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)],
                        "area": int(mask.sum()), "predicted_iou": float(score), "stability_score": float(score),
                        "point_coords": [[float(first), float(rows[0])]], "crop_box": [0, 0, int(w), int(h)],
                        "concept": concept})
    return records


def window_masks(engine: Engine, embedding: Embedding, cfg, image: np.ndarray, text: str | None) -> list[dict]:
    """The mask records of one window / image: `engine.generate(embedding, cfg.amg, image)` (automatic masks)
    without `text`, else every instance of the phrase scoring ≥ `cfg.score_threshold` (`instance_records`).

    `image`: (H, W, 3) uint8 RGB, the embedded image (image px); records' masks are (H, W) bool in it.
    """
    if not text:
        return engine.generate(embedding, cfg.amg, image)
    return instance_records(engine.find(embedding, ConceptPrompt(text=text), cfg.score_threshold), text)


@dataclass(frozen=True)
class ConceptCheckedFactory:
    """An engine factory whose engine must have the "text" capability: building it raises
    `MissingCapability` (field "text") naming the capability and the model's own capabilities, so a job with
    phrases stops before its first item. Picklable when `factory` is; keeps the factory's `model_key`."""

    factory: Callable

    @property
    def model_key(self) -> str:
        return getattr(self.factory, "model_key", None) or repr(self.factory)

    def __call__(self) -> Engine:
        engine = self.factory()
        require(engine.describe(), ["text"], "text")
        return engine

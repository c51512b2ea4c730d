"""One random-weight SAM 3 of the real architecture per test session, shared by every SAM 3 test module.

Building it (3.4 GB of weights, ~10 s) and encoding one image (one 1008² ViT-L pass, ~40 s on an idle 2-core
CPU) are the cost of a SAM 3 test; `Sam3Case` does both once: the model built by the package's builder
(`build_model(seed=0, init="fast")`), our `Sam3Engine` on it, the package's own `Sam3Processor` on the *same*
model instance, and one image encoded by both, sharing one vision-backbone pass (`tests/support/sam3_backbone.py`
`BackboneReplay`, which also lets later images reuse that pass: see there).

`tests/conftest.py` serves it as the session fixture `sam3_case` and drops it after the last test that asked
for it (`release`), so the rest of the session does not carry its ~4 GB.
"""

from __future__ import annotations

import gc

import numpy as np
import torch

from tests.conftest import textured_image
from tests.support.sam3_backbone import BackboneReplay


def _same(a, b) -> bool:
    """Bit-identical (tensors: dtype, shape and every value), through dicts, lists and tuples."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) or isinstance(b, dict):
        return (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b or (type(a) is type(b) and isinstance(a, (int, float, str, bool, type(None))) and a == b)


def _cloned(v):
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, dict):
        return {k: _cloned(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_cloned(x) for x in v)
    return v


class CallMemo:
    """Stands in for a module's `forward` (the concept detector's encoder, decoder and mask head): keeps the
    last call's arguments and output (copies), and for a call whose arguments are bit-identical hands back a
    copy of that output instead of computing again. The package's processor and our `find` run one prompt
    through the detector once between them, and `reused` proves that we feed it exactly what the processor
    does (arguments that differ in any bit are computed, so a wrong input can never borrow a right output)."""

    def __init__(self, module: torch.nn.Module):
        self.inner, self.key, self.out = module.forward, None, None
        self.computed = self.reused = 0
        module.forward = self

    def __call__(self, *args, **kwargs):
        if self.key is not None and _same((args, kwargs), self.key):
            self.reused += 1
            return _cloned(self.out)
        key = _cloned((args, kwargs))  # before the call: the encoder edits its argument lists in place
        out = self.inner(*args, **kwargs)
        self.key, self.out = key, _cloned(out)
        self.computed += 1
        return out

    def counts(self) -> tuple[int, int]:
        return self.computed, self.reused


class Sam3Case:
    """`model` (seed 0, fast init), `engine` (our `Sam3Engine`, CPU, fp32), `processor` (the package's
    `Sam3Processor`, threshold 0) with `state` = its `set_image` of `image` ((300, 400, 3) uint8 RGB,
    `textured_image(300, 400, seed=3)`), and `embedding` = our `engine.embed(image)`; `backbone` (a
    `BackboneReplay`: the processor reused our pass, `setup_counts`; later images replay it); `detector_memos` ("encoder", "decoder", "mask_head") let a concept
    prompt that the processor and `find` both run go through the detector once (`CallMemo`)."""

    def __init__(self):
        from PIL import Image
        from sam3.model.sam3_image_processor import Sam3Processor

        from samgis.engine.backends.sam3.compat import cpu_only
        from samgis.engine.backends.sam3.engine import Sam3Engine, build_model

        self.model = build_model(seed=0, init="fast")
        self.backbone = BackboneReplay(self.model.backbone.vision_backbone)
        detector = {"encoder": self.model.transformer.encoder, "decoder": self.model.transformer.decoder,
                    "mask_head": self.model.segmentation_head}
        self.detector_memos = {name: CallMemo(module) for name, module in detector.items()}
        self.engine = Sam3Engine(self.model, "sam3", device="cpu")
        self.image: np.ndarray = textured_image(300, 400, seed=3)
        self.embedding = self.engine.embed(self.image)
        self.processor = Sam3Processor(self.model, device="cpu", confidence_threshold=0.0)
        with cpu_only():
            self.state = self.processor.set_image(Image.fromarray(self.image))
        # (computed, reused, replayed) backbone passes: our embed computed it, the processor's set_image reused it
        self.setup_counts = (self.backbone.computed, self.backbone.reused, len(self.backbone.replayed))

    def release(self) -> None:
        """Drop everything (model, features, processor state) and collect: the memory goes back."""
        vars(self).clear()
        gc.collect()

"""Low-res mask logits → masks in the image frame, on the CPU, shared by the sam1, sam2 and onnx backends.

SAM's post-processing is bilinear resizing (`F.interpolate(mode="bilinear", align_corners=False)`: half-pixel
centres, no antialiasing, edge-clamped) and a threshold. On one 256² logit map going to a 1024² window,
PyTorch's CPU kernel takes ~1.9 ms (one channel gives it nothing to vectorise over) where OpenCV's
`cv2.resize(INTER_LINEAR)` — the same sampling rule: source x = (x' + 0.5)·scale − 0.5, clamped to the
edges, two-tap linear weights per axis — takes ~0.2 ms and gives the same values to float rounding
(≤ 5e-7 on unit-variance logits). The threshold then runs on the numpy result.
"""

from __future__ import annotations

import cv2
import numpy as np

CV_MAX_SIDE = 32767  # OpenCV's image sides are ints, but keep to the range every cv2 code path accepts


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) float32 logits → (..., H, W) float32, (H, W) = `size`: `F.interpolate(x, size,
    mode="bilinear", align_corners=False)` computed with `cv2.resize` (see the module docstring).
    Plane by plane; a C-contiguous float32 copy is made when `x` is not one."""
    x = np.ascontiguousarray(x, np.float32)
    h, w = int(size[0]), int(size[1])
    if min(h, w) < 1 or max(h, w) > CV_MAX_SIDE or max(x.shape[-2:]) > CV_MAX_SIDE:
        raise ValueError(f"cannot resize {x.shape[-2:]} to {size}: sides must be 1..{CV_MAX_SIDE}")
    planes = x.reshape(-1, *x.shape[-2:])
    out = np.empty((planes.shape[0], h, w), np.float32)
    for i, plane in enumerate(planes):
        cv2.resize(plane, (w, h), dst=out[i], interpolation=cv2.INTER_LINEAR)
    return out.reshape(*x.shape[:-2], h, w)


def postprocess_masks(low_res: np.ndarray, input_size: tuple[int, int] | None, original_size: tuple[int, int],
                      image_size: int, threshold: float = 0.0) -> np.ndarray:
    """(Q, M, l, l) float32 low-res logits → (Q, M, H, W) bool masks in the original image frame (H, W) =
    `original_size`, logits > `threshold`.

    `input_size` (h, w): SAM 1's rule (`Sam.postprocess_masks`): bilinear to `image_size`², crop the
    unpadded (h, w), bilinear to (H, W) (the last step skipped when (h, w) = (H, W), where it is the
    identity). `input_size=None`: SAM 2's rule (`SAM2Transforms.postprocess_masks`): the whole S × S frame
    is the stretched image, so one bilinear resize straight to (H, W).
    """
    if input_size is None:
        logits = resize_bilinear(low_res, original_size)
    else:
        logits = resize_bilinear(low_res, (image_size, image_size))[..., : input_size[0], : input_size[1]]
        if tuple(input_size) != tuple(original_size):
            logits = resize_bilinear(logits, original_size)
    return logits > threshold

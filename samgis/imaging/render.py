"""Pictures for people: an image with its masks, points and boxes drawn over it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)


def overlay(image: np.ndarray, masks: list[np.ndarray], points: np.ndarray | None = None,
            labels: np.ndarray | None = None, boxes: np.ndarray | None = None, alpha: float = 0.5) -> Image.Image:
    """RGB picture of `image` (H, W, 3) uint8 with each (H, W) bool mask tinted and outlined in its colour,
    points (image px, SAM convention) as green (include) / red (exclude) dots and boxes as rectangles."""
    out = image.astype(np.float32)
    edges = np.zeros(image.shape[:2], np.int32) - 1
    for k, mask in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edges[mask & ~inner] = k
    picture = out.round().astype(np.uint8)
    on_edge = edges >= 0
    picture[on_edge] = PALETTE[edges[on_edge] % len(PALETTE)]
    pil = Image.fromarray(picture)
    draw = ImageDraw.Draw(pil)
    r = max(3, round(max(image.shape[:2]) / 150))
    for (x0, y0, x1, y1) in ([] if boxes is None else boxes):
        draw.rectangle([x0, y0, x1, y1], outline=(255, 255, 0), width=max(1, r // 2))
    for (x, y), lab in zip([] if points is None else points, [] if labels is None else labels):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 200, 0) if lab == 1 else (220, 0, 0),
                     outline=(255, 255, 255))
    return pil

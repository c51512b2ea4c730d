"""Following one prompted object across window seams: which neighbouring windows its mask runs into, where to
prompt it there, and how the pieces of all windows merge into one mask.

Shared by batch map items (`samgis.batch.work`) and interactive clicks (`samgis.services.follow`).

Frames. A window's mask is (size, size) bool in window px (row, col; rasterio convention, pixel i spans
[i, i + 1)). The windows of one grid level (one zoom of the Web-Mercator tile grid, or one level of a raster's
grid) share one global pixel grid, so pixels of overlapping windows coincide exactly; a window's *origin* is
the global px (col, row) of its NW pixel, and a neighbour is described by its `shift` (sx, sy) = its origin
minus this window's origin, in px.

Neighbour prompts are derived from the mask, never invented: the mask pixel farthest from the mask's outline
inside the overlap of the two windows (so it lies on the object, in pixels both windows see).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage


def seam_directions(mask: np.ndarray) -> list[tuple[int, int]]:
    """The neighbour directions (dx, dy) (x east, y south; diagonals included) that `mask` runs into.

    `mask`: (size, size) bool, window px. A direction qualifies when the mask touches the window's edge on
    each side it names: (1, 0) the east edge, (1, 1) the east and the south edges. Row-major order (dy, then
    dx, from -1 to 1).

    >>> m = np.zeros((4, 4), bool); m[1:3, 2:] = True
    >>> seam_directions(m)
    [(1, 0)]
    >>> m[3, 3] = True
    >>> seam_directions(m)
    [(1, 0), (0, 1), (1, 1)]
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    edge = {(1, 0): mask[:, -1].any(), (-1, 0): mask[:, 0].any(), (0, 1): mask[-1, :].any(),
            (0, -1): mask[0, :].any()}
    return [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if (dx, dy) != (0, 0) and not (dx and not edge[(dx, 0)]) and not (dy and not edge[(0, dy)])]


def depth(mask: np.ndarray) -> np.ndarray:
    """(size, size) float64: each mask pixel's Euclidean distance (px) to the nearest pixel off the mask (0 off
    it; a mask filling the window is measured to the window's border as SciPy's transform does). `mask`:
    (size, size) bool, window px. Compute once per mask and pass to `seam_point`.

    The transform runs on the mask's bounding box grown by one px (where the window allows) only: that ring is
    all off-mask, and any off-mask pixel beyond it is no nearer than its clamp onto the ring (clamping towards
    a box holding the pixel never grows |dx| or |dy|), so the distances are exactly those of the whole window.

    >>> m = np.zeros((9, 9), bool); m[2:7, 3:9] = True
    >>> bool(np.array_equal(depth(m), ndimage.distance_transform_edt(m)))
    True
    """
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, np.float64)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    r0, r1 = max(0, int(rows[0]) - 1), min(mask.shape[0], int(rows[-1]) + 2)
    c0, c1 = max(0, int(cols[0]) - 1), min(mask.shape[1], int(cols[-1]) + 2)
    out[r0:r1, c0:c1] = ndimage.distance_transform_edt(mask[r0:r1, c0:c1])
    return out


def seam_point(mask_depth: np.ndarray, shift: tuple[int, int]) -> np.ndarray | None:
    """The prompt that carries an object into a neighbouring window, or None when it has no pixel there.

    `mask_depth`: (size, size) float64 `depth` of the object's mask in this window (window px); `shift`:
    (sx, sy) px, the neighbour's origin minus this window's origin (same grid level, same size). Returns
    (1, 2) float64 (x, y) in the *neighbour's* window px, SAM convention (integers are pixel centres): the mask
    pixel deepest inside the two windows' overlap, the first in row-major order on ties.

    >>> m = np.zeros((8, 8), bool); m[2:6, 3:8] = True
    >>> seam_point(depth(m), (4, 0)).tolist()  # neighbour 4 px east: the overlap is columns 4..7 here
    [[0.0, 3.0]]
    """
    size_y, size_x = mask_depth.shape
    sx, sy = int(shift[0]), int(shift[1])
    rows = slice(max(0, sy), min(size_y, size_y + sy))
    cols = slice(max(0, sx), min(size_x, size_x + sx))
    zone = mask_depth[rows, cols]
    if zone.size == 0 or zone.max() <= 0:
        return None
    r, c = np.unravel_index(int(np.argmax(zone)), zone.shape)
    return np.array([[c + cols.start - sx, r + rows.start - sy]], np.float64)


def prompts_in_window(points: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                      size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The part of an object's prompts one window sees: points inside it, boxes clipped to it.

    `points`: (N, 2) float64 (col, row) continuous window px (rasterio convention) with (N,) int32 `labels`;
    `boxes`: (B, 4) float64 (col0, row0, col1, row1) window px; `size`: the window's side in px. Points not
    strictly inside (0, size) are dropped; boxes are clipped to [0, size] and those left empty dropped. Returns
    (points (n, 2), labels (n,), boxes (b, 4)) in window px, SAM convention (rasterio px - 0.5), and the indices
    of the boxes kept.

    >>> p, l, b, kept = prompts_in_window(np.array([[5.5, 5.5], [12.0, 1.0]]), np.array([1, 0]),
    ...                                   np.array([[-3.0, 2.0, 6.0, 4.0], [11.0, 0.0, 14.0, 2.0]]), 10)
    >>> p.tolist(), l.tolist(), b.tolist(), kept
    ([[5.0, 5.0]], [1], [[-0.5, 1.5, 5.5, 3.5]], [0])
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    lab = np.asarray(labels, np.int32).reshape(-1)
    inside = np.all((pts > 0) & (pts < size), axis=1)
    box = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, float(size))
    kept = [i for i in range(len(box)) if box[i, 2] > box[i, 0] and box[i, 3] > box[i, 1]]
    return pts[inside] - 0.5, lab[inside], box[kept] - 0.5, kept


def merge_pieces(pieces: Mapping[tuple[int, int], np.ndarray]) -> tuple[tuple[int, int], np.ndarray]:
    """OR the masks of one object from several windows of one grid level into one mask.

    `pieces`: origin (col, row) global px → (h, w) bool mask in that window's px. Returns (origin, canvas):
    canvas (H, W) bool covering the union of the pieces' extents, its NW pixel at global px `origin`.

    >>> o, c = merge_pieces({(0, 0): np.ones((2, 2), bool), (1, 1): np.eye(2, dtype=bool)})
    >>> o, c.astype(int).tolist()
    ((0, 0), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    """
    if not pieces:
        raise ValueError("no pieces to merge")
    x0 = min(c for c, _ in pieces)
    y0 = min(r for _, r in pieces)
    x1 = max(c + m.shape[1] for (c, _), m in pieces.items())
    y1 = max(r + m.shape[0] for (_, r), m in pieces.items())
    canvas = np.zeros((y1 - y0, x1 - x0), bool)
    for (c, r), m in pieces.items():
        canvas[r - y0:r - y0 + m.shape[0], c - x0:c - x0 + m.shape[1]] |= np.asarray(m, bool)
    return (x0, y0), canvas

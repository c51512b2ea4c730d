"""Objects larger than a window (`SegmentQuery.window_budget` > 1): which windows a click decodes in, following
a point-prompted mask that touches its window's edge into the neighbouring lattice windows, and merging the
pieces into one mask per query and mask (rules for seams and merging: `samgis.vector.seams`, shared with batch
map items).

A *chain* is one (query, mask) pair's pieces: window key → (window, (size, size) bool mask in window px
(rasterio convention), score). The windows of one grid level share one pixel grid, so pieces merge exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np
from affine import Affine

from samgis.engine.protocol import Prompts
from samgis.errors import LimitExceeded
from samgis.geo.sources import TileSource
from samgis.services.map_features import feature_properties
from samgis.services.map_query import SegmentQuery
from samgis.services.map_windows import MapWindows
from samgis.services.timing import Timer
from samgis.vector.polygons import masks_to_features
from samgis.vector.postprocess import ANSWER_MAX_VERTICES
from samgis.vector.seams import depth, merge_pieces, prompts_in_window, seam_directions, seam_point


def home_windows(windows: MapWindows, source: TileSource, lnglat: np.ndarray, q: SegmentQuery) -> list:
    """The windows the prompts are decoded in first: one window holding them all (`choose_window`), or,
    for box prompts that fit no window at the requested zoom, the fewest lattice windows covering them
    (`Reader.cover`) when they are no more than `q.window_budget`. lnglat: (N, 2) float64 degrees."""
    reader = windows.readers(source)
    if q.boxes and q.window_budget > 1:
        level = next(iter(reader.window_candidates(lnglat, q.zoom, 0)), None)
        if level is not None and not level[1]:
            cover = reader.cover(lnglat, q.zoom)
            if len(cover) <= q.window_budget:
                return cover
    return [windows.choose_window(source, lnglat, q.zoom)]


def check_follow_pixels(max_mask_pixels: int | None, window_px: int, q: SegmentQuery, homes: list,
                        pts: np.ndarray, labels: np.ndarray, corners: np.ndarray) -> None:
    """`max_mask_pixels` over every window the answer may use (a follow keeps each window's masks until they
    merge): the boxes each cover window decodes, or the point query's masks in up to `window_budget`
    windows, each of `window_px` pixels. `pts`, `labels`, `corners`: as `window_prompts`. One window's share is
    checked with the click's other limits."""
    if max_mask_pixels is None or (len(homes) == 1 and q.window_budget == 1):
        return
    per_query, px = 3 if q.multimask else 1, window_px
    if q.boxes:
        queries = sum(len(window_prompts(w, pts, labels, corners)[1]) for w in homes)
        what = f"{queries} box decodes over {len(homes)} windows"
    else:
        queries = q.window_budget
        what = f"a point query followed into up to {queries} windows"
    total = queries * per_query * px
    if total > max_mask_pixels:
        raise LimitExceeded("window_budget", f"{what} × {per_query} masks × {px} window px = {total} decoded "
                                             f"mask pixels, over the limit of {max_mask_pixels}; lower "
                                             "window_budget, or send no multimask", "max_mask_pixels")


def window_prompts(window, pts: np.ndarray, labels: np.ndarray,
                   corners: np.ndarray) -> tuple[Prompts | None, list[int]]:
    """The prompts of one window and the query index of each of its queries, or (None, []) when it gets no
    query. `pts`: (N, 2) float64 lng/lat with (N,) int32 `labels`; `corners`: (2B, 2) float64 lng/lat, each
    box's NW then SE corner. Points outside the window are dropped and boxes clipped to it (a box that
    misses it is dropped), as in batch; the window holding all prompts gets them all unchanged."""
    px = window.lnglat_to_px(pts) if len(pts) else np.zeros((0, 2))
    box_px = window.lnglat_to_px(corners).reshape(-1, 4) if len(corners) else np.zeros((0, 4))
    points, lab, boxes, kept = prompts_in_window(px, labels, box_px, window.size)
    if not len(corners):
        return (Prompts(points=points, labels=lab), [0]) if len(points) else (None, [])
    return (Prompts(points=points, labels=lab, boxes=boxes), kept) if kept else (None, [])


async def follow(windows: MapWindows, source: TileSource, q: SegmentQuery, home, chains: list[dict],
                 pts: np.ndarray, labels: np.ndarray, used: dict, embed, timer: Timer) -> bool:
    """Follow each mask of the point query across window seams, within `q.window_budget` windows in all.

    `chains`: mask k → window key → (window, mask, score), holding the home window's decode; filled in
    place. `pts`: (N, 2) float64 lng/lat with (N,) int32 `labels`. `used`: window key → (window, cache hit) of
    the windows embedded so far, `embed(window)` embeds one more (and records it in `used`). Breadth first from
    the home window: when a mask touches its window's edge (diagonals too), the
    neighbouring lattice window that way (`neighbour`) is decoded with one include point, the mask pixel
    deepest inside the two windows' overlap (`samgis.vector.seams.seam_point`, the rule batch map items
    follow seams by), plus the query's exclude points inside it; with multimask, mask k of that decode
    continues mask k (same granularity). Each window is embedded through the cache and the encoder queue
    like any click; the time spent finding seam points is the `seams` stage of `timings_ms`. Returns whether the
    budget stopped a mask that went on (stopped_by_budget)."""
    queue: deque = deque()
    stopped = False
    excl = pts[labels == 0]

    def seeds(window, k: int, mask: np.ndarray) -> None:
        nonlocal stopped
        mask_depth = None
        for dx, dy in seam_directions(mask):
            nb = window.neighbour(dx, dy)
            if nb is None or nb.key() in chains[k]:
                continue
            if nb.key() not in used and len(used) >= q.window_budget:
                stopped = True
                continue
            if mask_depth is None:
                mask_depth = depth(mask)
            (c0, r0), (c1, r1) = window.origin_px(), nb.origin_px()
            point = seam_point(mask_depth, (c1 - c0, r1 - r0))
            if point is not None:
                queue.append((nb, k, point))

    # the distance transforms behind seam points take a while on big masks: off the event loop
    for k, pieces in enumerate(chains):
        if home.key() in pieces:
            t0 = time.perf_counter()
            await asyncio.to_thread(seeds, home, k, pieces[home.key()][1])
            timer.add("seams", t0)
    while queue:
        window, k, point = queue.popleft()
        if window.key() in chains[k]:
            continue
        if window.key() not in used and len(used) >= q.window_budget:
            stopped = True
            continue
        emb = await embed(window)
        valid = await windows.readers(source).valid_mask(window)
        ex = window.lnglat_to_px(excl) if len(excl) else np.zeros((0, 2))
        ex, _, _, _ = prompts_in_window(ex, np.zeros(len(ex), np.int32), np.zeros((0, 4)), window.size)
        prompts = Prompts(points=np.vstack([point, ex]), labels=np.array([1] + [0] * len(ex), np.int32))
        t0 = time.perf_counter()
        result = await windows.engine.adecode(emb, prompts, q.multimask)
        timer.add("decode", t0)
        mask = np.asarray(result.masks[0, k], dtype=bool)
        if valid is not None:
            mask = mask & valid
        chains[k][window.key()] = (window, mask, float(result.scores[0, k]))
        t0 = time.perf_counter()
        await asyncio.to_thread(seeds, window, k, mask)
        timer.add("seams", t0)
    return stopped


def merged(pieces: list[tuple], home) -> tuple[np.ndarray, Affine, float]:
    """One mask from the pieces (window, (size, size) bool mask, score) of windows of one grid level:
    ((H, W) bool mask, its px → CRS affine, the score of the window holding the largest part)."""
    if len(pieces) == 1:
        w, m, score = pieces[0]
        return m, w.affine(), score
    parts: dict = {}
    for w, m, _ in pieces:
        o = w.origin_px()
        parts[o] = parts[o] | m if o in parts else m
    (c0, r0), canvas = merge_pieces(parts)
    hc, hr = home.origin_px()
    score = max(pieces, key=lambda p: int(np.count_nonzero(p[1])))[2]
    return canvas, home.affine() @ Affine.translation(c0 - hc, r0 - hr), score


def chains_features(chains: list[list[dict]], home, source: TileSource, model_id: str,
                    q: SegmentQuery) -> list[dict]:
    """Each chain's merged mask → GeoJSON features (EPSG:4326), numbered `mask_index` = qi * M + k; with a
    window budget above 1 each carries `windows`, the number of windows its mask was decoded in. `chains`:
    query qi → mask k → chain (see the module docstring)."""
    props = feature_properties(home, source, model_id)

    def counted(n: int) -> dict:
        return {"windows": n} if q.window_budget > 1 else {}

    n_m = len(chains[0])
    if q.merge_masks:  # one feature: the union of every mask
        pieces = [p for query in chains for chain in query for p in chain.values()]
        if not pieces:
            return []
        mask, transform, _ = merged(pieces, home)
        best = max(p[2] for p in pieces)
        windows = len({p[0].key() for p in pieces})
        return masks_to_features(mask[None], np.array([best]), transform, simplify_px=q.simplify_px,
                                 min_area_px=q.min_area_px, properties={**props, **counted(windows)},
                                 crs=home.crs, postprocess=q.postprocess,
                                 postprocess_max_vertices=ANSWER_MAX_VERTICES)
    features: list[dict] = []
    for qi, query in enumerate(chains):
        for k, chain in enumerate(query):
            if not chain:
                continue
            mask, transform, score = merged(list(chain.values()), home)
            features.extend(masks_to_features(
                mask[None], np.array([score]), transform, simplify_px=q.simplify_px, min_area_px=q.min_area_px,
                properties={**props, "prompt_index": qi, **counted(len(chain))}, first_index=qi * n_m + k,
                crs=home.crs, postprocess=q.postprocess, postprocess_max_vertices=ANSWER_MAX_VERTICES))
    return features

"""Orchestration of map requests: `SegmentService`, and one map click: prompts → window → tiles → embedding →
masks → GeoJSON.

The other map requests run through the same windows and the same embedding cache (`samgis.services.map_windows`):
concept prompts in a bbox (`samgis.services.map_find`) and automatic masks of the window holding one point
(`samgis.services.map_everything`). Objects larger than a window (`SegmentQuery.window_budget` > 1) are followed
across window seams and merged (`samgis.services.follow`); answers are built in `samgis.services.map_features`.

HTTP-free: `api/` turns requests into `SegmentQuery` / `EverythingQuery` (`samgis.services.map_query`) and errors
into status codes.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from samgis.encoder_queue import EncoderQueue
from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import Embedding, Engine, require
from samgis.errors import InvalidRequest, LimitExceeded
from samgis.geo.fetch import TileFetcher
from samgis.geo.readers import Readers
from samgis.geo.sources import SourceRegistry, TileSource
from samgis.services import follow, map_everything, map_find
from samgis.services.limits import MapLimits
from samgis.services.map_features import answer, answer_meta
from samgis.services.map_query import MAX_WINDOW_BUDGET, EverythingQuery, SegmentQuery
from samgis.services.map_windows import MapWindows
from samgis.services.timing import Timer, within_deadline


class SegmentService:
    """Shared by all requests; holds no per-request state."""

    def __init__(self, engine: Engine, cache: EmbeddingCache, sources: SourceRegistry, fetcher: TileFetcher,
                 *, window_tiles: int = 4, max_zoom_steps: int = 4, max_prompts: int = 100,
                 max_points_per_side: int = 32, max_grid_points: int | None = None,
                 max_mask_pixels: int | None = None, max_answer_vertices: int | None = None,
                 encoder_queue: EncoderQueue | None = None, deadline_s: float | None = None,
                 everything_deadline_s: float | None = None, readers: Readers | None = None):
        """`deadline_s` / `everything_deadline_s`: seconds a click / an automatic-mask request may take in all
        (None = no deadline); tile fetching fits in what is left of it, past it → `DeadlineExceeded`.
        `max_grid_points` (automatic-mask grid points per 1024² px of window), `max_mask_pixels` (prompted
        masks × window px) and `max_answer_vertices` (polygon vertices of one answer) bound one request's
        work; None = unbounded (`MapLimits`)."""
        self.engine = engine
        self.windows = MapWindows(engine, cache, sources, readers or Readers(fetcher, window_px=window_tiles * 256),
                                  encoder_queue, max_zoom_steps)
        self.limits = MapLimits(max_prompts=max_prompts, max_points_per_side=max_points_per_side,
                                max_grid_points=max_grid_points, max_mask_pixels=max_mask_pixels,
                                max_answer_vertices=max_answer_vertices, deadline_s=deadline_s,
                                everything_deadline_s=everything_deadline_s)

    async def segment(self, q: SegmentQuery) -> dict:
        """Run one query; returns an RFC 7946 FeatureCollection with a `samgis` foreign member (concept prompts:
        see `samgis.services.map_find.find`).

        Within the deadline the whole answer is made or none is: when the deadline runs out while the object is
        being followed into more windows, the 504 says how far it got (never a partial polygon passed off as
        whole)."""
        used: dict = {}

        def progress() -> str:
            if q.window_budget <= 1 or not used:
                return ""
            return (f"; it was following the object across windows and had embedded {len(used)} of at most "
                    f"{q.window_budget} (window_budget): a smaller window_budget answers sooner")

        async with within_deadline(self.limits.deadline_s, "deadline_s", progress) as until:
            if q.is_concept:
                return await map_find.find(self.windows, self.limits, q, until)
            return await self._segment(q, until, used)

    async def segment_everything(self, q: EverythingQuery) -> dict:
        """Every mask SAM's automatic generator finds in the window holding (q.lng, q.lat) at q.zoom (with
        `q.text`: every instance of the phrase there).

        The window is the one a click there would get (`MapWindows.choose_window`), so the embedding is shared
        with `segment` through the cache. Returns an RFC 7946 FeatureCollection, one feature per mask, best
        score first, with the `samgis` foreign member of `segment` plus `n_masks`, `n_generated` (masks
        before the area filters and deduplication) and `generator` (the options used).
        """
        async with within_deadline(self.limits.everything_deadline_s, "everything_deadline_s") as until:
            return await map_everything.segment_everything(self.windows, self.limits, q, until)

    # -- the click ----------------------------------------------------------------------------
    def _validate(self, q: SegmentQuery) -> TileSource:
        """The source of a click query, every prompt and option checked (422 naming it; over a limit: 413)."""
        source = self.windows.source(q.source, q.zoom)
        b = q.bbox
        b.check()
        if q.score_threshold is not None:
            raise InvalidRequest("score_threshold", "applies to concept prompts (text / exemplar) only; point and "
                                                    "box prompts answer every mask they decode")
        n = len(q.points) + len(q.boxes)
        if n == 0:
            raise InvalidRequest("prompts", "at least one point or box prompt is needed")
        if n > self.limits.max_prompts:
            raise InvalidRequest("prompts", f"{n} prompts; at most {self.limits.max_prompts} are allowed")
        if q.points and not any(p.label == 1 for p in q.points) and not q.boxes and not q.exclude_only:
            raise InvalidRequest("prompts", "exclude points alone select nothing: add an include point or a box")
        for i, p in enumerate(q.points):
            if not b.contains(p.lng, p.lat):
                raise InvalidRequest(f"prompts[{i}]", f"point (lat {p.lat}, lng {p.lng}) is outside the bbox")
        for j, box in enumerate(q.boxes):
            i = len(q.points) + j
            if not (box.south < box.north and box.west < box.east):
                raise InvalidRequest(f"prompts[{i}]", "box sw must be south-west of ne")
            if not (b.contains(box.west, box.south) and b.contains(box.east, box.north)):
                raise InvalidRequest(f"prompts[{i}]", "box is not inside the bbox")
        if q.simplify_px < 0:
            raise InvalidRequest("simplify_px", "must be ≥ 0")
        if not (type(q.window_budget) is int and 1 <= q.window_budget <= MAX_WINDOW_BUDGET):
            raise InvalidRequest("window_budget", f"must be an integer in [1, {MAX_WINDOW_BUDGET}], "
                                                  f"got {q.window_budget!r}")
        if q.postprocess is not None:
            q.postprocess.check()
        card = self.engine.describe()
        require(card, (["points"] if q.points else []) + (["boxes"] if q.boxes else []), "prompts")
        require(card, ["multimask"] if q.multimask else [], "multimask")
        limit = self.limits.max_mask_pixels
        queries, per_query, px = len(q.boxes) or 1, 3 if q.multimask else 1, self.windows.window_px(source)
        if limit is not None and queries * per_query * px > limit:
            raise LimitExceeded("prompts", f"{queries} queries × {per_query} masks × {px} window px = "
                                           f"{queries * per_query * px} decoded mask pixels, over the limit of "
                                           f"{limit}; send fewer boxes or no multimask", "max_mask_pixels")
        return source

    async def _segment(self, q: SegmentQuery, deadline: float | None, used: dict) -> dict:
        """One click of point/box prompts. `deadline`: `time.monotonic()` instant for the tile fetch; `used`:
        filled with window key → (window, cache hit) as windows are embedded, in order."""
        t_start = time.perf_counter()
        timer = Timer()
        windows = self.windows
        source = self._validate(q)
        pts = np.array([[p.lng, p.lat] for p in q.points], np.float64).reshape(-1, 2)
        labels = np.array([p.label for p in q.points], np.int32)
        # box corners top-left then bottom-right, so in px each box is (x0, y0, x1, y1), y down
        corners = np.array([((b.west, b.north), (b.east, b.south)) for b in q.boxes],
                           np.float64).reshape(-1, 2)
        homes = follow.home_windows(windows, source, np.vstack([pts, corners]), q)
        follow.check_follow_pixels(self.limits.max_mask_pixels, windows.window_px(source), q, homes, pts, labels,
                                   corners)
        valid = {}
        for w in homes:
            valid[w.key()] = await windows.valid(source, w, pts, labels, all_inside=len(homes) == 1)
        timer.add("validate", t_start)

        async def embed(window) -> Embedding:
            emb, hit = await windows.embedding_for(source, window, timer, deadline)
            used.setdefault(window.key(), (window, hit))
            return emb

        n_q, n_m = max(1, len(q.boxes)), 3 if q.multimask else 1
        # chain (query qi, mask k) → window key → (window, (size, size) bool mask window px, score)
        chains: list[list[dict]] = [[{} for _ in range(n_m)] for _ in range(n_q)]
        for w in homes:
            emb = await embed(w)
            prompts, queries = follow.window_prompts(w, pts, labels, corners)
            if prompts is None:
                continue
            t0 = time.perf_counter()
            result = await self.engine.adecode(emb, prompts, q.multimask)
            timer.add("decode", t0)
            masks = np.asarray(result.masks, dtype=bool)
            if valid[w.key()] is not None:  # masks never include nodata px
                masks = masks & valid[w.key()]
            for j, qi in enumerate(queries):
                for k in range(n_m):
                    chains[qi][k][w.key()] = (w, masks[j, k], float(result.scores[j, k]))
        stopped = False
        if not q.boxes:  # a box bounds its object: only point prompts are followed across seams
            stopped = await follow.follow(windows, source, q, homes[0], chains[0], pts, labels, used, embed, timer)
        t0 = time.perf_counter()
        features = await asyncio.to_thread(follow.chains_features, chains, homes[0], source, self.engine.model_id, q)
        timer.add("vectorize", t0)
        home, hit = next(iter(used.values()))
        meta = answer_meta(home, q.zoom, hit, timer, self.engine.model_id, source, q.postprocess)
        meta["windows"] = [{**w.meta(), "cache": "hit" if h else "miss"} for w, h in used.values()]
        meta["follow"] = {"window_budget": q.window_budget, "stopped_by_budget": stopped}
        return answer(features, meta, timer, t_start, self.limits.max_answer_vertices)

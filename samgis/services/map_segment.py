"""Orchestration of one map click: prompts → window → tiles → embedding → masks → GeoJSON.

Also the map version of automatic masks (`segment_everything`): every mask SAM finds in the window holding
one lng/lat point, through the same windows and the same embedding cache as clicks.

Concept prompts (a text phrase and/or exemplar boxes, `samgis.services.concepts` has the rules) find every
instance of the concept: in `segment`, on the window holding the whole bbox (the area searched, clipped to the
source's footprint, e.g. a raster's extent; instances whose mask has a pixel in the bbox are returned whole); in
`segment_everything` with `text`, on the window holding the point. Both use the windows and the embedding cache
of clicks, so a concept on a window already clicked does not embed again.

Objects larger than a window (`SegmentQuery.window_budget` > 1): a point-prompted mask that touches its window's
edge is followed into the neighbouring lattice windows, and a box that fits no window is decoded in each window
covering it; the pieces merge on the grid level's pixel grid into one polygon per mask (`samgis.vector.seams`
holds the rules, shared with batch map items).

HTTP-free: `api/` turns requests into `SegmentQuery` and errors into status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine

from samgis.encoder_queue import EncoderQueue
from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import AmgOptions, ConceptPrompt, Embedding, Engine, FoundInstances, Prompts, require
from samgis.errors import DeadlineExceeded, InvalidRequest, LimitExceeded
from samgis.geo.fetch import TileFetcher
from samgis.geo.readers import Readers
from samgis.geo.sources import SourceRegistry, TileSource
from samgis.geo.tiles import MAX_LAT, Window
from samgis.services.concepts import (check_score_threshold, check_text, concept_label, exemplar_counts,
                                      require_concept)
from samgis.vector.polygons import (
    drop_near_duplicates,
    feature_collection,
    mask_to_px_geometry,
    masks_to_features,
    px_geometries_to_features,
)
from samgis.vector.postprocess import ANSWER_MAX_VERTICES, PostProcess, describe as describe_postprocess
from samgis.vector.seams import depth, merge_pieces, prompts_in_window, seam_directions, seam_point

DEDUPE_IOU = 0.9
"""Automatic masks whose polygon overlaps a better-scored one's with at least this IoU are dropped."""

MAX_WINDOW_BUDGET = 16
"""Most windows one click may use (`SegmentQuery.window_budget`): each is an encoder pass when not cached."""


@dataclass(frozen=True)
class PointPrompt:
    lng: float
    lat: float
    label: int = 1  # 1 include, 0 exclude


@dataclass(frozen=True)
class BoxPrompt:
    west: float
    south: float
    east: float
    north: float


@dataclass(frozen=True)
class TextPrompt:
    """A concept phrase; `index`: its position in the request's prompt list (for error messages)."""

    text: str
    index: int | None = None


@dataclass(frozen=True)
class ExemplarPrompt:
    """An exemplar box (lng/lat degrees); label 1 = positive ("more like this"), 0 = negative."""

    west: float
    south: float
    east: float
    north: float
    label: int = 1
    index: int | None = None


@dataclass(frozen=True)
class BBox:
    west: float
    south: float
    east: float
    north: float

    def contains(self, lng: float, lat: float) -> bool:
        return self.west <= lng <= self.east and self.south <= lat <= self.north


@dataclass
class SegmentQuery:
    """One segmentation request in lng/lat degrees (EPSG:4326)."""

    bbox: BBox
    zoom: int
    source: str
    points: Sequence[PointPrompt] = ()
    boxes: Sequence[BoxPrompt] = ()
    multimask: bool = False
    simplify_px: float = 1.0
    min_area_px: float = 0.0
    exclude_only: bool = False
    """Decode a prompt of only exclude points (SamGIS does) instead of refusing it as selecting nothing."""
    merge_masks: bool = False
    """Vectorize the union of all decoded masks as one raster (SamGIS's `mask[m > 0] = 255` over its
    predictions) instead of one feature per mask: one feature whose geometry holds every foreground shape."""
    # -- objects larger than a window ("follow") --
    window_budget: int = 1
    """Most windows the answer may use (1 … MAX_WINDOW_BUDGET). Above 1, a point-prompted mask that touches
    its window's edge is followed into the neighbouring lattice windows (`SegmentService._follow`), and a box
    larger than a window is decoded in each window it covers; the pieces merge into one polygon per mask.
    1: one window, the object cut at its edge (the metadata then says whether it continues)."""
    # concept prompts (never together with points/boxes; see samgis.services.concepts)
    texts: Sequence[TextPrompt] = ()
    exemplars: Sequence[ExemplarPrompt] = ()
    score_threshold: float | None = None
    """Concept prompts only; None = the default (0.5). Given with point/box prompts it is refused."""

    postprocess: PostProcess | None = None
    """`samgis.vector.postprocess.Regularize` or `Smooth` applied to every outline in window px (None: off)."""

    @property
    def is_concept(self) -> bool:
        return bool(self.texts or self.exemplars)


@dataclass
class EverythingQuery:
    """Automatic masks of the window holding (lng, lat) degrees EPSG:4326 at `zoom`.

    Grid and filter options are `SamAutomaticMaskGenerator`'s (without crops). `simplify_px` and
    `min_area_px` (polygon parts) mean what they mean in `SegmentQuery`; `min_area_m2` drops whole masks
    whose geodesic area is smaller (measured after `postprocess`, as in `SegmentQuery`).
    """

    lng: float
    lat: float
    zoom: int
    source: str
    points_per_side: int = AmgOptions.points_per_side
    pred_iou_thresh: float = AmgOptions.pred_iou_thresh
    stability_score_thresh: float = AmgOptions.stability_score_thresh
    box_nms_thresh: float = AmgOptions.box_nms_thresh
    simplify_px: float = 1.0
    min_area_px: float = 0.0
    min_area_m2: float = 0.0
    text: str | None = None
    """Find every instance of this phrase instead of automatic masks (`Engine.find`)."""
    score_threshold: float | None = None
    """With `text` only; None = the default (0.5)."""
    grid_options_given: Sequence[str] = ()
    """Names of the grid options the caller set explicitly; with `text` they would be ignored, so refused."""

    postprocess: PostProcess | None = None

    GRID_OPTIONS = ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")

    def amg_options(self) -> AmgOptions:
        return AmgOptions(points_per_side=self.points_per_side, pred_iou_thresh=self.pred_iou_thresh,
                          stability_score_thresh=self.stability_score_thresh, box_nms_thresh=self.box_nms_thresh,
                          crop_n_layers=0)


@dataclass
class _Timer:
    timings: dict = field(default_factory=dict)

    def add(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + (now - t0) * 1000, 2)
        return now


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
        work; None = unbounded."""
        self.engine = engine
        self.cache = cache
        self.sources = sources
        self.fetcher = fetcher
        self.readers = readers or Readers(fetcher, window_px=window_tiles * 256)  # source → its reader
        self.window_tiles = window_tiles
        self.max_zoom_steps = max_zoom_steps
        self.max_prompts = max_prompts
        self.max_points_per_side = max_points_per_side
        self.encoder_queue = encoder_queue  # None: encoder passes go straight to a worker thread
        self.max_grid_points = max_grid_points
        self.max_mask_pixels = max_mask_pixels
        self.max_answer_vertices = max_answer_vertices
        self.deadline_s = deadline_s
        self.everything_deadline_s = everything_deadline_s
        self._prep = engine.describe().embedding_version

    # -- validation ---------------------------------------------------------------------------
    def _source(self, name: str, zoom: int) -> TileSource:
        """The configured source `name`, checked to serve `zoom` (InvalidRequest "source" / "zoom")."""
        source = self.sources.get(name)
        if not (source.min_zoom <= zoom <= source.max_zoom):
            raise InvalidRequest("zoom", f"zoom {zoom} is outside source {source.id!r}'s range "
                                         f"{source.min_zoom}–{source.max_zoom}")
        return source

    @staticmethod
    def _check_bbox(b: BBox) -> None:
        if not (b.south < b.north):
            raise InvalidRequest("bbox", f"sw.lat ({b.south}) must be south of ne.lat ({b.north})")
        if not (b.west < b.east):
            raise InvalidRequest("bbox", f"sw.lng ({b.west}) must be west of ne.lng ({b.east}); "
                                         "bboxes crossing the antimeridian are not supported")

    def _validate(self, q: SegmentQuery) -> TileSource:
        source = self._source(q.source, q.zoom)
        b = q.bbox
        self._check_bbox(b)
        if q.score_threshold is not None:
            raise InvalidRequest("score_threshold", "applies to concept prompts (text / exemplar) only; point and "
                                                    "box prompts answer every mask they decode")
        n = len(q.points) + len(q.boxes)
        if n == 0:
            raise InvalidRequest("prompts", "at least one point or box prompt is needed")
        if n > self.max_prompts:
            raise InvalidRequest("prompts", f"{n} prompts; at most {self.max_prompts} are allowed")
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
        queries, per_query, px = len(q.boxes) or 1, 3 if q.multimask else 1, self._window_px(source)
        if self.max_mask_pixels is not None and queries * per_query * px > self.max_mask_pixels:
            raise LimitExceeded("prompts", f"{queries} queries × {per_query} masks × {px} window px = "
                                           f"{queries * per_query * px} decoded mask pixels, over the limit of "
                                           f"{self.max_mask_pixels}; send fewer boxes or no multimask",
                                "max_mask_pixels")
        return source

    def _window_px(self, source: TileSource) -> int:
        """Pixels of one window of `source` (as `choose_window` makes them)."""
        return self.readers(source).window_px()

    def _check_vertices(self, features: list[dict]) -> None:
        """Refuse an answer of more polygon vertices than `max_answer_vertices` (before it is serialised)."""
        if self.max_answer_vertices is None:
            return
        n = sum(count_vertices(f["geometry"]) for f in features)
        if n > self.max_answer_vertices:
            raise LimitExceeded("simplify_px", f"the answer would hold {n} polygon vertices, over the limit of "
                                               f"{self.max_answer_vertices}; raise simplify_px or min_area_px, "
                                               "or ask for fewer masks", "max_answer_vertices")

    # -- window -------------------------------------------------------------------------------
    def choose_window(self, source: TileSource, lnglat: np.ndarray, zoom: int) -> Window:
        """The window for these prompts: the source's grid level matching `zoom` first (native zoom for tile
        sources), stepping out while they do not fit.

        Among the candidates at a level, one whose embedding is already cached wins.
        lnglat: (N, 2) float64 lng/lat degrees.
        """
        levels = []
        for level, cands in self.readers(source).window_candidates(lnglat, zoom, self.max_zoom_steps):
            levels.append(level)
            if not cands:
                continue
            for w in cands:
                if self._key(source, w) in self.cache:
                    return w
            return cands[0]
        side = int(round(math.sqrt(self._window_px(source))))
        where = (f"zoom {levels[-1]}–{levels[0]}" if levels and all(isinstance(v, int) for v in levels)
                 else f"levels {', '.join(map(str, levels))} of source {source.id!r}")
        raise InvalidRequest("prompts", f"the prompts span too large an area to fit one {side} px window at "
                                        f"{where}; zoom in less or segment the parts separately")

    def _key(self, source: TileSource, window: Window) -> tuple:
        """Embedding cache key (`window_cache_key`)."""
        return window_cache_key(source.id, window, self.engine.model_id, self._prep)

    async def embedding_for(self, source: TileSource, window: Window, timer: _Timer | None = None,
                            deadline: float | None = None, image: np.ndarray | None = None
                            ) -> tuple[Embedding, bool]:
        """(embedding, cache hit) of the window; `deadline`: `time.monotonic()` instant for the tile fetch.
        `image`: the window's pixels ((size, size, 3) uint8 RGB, window px) when the caller has read them
        already (batch jobs read ahead of the model); else a miss reads them through the source's reader."""
        timer = timer or _Timer()

        async def fetch() -> np.ndarray:
            if image is not None:
                return image
            t0 = time.perf_counter()
            read = await self.readers(source).read_window(window, deadline)
            timer.add("tiles", t0)
            return read.rgb

        async def compute() -> Embedding:
            if self.encoder_queue is None:
                image = await fetch()
                t0 = time.perf_counter()
                emb = await asyncio.to_thread(self.engine.embed, image)
            else:  # admitted (or refused, 503) before any tile is fetched
                t0 = time.perf_counter()
                tiles_before = timer.timings.get("tiles", 0.0)  # earlier windows' fetches are not this one's
                emb = await self.encoder_queue.run(self.engine.embed, prepare=fetch)
                t0 += (timer.timings.get("tiles", 0.0) - tiles_before) / 1000
            timer.add("embed", t0)  # the wait in the queue included
            return emb

        return await self.cache.get_or_compute(self._key(source, window), compute)

    # -- deadlines ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _deadline(self, seconds: float | None, setting: str, progress: Callable[[], str] | None = None):
        """Yields the `time.monotonic()` instant tile fetching must keep to (None without a deadline); work
        still running `seconds` after entering is cancelled and `DeadlineExceeded` raised. Tile fetching gets
        a little less time, so that a hanging tile source is named in the 504 rather than the deadline.
        `progress()`: words appended to the 504's message (what the request was doing)."""
        if seconds is None:
            yield None
            return
        start = time.monotonic()
        try:
            async with asyncio.timeout(seconds) as scope:
                yield start + seconds - min(0.1, seconds / 10)
        except TimeoutError:
            if not scope.expired():
                raise
            raise DeadlineExceeded(f"the request did not finish within its deadline of {seconds:g} s "
                                   f"(this server's {setting}, SAMGIS_{setting.upper()})"
                                   f"{progress() if progress else ''}") from None

    # -- the click ----------------------------------------------------------------------------
    async def segment(self, q: SegmentQuery) -> dict:
        """Run one query; returns an RFC 7946 FeatureCollection with a `samgis` foreign member (concept prompts:
        see `find`).

        Within the deadline the whole answer is made or none is: when the deadline runs out while the object is
        being followed into more windows, the 504 says how far it got (never a partial polygon passed off as
        whole)."""
        used: dict = {}

        def progress() -> str:
            if q.window_budget <= 1 or not used:
                return ""
            return (f"; it was following the object across windows and had embedded {len(used)} of at most "
                    f"{q.window_budget} (window_budget): a smaller window_budget answers sooner")

        async with self._deadline(self.deadline_s, "deadline_s", progress) as deadline:
            if q.is_concept:
                return await self._find(q, deadline)
            return await self._segment(q, deadline, used)

    def home_windows(self, source: TileSource, lnglat: np.ndarray, q: SegmentQuery) -> list:
        """The windows the prompts are decoded in first: one window holding them all (`choose_window`), or,
        for box prompts that fit no window at the requested zoom, the fewest lattice windows covering them
        (`Reader.cover`) when they are no more than `q.window_budget`. lnglat: (N, 2) float64 degrees."""
        reader = self.readers(source)
        if q.boxes and q.window_budget > 1:
            level = next(iter(reader.window_candidates(lnglat, q.zoom, 0)), None)
            if level is not None and not level[1]:
                cover = reader.cover(lnglat, q.zoom)
                if len(cover) <= q.window_budget:
                    return cover
        return [self.choose_window(source, lnglat, q.zoom)]

    async def _segment(self, q: SegmentQuery, deadline: float | None, used: dict) -> dict:
        """`used`: filled with window key → (window, cache hit) as windows are embedded, in order."""
        t_start = time.perf_counter()
        timer = _Timer()
        source = self._validate(q)
        pts = np.array([[p.lng, p.lat] for p in q.points], np.float64).reshape(-1, 2)
        labels = np.array([p.label for p in q.points], np.int32)
        # box corners top-left then bottom-right, so in px each box is (x0, y0, x1, y1), y down
        corners = np.array([((b.west, b.north), (b.east, b.south)) for b in q.boxes],
                           np.float64).reshape(-1, 2)
        homes = self.home_windows(source, np.vstack([pts, corners]), q)
        self._check_follow_pixels(source, q, homes, pts, labels, corners)
        valid = {}
        for w in homes:
            valid[w.key()] = await self._valid(source, w, pts, labels, all_inside=len(homes) == 1)
        timer.add("validate", t_start)

        async def embed(window) -> Embedding:
            emb, hit = await self.embedding_for(source, window, timer, deadline)
            used.setdefault(window.key(), (window, hit))
            return emb

        n_q, n_m = max(1, len(q.boxes)), 3 if q.multimask else 1
        # chain (query qi, mask k) → window key → (window, (size, size) bool mask window px, score)
        chains: list[list[dict]] = [[{} for _ in range(n_m)] for _ in range(n_q)]
        for w in homes:
            emb = await embed(w)
            prompts, queries = self._window_prompts(w, pts, labels, corners)
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
            stopped = await self._follow(source, q, homes[0], chains[0], pts, labels, used, embed, timer)
        t0 = time.perf_counter()
        features = await asyncio.to_thread(self._vectorize_chains, chains, homes[0], source, q)
        timer.add("vectorize", t0)
        self._check_vertices(features)
        timer.timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        home, hit = next(iter(used.values()))
        meta = self._meta(home, q.zoom, hit, timer, source, q.postprocess)
        meta["windows"] = [{**w.meta(), "cache": "hit" if h else "miss"} for w, h in used.values()]
        meta["follow"] = {"window_budget": q.window_budget, "stopped_by_budget": stopped}
        return feature_collection(features, samgis=meta)

    def _check_follow_pixels(self, source: TileSource, q: SegmentQuery, homes: list, pts: np.ndarray,
                             labels: np.ndarray, corners: np.ndarray) -> None:
        """`max_mask_pixels` over every window the answer may use (a follow keeps each window's masks until they
        merge): the boxes each cover window decodes, or the point query's masks in up to `window_budget`
        windows. One window's share is checked in `_validate`."""
        if self.max_mask_pixels is None or (len(homes) == 1 and q.window_budget == 1):
            return
        per_query, px = 3 if q.multimask else 1, self._window_px(source)
        if q.boxes:
            queries = sum(len(self._window_prompts(w, pts, labels, corners)[1]) for w in homes)
            what = f"{queries} box decodes over {len(homes)} windows"
        else:
            queries = q.window_budget
            what = f"a point query followed into up to {queries} windows"
        total = queries * per_query * px
        if total > self.max_mask_pixels:
            raise LimitExceeded("window_budget", f"{what} × {per_query} masks × {px} window px = {total} decoded "
                                                 f"mask pixels, over the limit of {self.max_mask_pixels}; lower "
                                                 "window_budget, or send no multimask", "max_mask_pixels")

    def _window_prompts(self, window, pts: np.ndarray, labels: np.ndarray,
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

    async def _follow(self, source: TileSource, q: SegmentQuery, home, chains: list[dict], pts: np.ndarray,
                      labels: np.ndarray, used: dict, embed, timer: _Timer) -> bool:
        """Follow each mask of the point query across window seams, within `q.window_budget` windows in all.

        `chains`: mask k → window key → (window, mask, score), holding the home window's decode; filled in
        place. Breadth first from the home window: when a mask touches its window's edge (diagonals too), the
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
            valid = await self.readers(source).valid_mask(window)
            ex = window.lnglat_to_px(excl) if len(excl) else np.zeros((0, 2))
            ex, _, _, _ = prompts_in_window(ex, np.zeros(len(ex), np.int32), np.zeros((0, 4)), window.size)
            prompts = Prompts(points=np.vstack([point, ex]), labels=np.array([1] + [0] * len(ex), np.int32))
            t0 = time.perf_counter()
            result = await self.engine.adecode(emb, prompts, q.multimask)
            timer.add("decode", t0)
            mask = np.asarray(result.masks[0, k], dtype=bool)
            if valid is not None:
                mask = mask & valid
            chains[k][window.key()] = (window, mask, float(result.scores[0, k]))
            t0 = time.perf_counter()
            await asyncio.to_thread(seeds, window, k, mask)
            timer.add("seams", t0)
        return stopped

    def _merged(self, pieces: list[tuple], home) -> tuple[np.ndarray, Affine, float]:
        """One mask from the pieces (window, (size, size) bool mask, score) of windows of one grid level:
        ((H, W) bool mask, its px → CRS affine, the score of the window holding the largest part)."""
        if len(pieces) == 1:
            w, m, score = pieces[0]
            return m, w.affine(), score
        merged: dict = {}
        for w, m, _ in pieces:
            o = w.origin_px()
            merged[o] = merged[o] | m if o in merged else m
        (c0, r0), canvas = merge_pieces(merged)
        hc, hr = home.origin_px()
        score = max(pieces, key=lambda p: int(np.count_nonzero(p[1])))[2]
        return canvas, home.affine() @ Affine.translation(c0 - hc, r0 - hr), score

    def _vectorize_chains(self, chains: list[list[dict]], home, source: TileSource, q: SegmentQuery) -> list[dict]:
        """Each chain's merged mask → GeoJSON features (EPSG:4326), numbered `mask_index` = qi * M + k; with a
        window budget above 1 each carries `windows`, the number of windows its mask was decoded in."""
        props = self._properties(home, source)

        def counted(n: int) -> dict:
            return {"windows": n} if q.window_budget > 1 else {}

        n_m = len(chains[0])
        if q.merge_masks:  # one feature: the union of every mask
            pieces = [p for query in chains for chain in query for p in chain.values()]
            if not pieces:
                return []
            mask, transform, _ = self._merged(pieces, home)
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
                mask, transform, score = self._merged(list(chain.values()), home)
                features.extend(masks_to_features(
                    mask[None], np.array([score]), transform, simplify_px=q.simplify_px, min_area_px=q.min_area_px,
                    properties={**props, "prompt_index": qi, **counted(len(chain))}, first_index=qi * n_m + k,
                    crs=home.crs, postprocess=q.postprocess, postprocess_max_vertices=ANSWER_MAX_VERTICES))
        return features

    async def _valid(self, source: TileSource, window: Window, pts: np.ndarray, labels: Sequence[int],
                     all_inside: bool = True):
        """(size, size) bool validity of the window's px (None: all valid); 422 when the window holds no data or
        an include point lies on nodata (or, with `all_inside`, outside the window). `pts`: (N, 2) float64
        lng/lat degrees."""
        valid = await self.readers(source).valid_mask(window)
        if valid is None:
            return None
        if not valid.any():
            raise InvalidRequest("prompts", f"source {source.id!r} has no data (nodata) in the window around the "
                                            "prompts; click where the source has pixels")
        if len(pts):
            px = np.floor(window.lnglat_to_px(pts)).astype(np.int64)
            for i, ((c, r), label) in enumerate(zip(px, labels, strict=True)):
                inside = 0 <= c < valid.shape[1] and 0 <= r < valid.shape[0]
                if label == 1 and ((not inside and all_inside) or (inside and not valid[r, c])):
                    raise InvalidRequest(f"prompts[{i}]", f"the point is on a nodata pixel of source {source.id!r}")
        return valid

    def _meta(self, window: Window, zoom_requested: int, hit: bool, timer: _Timer, source: TileSource,
              postprocess: PostProcess | None = None) -> dict:
        """The `samgis` foreign member: how the answer was made."""
        return {
            "window": window.meta(),
            "zoom_requested": zoom_requested,
            "cache": "hit" if hit else "miss",
            "timings_ms": timer.timings,
            "model": self.engine.model_id,
            "source": source.id,
            "attribution": source.attribution,
            "postprocess": describe_postprocess(postprocess),
        }

    def _properties(self, window: Window, source: TileSource) -> dict:
        """Properties every feature of a window carries."""
        return {"zoom": window.z, "model": self.engine.model_id, "source": source.id,
                "attribution": source.attribution}

    # -- concept prompts ----------------------------------------------------------------------
    def _validate_concept(self, q: SegmentQuery) -> tuple[TileSource, ConceptPrompt | None]:
        """The source and the concept of a concept query (its exemplar boxes not yet in px: `boxes` empty, the
        caller places them on the window); every refusal names its field."""
        source = self._source(q.source, q.zoom)
        self._check_bbox(q.bbox)
        if q.postprocess is not None:
            q.postprocess.check()
        if q.points or q.boxes:
            raise InvalidRequest("prompts", "text/exemplar prompts (find every instance of a concept) and point/box "
                                            "prompts (segment one object) cannot be mixed in one request; send "
                                            "them separately")
        if len(q.texts) > 1:
            i = q.texts[1].index
            raise InvalidRequest(f"prompts[{i}]" if i is not None else "prompts",
                                 "one text prompt per request: a concept is one noun phrase (combine words in it, "
                                 "e.g. \"red roof\")")
        if len(q.exemplars) > self.max_prompts:
            raise InvalidRequest("prompts", f"{len(q.exemplars)} exemplar boxes; at most {self.max_prompts} are "
                                            "allowed")
        if q.multimask:
            raise InvalidRequest("multimask", "concept prompts answer one mask per instance; multimask applies to "
                                              "point/box prompts")
        check_score_threshold(q.score_threshold)
        for t in q.texts:
            check_text(t.text, f"prompts[{t.index}].text" if t.index is not None else "prompts")
        for j, e in enumerate(q.exemplars):
            name = f"prompts[{e.index if e.index is not None else j}]"
            if not (e.south < e.north and e.west < e.east):
                raise InvalidRequest(name, "exemplar box sw must be south-west of ne")
            if not (q.bbox.contains(e.west, e.south) and q.bbox.contains(e.east, e.north)):
                raise InvalidRequest(name, "exemplar box is not inside the bbox")
            footprint = self.readers(source).footprint_lnglat()
            if footprint is not None and not footprint.intersects(shapely.box(e.west, e.south, e.east, e.north)):
                raise InvalidRequest(name, f"exemplar box is off source {source.id!r} (no pixels there)")
            if e.label not in (0, 1):
                raise InvalidRequest(f"{name}.label", "must be 1 (positive) or 0 (negative)")
        text = check_text(q.texts[0].text, "prompts") if q.texts else None
        # the px boxes come later; a placeholder box keeps ConceptPrompt's own check (text or boxes) honest
        concept = ConceptPrompt(text=text, boxes=np.zeros((len(q.exemplars), 4), np.float32),
                                labels=np.array([e.label for e in q.exemplars], np.int32))
        text_field = f"prompts[{q.texts[0].index}].text" if q.texts and q.texts[0].index is not None else "prompts"
        ex_field = (f"prompts[{q.exemplars[0].index}]" if q.exemplars and q.exemplars[0].index is not None
                    else "prompts")
        require_concept(self.engine.describe(), concept, text_field, ex_field)
        return source, concept

    def _concept_window(self, source: TileSource, corners: np.ndarray, zoom: int, field: str) -> Window:
        """`choose_window` for the lng/lat `corners` ((N, 2) float64) of the area to search; a refusal names
        `field` (the area, not a prompt)."""
        try:
            return self.choose_window(source, corners, zoom)
        except InvalidRequest as e:
            if e.field != "prompts" and not e.field.startswith("prompts["):
                raise
            raise InvalidRequest(field, e.message.split(": ", 1)[-1].replace("the prompts span",
                                                                             "the area to search spans")) from None

    def _search_area(self, source: TileSource, b: BBox) -> tuple[np.ndarray, shapely.Polygon | None]:
        """Where a concept query searches: the bbox, clipped to where the source has pixels (its reader's
        `footprint_lnglat`, e.g. a raster's extent), so a map view reaching past a raster's edge searches the part
        on it. Returns (the lng/lat points the window must hold, (N, 2) float64 EPSG:4326: the bbox's corners,
        or the clipped area's vertices; the clipped area, None when the bbox lies wholly on the source).
        A bbox that does not overlap the source is a 422 naming `bbox`."""
        corners = np.array([[b.west, b.north], [b.east, b.south]], np.float64)
        footprint = self.readers(source).footprint_lnglat()
        view = shapely.box(b.west, b.south, b.east, b.north)
        if footprint is None or footprint.covers(view):
            return corners, None
        area = view.intersection(footprint)
        if area.is_empty or area.area <= 0:
            w, s, e, n = (round(v, 6) for v in footprint.bounds)
            raise InvalidRequest("bbox", f"the bbox does not overlap source {source.id!r} (it lies within lng {w} to "
                                         f"{e}, lat {s} to {n}); move the view onto it")
        return shapely.get_coordinates(area), area

    async def _find(self, q: SegmentQuery, deadline: float | None) -> dict:
        """Every instance of the query's concept in the bbox: the window is the one holding the whole bbox, or
        its part on the source (`_search_area`), stepping out from `q.zoom` as clicks do; instances with a pixel
        inside the bbox are kept, whole."""
        t_start = time.perf_counter()
        timer = _Timer()
        source, concept = self._validate_concept(q)
        threshold = check_score_threshold(q.score_threshold)
        b = q.bbox
        bbox_corners = np.array([[b.west, b.north], [b.east, b.south]], np.float64)
        # exemplar corners top-left then bottom-right, so in px each box is (x0, y0, x1, y1), y down
        ex_corners = np.array([((e.west, e.north), (e.east, e.south)) for e in q.exemplars],
                              np.float64).reshape(-1, 2)
        search_pts, clipped = self._search_area(source, b)
        window = self._concept_window(source, search_pts, q.zoom, "bbox")
        try:
            valid = await self._valid(source, window, np.zeros((0, 2)), [])
        except InvalidRequest as e:  # a window of nodata only: the area searched is what is wrong
            if e.field != "prompts":
                raise
            raise InvalidRequest("bbox", e.message.split(": ", 1)[-1].replace("around the prompts",
                                                                             "holding the bbox")) from None
        t0 = timer.add("validate", t_start)

        embedding, hit = await self.embedding_for(source, window, timer, deadline)
        t0 = time.perf_counter()
        if len(ex_corners):  # continuous window px (rasterio) → SAM convention (integer = pixel centre)
            concept = dataclasses.replace(concept, boxes=window.lnglat_to_px(ex_corners).reshape(-1, 4) - 0.5)
        found = await asyncio.to_thread(self.engine.find, embedding, concept, threshold)
        t0 = timer.add("find", t0)

        # instances must touch the bbox: its px rectangle in the window (continuous px, rasterio convention)
        (c0, r0), (c1, r1) = window.lnglat_to_px(bbox_corners)
        h, w = embedding.original_size
        inside = np.zeros((h, w), bool)
        inside[max(0, int(np.floor(r0))):max(0, int(np.ceil(r1))), max(0, int(np.floor(c0))):max(0, int(np.ceil(c1)))] = True
        masks = np.asarray(found.masks, dtype=bool)
        if valid is not None:  # masks never include nodata px
            masks = masks & valid
        keep = [k for k in range(len(found)) if (masks[k] & inside).any()]
        features = await asyncio.to_thread(self._concept_features, masks[keep], np.asarray(found.scores)[keep],
                                           window, source, concept_label(concept), q.simplify_px, q.min_area_px,
                                           postprocess=q.postprocess)
        timer.add("vectorize", t0)
        self._check_vertices(features)
        timer.timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        searched = (b.west, b.south, b.east, b.north) if clipped is None else clipped.bounds
        meta = {**self._meta(window, q.zoom, hit, timer, source, q.postprocess),
                **self._concept_meta(concept, threshold, features),
                "n_found": len(found), "bbox_clipped": clipped is not None,
                "area_searched": [round(float(v), 7) for v in searched]}
        return feature_collection(features, samgis=meta)

    @staticmethod
    def _concept_meta(concept: ConceptPrompt, threshold: float, features: list[dict]) -> dict:
        return {"concept": concept_label(concept), "text": concept.text, "exemplars": exemplar_counts(concept),
                "score_threshold": threshold, "n_instances": len(features)}

    def _concept_features(self, masks: np.ndarray, scores: np.ndarray, window: Window, source: TileSource,
                          label: str, simplify_px: float, min_area_px: float, min_area_m2: float = 0.0,
                          postprocess: PostProcess | None = None) -> list[dict]:
        """Found instances → GeoJSON features (EPSG:4326), one per instance, best score first.

        `masks`: (N, H, W) bool in window px (rasterio convention), `scores`: (N,) float. Properties: those of
        clicks (`score`, `area_m2`, `zoom`, `model`, `source`, `attribution`) plus `concept` (`label`),
        `instance` (0-based rank in the answer, also `mask_index`) and `at_window_edge` (the mask touches the
        window's border, so the object may go on outside it). Instances left empty by `min_area_px`, or smaller
        than `min_area_m2`, are dropped before numbering. `postprocess`: as in `SegmentQuery` (one batch).
        """
        transform = window.affine()
        props = {**self._properties(window, source), "concept": label}
        order = sorted(range(len(scores)), key=lambda k: -float(scores[k]))  # stable: ties keep the engine's order
        simplify = 0.0 if postprocess is not None else simplify_px  # the step simplifies on its own
        outlines, extras = [], []
        for k in order:
            mask = masks[k]
            extras.append({"at_window_edge": bool(mask[0].any() or mask[-1].any() or mask[:, 0].any()
                                                  or mask[:, -1].any())})
            outlines.append(mask_to_px_geometry(mask, simplify_px=simplify, min_area_px=min_area_px))
        features = px_geometries_to_features(outlines, [scores[k] for k in order], transform, properties=props,
                                             crs=window.crs, postprocess=postprocess, per_feature=extras,
                                             postprocess_max_vertices=ANSWER_MAX_VERTICES)
        features = [f for f in features if f["properties"]["area_m2"] >= min_area_m2]
        for i, f in enumerate(features):
            f["properties"]["instance"] = f["properties"]["mask_index"] = i
        return features

    # -- automatic masks ----------------------------------------------------------------------
    def _validate_everything(self, q: EverythingQuery) -> TileSource:
        if not (math.isfinite(q.lat) and abs(q.lat) < MAX_LAT):
            raise InvalidRequest("lat", f"{q.lat} is outside the Web Mercator map (|lat| < {MAX_LAT})")
        if not (math.isfinite(q.lng) and abs(q.lng) <= 180):
            raise InvalidRequest("lng", f"{q.lng} is outside [-180, 180]")
        source = self._source(q.source, q.zoom)
        if q.text is not None:
            check_text(q.text, "text")
            if q.grid_options_given:
                name = q.grid_options_given[0]
                raise InvalidRequest(name, "applies to automatic masks; with text the model finds the phrase's "
                                           "instances (use score_threshold)")
            check_score_threshold(q.score_threshold)
            require(self.engine.describe(), ["text"], "text")
        elif q.score_threshold is not None:
            raise InvalidRequest("score_threshold", "applies with text only (automatic masks use pred_iou_thresh)")
        else:
            require(self.engine.describe(), ["automatic"], "model")
        for name in ("simplify_px", "min_area_px", "min_area_m2"):
            value = getattr(q, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidRequest(name, f"must be a number ≥ 0, got {value}")
        if q.postprocess is not None:
            q.postprocess.check()
        if q.text is not None:  # no grid is decoded (and no grid option was given)
            return source
        if not 1 <= q.points_per_side <= self.max_points_per_side:
            raise InvalidRequest("points_per_side", f"must be in [1, {self.max_points_per_side}] (this server's "
                                                    f"max_points_per_side), got {q.points_per_side}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            value = getattr(q, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidRequest(name, f"must be in [0, 1], got {value}")
        grid, px = q.amg_options().grid_points(), self._window_px(source)
        counted = grid * max(1.0, px / 2**20)
        if self.max_grid_points is not None and counted > self.max_grid_points:
            raise LimitExceeded("points_per_side", f"a {q.points_per_side} × {q.points_per_side} grid decodes "
                                                   f"{grid} points on a {px} px window ({counted:.0f} counted per "
                                                   f"1024 × 1024 px), over the limit of {self.max_grid_points}",
                                "max_grid_points")
        return source

    async def segment_everything(self, q: EverythingQuery) -> dict:
        """Every mask SAM's automatic generator finds in the window holding (q.lng, q.lat) at q.zoom.

        The window is the one a click there would get (`choose_window`), so the embedding is shared with
        `segment` through the cache. Returns an RFC 7946 FeatureCollection, one feature per mask, best
        score first, with the `samgis` foreign member of `segment` plus `n_masks`, `n_generated` (masks
        before the area filters and deduplication) and `generator` (the options used).
        """
        async with self._deadline(self.everything_deadline_s, "everything_deadline_s") as deadline:
            return await self._segment_everything(q, deadline)

    async def _segment_everything(self, q: EverythingQuery, deadline: float | None) -> dict:
        t_start = time.perf_counter()
        timer = _Timer()
        source = self._validate_everything(q)
        try:
            window = self.choose_window(source, np.array([[q.lng, q.lat]], np.float64), q.zoom)
        except InvalidRequest as e:  # only a point on the very edge of the tile grid fits no window
            if e.field != "prompts":  # a reader's own refusal (e.g. outside a raster), already naming the field
                raise
            field = "lng" if abs(q.lng) == 180 else "lat"
            raise InvalidRequest(field, f"(lat {q.lat}, lng {q.lng}) is on the edge of the tile grid; "
                                        "move it inside") from None
        valid = await self._valid(source, window, np.array([[q.lng, q.lat]], np.float64), [1])
        timer.add("validate", t_start)

        embedding, hit = await self.embedding_for(source, window, timer, deadline)
        t0 = time.perf_counter()
        if q.text is not None:
            return await self._everything_text(q, source, window, valid, embedding, hit, timer, t_start, t0)
        options = q.amg_options()
        records = await asyncio.to_thread(self.engine.generate, embedding, options)
        if valid is not None:  # masks never include nodata px
            records = [{**r, "segmentation": np.asarray(r["segmentation"], bool) & valid} for r in records]
        t0 = timer.add("generate", t0)

        features = await asyncio.to_thread(self._vectorize_records, records, window, source, q)
        timer.add("vectorize", t0)
        self._check_vertices(features)
        timer.timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        generator = {
            "points_per_side": options.points_per_side, "grid_points": options.grid_points(),
            "pred_iou_thresh": options.pred_iou_thresh, "stability_score_thresh": options.stability_score_thresh,
            "stability_score_offset": options.stability_score_offset, "box_nms_thresh": options.box_nms_thresh,
            "crop_n_layers": options.crop_n_layers, "dedupe_iou": DEDUPE_IOU, "min_area_m2": q.min_area_m2,
            "min_area_px": q.min_area_px, "simplify_px": q.simplify_px,
        }
        return feature_collection(features, samgis={**self._meta(window, q.zoom, hit, timer, source, q.postprocess),
                                                    "n_masks": len(features), "n_generated": len(records),
                                                    "generator": generator})

    async def _everything_text(self, q: EverythingQuery, source: TileSource, window: Window, valid, embedding,
                               hit: bool, timer: _Timer, t_start: float, t0: float) -> dict:
        """`segment_everything` with `text`: every instance of the phrase in the window (`Engine.find`)."""
        concept = ConceptPrompt(text=check_text(q.text, "text"))
        threshold = check_score_threshold(q.score_threshold)
        found: FoundInstances = await asyncio.to_thread(self.engine.find, embedding, concept, threshold)
        masks = np.asarray(found.masks, dtype=bool)
        if valid is not None:  # masks never include nodata px
            masks = masks & valid
        t0 = timer.add("find", t0)
        features = await asyncio.to_thread(self._concept_features, masks, np.asarray(found.scores), window, source,
                                           concept_label(concept), q.simplify_px, q.min_area_px, q.min_area_m2,
                                           q.postprocess)
        timer.add("vectorize", t0)
        self._check_vertices(features)
        timer.timings["total"] = round((time.perf_counter() - t_start) * 1000, 2)
        generator = {"score_threshold": threshold, "min_area_m2": q.min_area_m2, "min_area_px": q.min_area_px,
                     "simplify_px": q.simplify_px}
        return feature_collection(features, samgis={**self._meta(window, q.zoom, hit, timer, source, q.postprocess),
                                                    "n_masks": len(features), "n_generated": len(found),
                                                    "generator": generator, "concept": concept.text,
                                                    "score_threshold": threshold, "n_instances": len(features)})

    def _vectorize_records(self, records: list[dict], window: Window, source: TileSource,
                           q: EverythingQuery) -> list[dict]:
        """Automatic-mask records → GeoJSON features (EPSG:4326), best first, filtered and deduplicated.

        `records`: `Engine.generate`'s, `segmentation` (H, W) bool in window px (rasterio
        convention), `bbox` XYWH window px. Order: predicted IoU, then stability score, descending;
        `mask_index` is the rank in the answer. `at_window_edge`: the mask touches the window's border,
        so the object may go on outside it.
        """
        transform = window.affine()
        props = self._properties(window, source)
        ranked = sorted(records, key=lambda r: (-r["predicted_iou"], -r["stability_score"]))
        simplify = 0.0 if q.postprocess is not None else q.simplify_px  # the step simplifies on its own
        outlines, extras = [], []
        for r in ranked:
            mask = r["segmentation"]
            x, y, w, h = r["bbox"]
            edge = x <= 0 or y <= 0 or x + w >= mask.shape[1] - 1 or y + h >= mask.shape[0] - 1
            extras.append({"stability_score": round(float(r["stability_score"]), 4), "at_window_edge": bool(edge)})
            outlines.append(mask_to_px_geometry(mask, simplify_px=simplify, min_area_px=q.min_area_px))
        features = px_geometries_to_features(outlines, [r["predicted_iou"] for r in ranked], transform,
                                             properties=props, crs=window.crs, postprocess=q.postprocess,
                                             per_feature=extras, postprocess_max_vertices=ANSWER_MAX_VERTICES)
        features = [f for f in features if f["properties"]["area_m2"] >= q.min_area_m2]
        features = drop_near_duplicates(features, DEDUPE_IOU)
        for k, f in enumerate(features):
            f["properties"]["mask_index"] = k
        return features


def window_cache_key(source_id: str, window, model_id: str, embedding_version) -> tuple:
    """Embedding cache key of a window of a source: (source id, grid level and lattice cell (`window.key()`: z,
    x0, y0, window size for tile windows; see `samgis.geo.readers`), model id, embedding version). Equal keys
    name equal pixels, so clicks, automatic masks and batch jobs share embeddings."""
    return (source_id, *window.key(), model_id, embedding_version)


def count_vertices(geometry: dict) -> int:
    """Positions in a GeoJSON Polygon / MultiPolygon (closing positions included)."""
    coords = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        return sum(len(ring) for ring in coords)
    return sum(len(ring) for poly in coords for ring in poly)

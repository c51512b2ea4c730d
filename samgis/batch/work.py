"""The three stages of one batch item, shared by the local and the Ray executor.

1. `load_item` (I/O): read the image file, or read the windows an area's objects start in (through the
   source's reader: tiles, or a raster's own pixel grid).
2. `infer_item` (model): embed (through the process's embedding cache, keyed as the server keys windows and
   images: `StageContext.embed_window` / `embed_image`) + decode (prompts, automatic masks, or window by
   window for map areas).
3. `finish_item` (CPU): masks → polygons (map) or PNG + COCO RLE (images), and the report picture.

Areas of interest (`AoiItem`, `--everything`) run the stages of `samgis.batch.aoi` instead.

Each stage takes the previous stage's payload and returns the next one; an exception becomes an
`ItemResult` with `ok=False` that the later stages pass through, so one broken item never stops a job.
Payloads are plain picklable objects, so the Ray executor moves them between processes unchanged: both
executors run the same functions on the same inputs and produce the same bytes.

Map areas. Windows come from a fixed lattice on the source's pixel grid (`Grid`): `window_tiles` x
`window_tiles` tiles (for a raster, cells of 256 px on the level its reader picks) whose origins are
multiples of half a window, so neighbouring windows overlap by half. An object starts in the lattice
window where its prompts sit most centrally (or, when they do not fit one window, in every lattice window
its prompts' bounding box touches, with the box clipped to each). When a point-prompted object's mask
reaches a window edge, the object is decoded again in the neighbouring lattice window, prompted by the
mask pixel deepest inside the overlap of the two windows; this repeats up to `max_windows_per_object`
windows. All pieces are OR-ed in the global pixel grid of the zoom (pixels of different windows at one
zoom coincide exactly), then vectorised once, so an object crossing window seams comes out as one polygon.
"""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from samgis.batch.concepts import window_masks
from samgis.batch.inputs import AoiItem, ImageItem, Item, MapItem
from samgis.engine.protocol import AmgOptions, Engine, Prompts
from samgis.errors import InvalidRequest
from samgis.geo.tiles import Window
from samgis.imaging.images import read_image
from samgis.imaging.masks import rle_encode
from samgis.services.image_predict import decode_prompts
from samgis.services.predict_prompts import parse_prompts
from samgis.vector.polygons import masks_to_features
from samgis.vector.postprocess import PostProcess, describe as describe_postprocess
from samgis.vector.seams import depth, merge_pieces, prompts_in_window, seam_directions, seam_point

MAX_PANELS = 10
"""Segments shown per item in the report."""


@dataclass(frozen=True)
class JobConfig:
    """Everything a worker process needs besides the engine; picklable.

    Sources: `providers` file (tile sources and `raster` entries), `builtin_sources`, `rasters` (GeoTIFF / COG
    paths, sources named by their file stem, as `samgis serve --raster`). Tile fetching: disk `tile_cache_dir`,
    `tile_timeout_s`, `tile_retries`. `cache_bytes`: the embedding cache of each model process (windows keyed
    as the server keys them, images by content hash), bounded in bytes. Output shaping (part of every item's resume digest): `window_tiles`, `simplify_px`,
    `min_area_px`, `multimask` (best of 3 masks per object), `amg` (automatic masks),
    `max_windows_per_object`. `panel_px`: side of one report panel. `torch_threads`: intra-op threads of
    each model process (default: torch's choice locally, the actor's CPUs on Ray). Torch's CPU kernels sum
    in an order that depends on the thread count, so byte-equal masks from two executors need the same count.
    AOI items (`samgis.batch.aoi`): windows overlap by `overlap_px`, pieces are one object when they agree
    with IoU ≥ `match_iou` in an overlap, objects under `min_area_m2` are dropped; `work_dir` holds their
    window files (set by `run_batch`, not an output option). `score_threshold`: instances of an item's phrase
    scoring below it are dropped (`samgis.batch.concepts`). `postprocess`: `samgis.vector.postprocess`
    `Regularize` or `Smooth` applied to every map / AOI outline in px before lng/lat (None: off); with it,
    `simplify_px` is not applied (its own tolerance is).
    """

    providers: str | None = None
    builtin_sources: bool = True
    tile_cache_dir: str | None = None
    tile_timeout_s: float = 10.0
    tile_retries: int = 3
    window_tiles: int = 4
    simplify_px: float = 1.0
    min_area_px: float = 0.0
    multimask: bool = False
    amg: AmgOptions = field(default_factory=AmgOptions)
    max_windows_per_object: int = 16
    panel_px: int = 256
    torch_threads: int | None = None
    overlap_px: int = 128
    match_iou: float = 0.5
    min_area_m2: float = 0.0
    work_dir: str | None = None
    score_threshold: float = 0.5
    postprocess: PostProcess | None = None
    rasters: tuple[str, ...] = ()
    cache_bytes: int = 128 << 20  # ≈ 32 SAM embeddings: windows that neighbouring items share

    def output_options(self) -> dict:
        """The options that change an item's output (they go into its resume digest). `postprocess` only when
        set, so that the digests of jobs started without it stay as they were."""
        return {"window_tiles": self.window_tiles, "simplify_px": self.simplify_px,
                "min_area_px": self.min_area_px, "multimask": self.multimask,
                "amg": self.amg.__dict__, "max_windows_per_object": self.max_windows_per_object,
                "overlap_px": self.overlap_px, "match_iou": self.match_iou, "min_area_m2": self.min_area_m2,
                "score_threshold": self.score_threshold,
                **({"postprocess": describe_postprocess(self.postprocess)} if self.postprocess else {})}


@dataclass
class ItemResult:
    """What the driver writes for one item.

    Map items: `features`, GeoJSON Features (EPSG:4326) with properties item_id, mask_index, score, area_m2.
    Image items: `masks`, one dict per mask: index, score, area (px), bbox [x, y, w, h] (px), rle (COCO),
    png (bytes of an 8-bit PNG, 255 = mask), concept (the phrase, items with one); `image_size` (H, W).
    `preview`: PNG bytes of the report picture. `timings`: seconds per stage. A failed item has `ok=False`,
    `error` and the failing `stage`.
    """

    item_id: str
    kind: str
    ok: bool = True
    error: str | None = None
    stage: str | None = None
    timings: dict = field(default_factory=dict)
    features: list = field(default_factory=list)
    masks: list = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    preview: bytes | None = None
    segments_file: str | None = None
    segment_count: int = 0

    @property
    def n_segments(self) -> int:
        if self.kind == "aoi":
            return self.segment_count
        return len(self.features) if self.kind == "map" else len(self.masks)


# --- per-process context: tile sources and one event loop for the async tile fetcher ------------------------

class StageContext:
    """Per-process resources built from a `JobConfig`: the source registry, the sources' readers (the server's,
    `samgis.geo.readers`) over one `TileFetcher`, and per engine the batch service
    (`samgis.services.area_segment.AreaService`: the embedding cache and the engine's encoder calls), all
    driven by one event loop in a daemon thread, so any thread may read windows or embed. `close()` stops it."""

    def __init__(self, cfg: JobConfig):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._sources = None
        self._fetcher = None
        self._readers = None
        self._services: dict[int, tuple] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def sources(self):
        from samgis.geo.sources import SourceRegistry

        with self._lock:
            if self._sources is None:
                self._sources = SourceRegistry.from_config(self.cfg.providers, builtins=self.cfg.builtin_sources,
                                                           rasters=self.cfg.rasters)
            return self._sources

    def reader(self, source):
        """The reader of `source` (`samgis.geo.readers.Readers`, windows of `window_tiles * 256` px)."""
        self._start()
        return self._readers(source)

    def service(self, engine: Engine):
        """The `AreaService` of `engine` in this process (made on first use: one embedding cache per engine)."""
        from samgis.engine.cache import EmbeddingCache
        from samgis.services.area_segment import AreaService

        self._start()
        with self._lock:
            entry = self._services.get(id(engine))
            if entry is None or entry[0] is not engine:
                entry = self._services[id(engine)] = (engine, AreaService(
                    engine, EmbeddingCache(self.cfg.cache_bytes), self._readers))
            return entry[1]

    def run(self, coro):
        """Run coroutine `coro` on this context's event loop; blocks the calling thread (never the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self._start()).result()

    def read(self, source, window):
        """`WindowImage` of `window` (any window of the source's grids): rgb (size, size, 3) uint8 (window px,
        row 0 at the top) and valid ((size, size) bool or None); blocking, any thread."""
        return self.run(self.reader(source).read_window(window))

    def embed_window(self, engine: Engine, source, window, image: np.ndarray):
        """Embedding of `window` of `source` whose pixels are `image` ((size, size, 3) uint8 RGB, window px),
        through the embedding cache keyed by the window (as the server keys clicks'); (embedding, hit)."""
        return self.run(self.service(engine).window_embedding(source, window, image))

    def embed_image(self, engine: Engine, image: np.ndarray):
        """Embedding of a plain (H, W, 3) uint8 RGB image through the embedding cache (keyed by the SHA-256 of
        its pixels); (embedding, hit)."""
        return self.run(self.service(engine).image_embedding(image))

    def _start(self) -> asyncio.AbstractEventLoop:
        from samgis import __version__
        from samgis.geo.fetch import TileFetcher
        from samgis.geo.tilecache import TileCache

        from samgis.geo.readers import Readers

        with self._lock:
            if self._loop is None:
                cache = TileCache(Path(self.cfg.tile_cache_dir)) if self.cfg.tile_cache_dir else None
                self._fetcher = TileFetcher(cache, user_agent=f"samgis/{__version__} (batch)",
                                            timeout_s=self.cfg.tile_timeout_s, retries=self.cfg.tile_retries)
                self._readers = Readers(self._fetcher, window_px=self.cfg.window_tiles * 256)
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="samgis-batch-io", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def fetch_window(self, source, window: Window) -> np.ndarray:
        """(size, size, 3) uint8 RGB of `window` (window px, row 0 north); blocking, any thread."""
        return self.read(source, window).rgb

    def close(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
            self._services.clear()
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._fetcher.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        loop.close()


def error_text(exc: BaseException) -> str:
    """A one-line description of an error: samgis errors' own message, else `Type: message`."""
    return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"


def run_stage(stage: str, fn, payload, *args):
    """`fn(payload, *args)`, with a failure `ItemResult` passed through and an exception turned into one."""
    if isinstance(payload, ItemResult):
        return payload
    try:
        return fn(payload, *args)
    except Exception as exc:  # one broken item must not stop the job
        item = payload.item
        return ItemResult(item.item_id, item.kind, ok=False, error=error_text(exc), stage=stage,
                          timings=dict(getattr(payload, "timings", {})))


# --- map planning --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """The window lattice of one area: windows of `n` x `n` cells of `ts` px on the source's pixel grid `px`
    (`samgis.geo.grids`: the tile grid at zoom `z`, cells = tiles, the default; or a raster level, cells of
    256 px), origins multiples of `step` cells (clamped to the windows that meet the grid).

    Windows are the ones clicks use (tile windows at z; raster windows on the reader's half-window lattice), so
    their embeddings are shared with the server's through the cache keys."""

    z: int
    n: int
    ts: int
    px: object = None  # TileGrid | RasterGrid; None: TileGrid(z, ts)

    def __post_init__(self) -> None:
        if self.px is None:
            from samgis.geo.grids import TileGrid

            object.__setattr__(self, "px", TileGrid(self.z, self.ts))

    @property
    def step(self) -> int:
        return max(1, self.n // 2)

    @property
    def size(self) -> int:
        return self.n * self.ts

    def bounds(self, axis: int = 0) -> tuple[int, int]:
        """(first, last) lattice origin (cells) along `axis` (0: columns, 1: rows)."""
        cells = -(-self.px.extent[axis] // self.ts)
        if self.px.bounded:  # tile grids: windows inside the grid
            return 0, cells - min(self.n, cells)
        # rasters: the lattice windows that meet the raster (they may overhang it)
        return (-self.n // self.step + 1) * self.step, (-(-cells // self.step) - 1) * self.step

    @property
    def last(self) -> int:
        return self.bounds(0)[1]

    def window(self, origin: tuple[int, int]):
        """The window (a reader's: tile `Window` or `RasterWindow`) of lattice `origin` (cells)."""
        return self.px.window(origin[0] * self.ts, origin[1] * self.ts, self.size)

    def affine(self, origin: tuple[int, int]):
        """Px relative to cell `origin` → the grid's CRS (`self.px.crs`)."""
        return self.px.affine_at(origin[0] * self.ts, origin[1] * self.ts)

    def clamp(self, o: int, axis: int = 0) -> int:
        first, last = self.bounds(axis)
        return min(max(o, first), last)

    def home(self, lo: float, hi: float, axis: int = 0) -> int | None:
        """Lattice origin (one axis, cells) of the window holding [lo, hi] (cell coordinates) most centrally;
        None when no window holds it (strictly inside)."""
        best = None
        for k in range(math.floor((hi - self.n) / self.step), math.floor(lo / self.step) + 1):
            o = self.clamp(k * self.step, axis)
            if o < lo and o + self.n > hi:
                key = (abs(o + self.n / 2 - (lo + hi) / 2), o)
                if best is None or key < best[0]:
                    best = (key, o)
        return None if best is None else best[1]

    def touching(self, lo: float, hi: float, axis: int = 0) -> list[int]:
        """Lattice origins (one axis, cells) of every window overlapping [lo, hi], sorted."""
        out = set()
        for k in range(math.floor((lo - self.n) / self.step), math.floor(hi / self.step) + 1):
            o = self.clamp(k * self.step, axis)
            if o < hi and o + self.n > lo:
                out.add(o)
        return sorted(out)


@dataclass(frozen=True)
class Seed:
    """Where an object is first decoded: lattice window `origin` (tiles) and its prompts in that window's px
    (SAM convention)."""

    origin: tuple[int, int]
    prompts: Prompts


@dataclass(frozen=True)
class ObjectPlan:
    """One object of an area: seeds, its prompt coordinates in global px at the area's zoom (rasterio
    convention, for prompts in windows reached later), and whether seams are followed (point objects)."""

    index: int
    seeds: tuple[Seed, ...]
    world: np.ndarray  # (N, 2) float64 global px (col, row) of obj.points
    labels: np.ndarray  # (N,) int32
    expand: bool


def window_prompts(grid: Grid, origin: tuple[int, int], world: np.ndarray, labels: np.ndarray,
                   box_world: np.ndarray | None) -> Prompts | None:
    """Prompts of one object in the window at `origin`, or None when the window gets no include prompt.

    `world`: (N, 2) float64 global px (col, row), rasterio convention, with (N,) `labels`; `box_world`: (4,)
    float64 (col0, row0, col1, row1) global px or None. Points outside the window are dropped; the box is
    clipped to the window (`samgis.vector.seams.prompts_in_window`, as for interactive clicks). Returned
    coordinates are window px, SAM convention (rasterio px - 0.5).
    """
    offset = np.array(origin, np.float64) * grid.ts
    box = np.zeros((0, 4)) if box_world is None else (box_world - np.concatenate([offset, offset])).reshape(1, 4)
    pts, lab, boxes, kept = prompts_in_window(world - offset, labels, box, grid.size)
    if box_world is not None and not kept:
        return None
    if len(boxes) == 0 and not (lab == 1).any():
        return None
    return Prompts(points=pts, labels=lab, boxes=boxes)


def plan_objects(item: MapItem, grid: Grid) -> list[ObjectPlan]:
    """Seeds of every object of an area (see the module docstring). Raises InvalidRequest for prompts off the
    source's grid (the Web Mercator map, a raster's CRS)."""
    plans = []
    for index, obj in enumerate(item.objects):
        world = grid.px.lnglat_to_px(np.array(obj.lnglat(), np.float64), f"objects[{index}]")
        if not grid.px.bounded:  # a raster: prompts off it are refused, as clicks there are
            width, height = grid.px.extent
            off = (world[:, 0] < 0) | (world[:, 0] > width) | (world[:, 1] < 0) | (world[:, 1] > height)
            if off.any():
                lng, lat = np.array(obj.lnglat(), np.float64)[int(np.argmax(off))]
                raise InvalidRequest(f"objects[{index}]", f"(lng {lng}, lat {lat}) is outside the raster")
        tiles = world / grid.ts
        lo, hi = tiles.min(axis=0), tiles.max(axis=0)
        n_pts = len(obj.points)
        box_world = world[n_pts:].reshape(4) if obj.box is not None else None
        labels = np.asarray(obj.labels, np.int32)
        hx, hy = grid.home(lo[0], hi[0], 0), grid.home(lo[1], hi[1], 1)
        if hx is not None and hy is not None:
            origins = [(hx, hy)]
        else:
            origins = [(x, y) for y in grid.touching(lo[1], hi[1], 1) for x in grid.touching(lo[0], hi[0], 0)]
        seeds = []
        for origin in origins:
            p = window_prompts(grid, origin, world[:n_pts], labels, box_world)
            if p is not None:
                seeds.append(Seed(origin, p))
        plans.append(ObjectPlan(index, tuple(seeds), world[:n_pts], labels, expand=obj.box is None))
    return plans


# --- stage 1: load --------------------------------------------------------------------------------------------

@dataclass
class LoadedImage:
    item: ImageItem
    image: np.ndarray  # (H, W, 3) uint8 RGB
    prompts: Prompts | None
    timings: dict = field(default_factory=dict)


@dataclass
class LoadedMap:
    item: MapItem
    source: object  # TileSource
    grid: Grid
    plans: list[ObjectPlan]
    windows: dict  # origin (x, y) cells → (size, size, 3) uint8 RGB
    timings: dict = field(default_factory=dict)
    valid: dict = field(default_factory=dict)  # origin → (size, size) bool valid px, or None when all are


def map_grid(item: MapItem, source, ctx: StageContext) -> Grid:
    """The window lattice of a map area on `source`'s grid at the area's zoom: tile windows of `window_tiles`
    × 256 px, or, for a raster, windows of that size on the raster level its reader picks for the zoom at the
    objects' centre. Raises ValueError for a zoom outside the source's range."""
    if not source.min_zoom <= item.zoom <= source.max_zoom:
        raise ValueError(f"zoom {item.zoom} is outside source {source.id!r}'s range "
                         f"{source.min_zoom}–{source.max_zoom}")
    points = [p for obj in item.objects for p in obj.lnglat()]
    centre = np.mean(np.array(points, np.float64).reshape(-1, 2), axis=0) if points else np.zeros(2)
    px = ctx.reader(source).grid(item.zoom, float(centre[0]), float(centre[1]))
    if getattr(px, "bounded", True):
        n = max(1, ctx.cfg.window_tiles * 256 // source.tile_size)
        return Grid(item.zoom, n, source.tile_size, px)
    return Grid(item.zoom, ctx.cfg.window_tiles, 256, px)


def read_window(ctx: StageContext, source, grid: Grid, origin: tuple[int, int]):
    """`WindowImage` of lattice window `origin` (cells) of `grid`: rgb (size, size, 3) uint8, valid or None."""
    return ctx.read(source, grid.window(origin))


def load_item(item: Item, ctx: StageContext):
    """Stage 1: the item's pixels (and, for areas, the plan of its objects)."""
    if item.problem:
        raise ValueError(item.problem)
    t0 = time.perf_counter()
    if isinstance(item, AoiItem):
        from samgis.batch.aoi import plan_aoi

        return plan_aoi(item, ctx)
    if isinstance(item, ImageItem):
        image = read_image(Path(item.path).read_bytes(), "image")
        prompts = None
        if item.points:
            prompts = parse_prompts({"points": [list(p) for p in item.points], "labels": list(item.labels)},
                                    image.shape[:2], "prompts", max_prompts=1000)
        return LoadedImage(item, image, prompts, {"load": time.perf_counter() - t0})
    source = ctx.sources.get(item.source)
    grid = map_grid(item, source, ctx)
    plans = plan_objects(item, grid)
    origins = sorted({s.origin for p in plans for s in p.seeds}, key=lambda o: (o[1], o[0]))
    read = {o: read_window(ctx, source, grid, o) for o in origins}
    return LoadedMap(item, source, grid, plans, {o: w.rgb for o, w in read.items()},
                     {"load": time.perf_counter() - t0}, {o: w.valid for o, w in read.items()})


# --- stage 2: infer -------------------------------------------------------------------------------------------

@dataclass
class ImageMasks:
    item: ImageItem
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (K, H, W) bool, image px
    scores: np.ndarray  # (K,) float32
    timings: dict = field(default_factory=dict)


@dataclass
class ObjectMask:
    """One object's merged mask: `mask` (h, w) bool in global px of the area's zoom, NW pixel at global px
    (`origin` * tile size), i.e. `origin` = (x, y) tiles; `score` of its first decode."""

    index: int
    score: float
    origin: tuple[int, int]
    mask: np.ndarray


@dataclass
class MapMasks:
    item: MapItem
    grid: Grid
    objects: list[ObjectMask]
    windows: dict  # origin (x, y) tiles → (size, size, 3) uint8 RGB, every window used
    timings: dict = field(default_factory=dict)


def _add(timings: dict, name: str, t0: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - t0
    return now


def _best(result, multimask: bool) -> tuple[np.ndarray, float]:
    """(H, W) bool mask and score of query 0: the best-scoring of M masks."""
    k = int(np.argmax(result.scores[0])) if multimask else 0
    return result.masks[0, k], float(result.scores[0, k])


def infer_item(loaded, engine: Engine, ctx: StageContext):
    """Stage 2: masks of the item (model work; map areas may fetch windows that seams lead into)."""
    timings = dict(loaded.timings)
    if isinstance(loaded.item, AoiItem):
        from samgis.batch.aoi import infer_aoi

        return infer_aoi(loaded, engine, ctx, timings)
    if isinstance(loaded, LoadedImage):
        t0 = time.perf_counter()
        emb, _ = ctx.embed_image(engine, loaded.image)
        t0 = _add(timings, "embed", t0)
        if loaded.prompts is not None:
            r = decode_prompts(engine, emb, loaded.prompts, ctx.cfg.multimask)
            masks, scores = r.masks[0], r.scores[0]
        else:
            records = window_masks(engine, emb, ctx.cfg, loaded.image, loaded.item.text)
            h, w = loaded.image.shape[:2]
            masks = np.array([r["segmentation"] for r in records], bool).reshape(-1, h, w)
            scores = np.array([r["predicted_iou"] for r in records], np.float32)
        _add(timings, "decode", t0)
        return ImageMasks(loaded.item, loaded.image, masks, np.asarray(scores, np.float32), timings)
    return _infer_map(loaded, engine, ctx, timings)


def window_embedding(ctx: StageContext, engine: Engine, source, grid: Grid, origin: tuple[int, int],
                     windows: dict, valid: dict, timings: dict):
    """The embedding of lattice window `origin` of `grid`: its pixels from `windows` / `valid` (origin → rgb /
    valid px) or read through the source's reader (and added there), embedded through the process's embedding
    cache (`StageContext.embed_window`, keyed by the window as the server keys clicks). `timings` gains load
    and embed seconds."""
    t0 = time.perf_counter()
    if origin not in windows:
        read = read_window(ctx, source, grid, origin)
        windows[origin], valid[origin] = read.rgb, read.valid
        t0 = _add(timings, "load", t0)
    emb, _ = ctx.embed_window(engine, source, grid.window(origin), windows[origin])
    _add(timings, "embed", t0)
    return emb


def _infer_map(loaded: LoadedMap, engine: Engine, ctx: StageContext, timings: dict) -> MapMasks:
    grid, windows, valid = loaded.grid, dict(loaded.windows), dict(loaded.valid)

    objects = []
    for plan in loaded.plans:
        pieces: dict = {}
        queue = list(plan.seeds)
        queued = {s.origin for s in queue}
        score = None
        while queue and len(pieces) < ctx.cfg.max_windows_per_object:
            seed = queue.pop(0)
            emb = window_embedding(ctx, engine, loaded.source, grid, seed.origin, windows, valid, timings)
            t0 = time.perf_counter()
            mask, s = _best(engine.decode(emb, seed.prompts, ctx.cfg.multimask), ctx.cfg.multimask)
            if valid.get(seed.origin) is not None:  # masks never include nodata px
                mask = mask & valid[seed.origin]
            _add(timings, "decode", t0)
            score = s if score is None else score
            pieces[seed.origin] = mask
            if plan.expand:
                for nxt in _seam_seeds(grid, seed.origin, mask, plan):
                    if nxt.origin not in queued:
                        queued.add(nxt.origin)
                        queue.append(nxt)
        if pieces:
            objects.append(_merge(plan.index, score, pieces, grid))
    return MapMasks(loaded.item, grid, objects, windows, timings)


def _seam_seeds(grid: Grid, origin: tuple[int, int], mask: np.ndarray, plan: ObjectPlan) -> list[Seed]:
    """Seeds in the lattice neighbours of `origin` that `mask` ((size, size) bool, window px) runs into
    (`samgis.vector.seams.seam_directions`); each one's prompt is `seam_point` (the mask pixel deepest inside
    the two windows' overlap) plus the object's exclude points inside the neighbour.
    """
    mask_depth = None
    out = []
    for dx, dy in seam_directions(mask):
        nxt = (grid.clamp(origin[0] + dx * grid.step, 0), grid.clamp(origin[1] + dy * grid.step, 1))
        if nxt == origin:
            continue
        if mask_depth is None:
            mask_depth = depth(mask)
        point = seam_point(mask_depth, ((nxt[0] - origin[0]) * grid.ts, (nxt[1] - origin[1]) * grid.ts))
        if point is None:
            continue
        excl = plan.world[plan.labels == 0] - np.array(nxt, np.float64) * grid.ts
        excl = excl[np.all((excl > 0) & (excl < grid.size), axis=1)] - 0.5
        prompts = Prompts(points=np.vstack([point, excl]),
                          labels=np.array([1] + [0] * len(excl), np.int32))
        out.append(Seed(nxt, prompts))
    return out


def _merge(index: int, score: float, pieces: dict, grid: Grid) -> ObjectMask:
    """OR the (size, size) bool window masks `pieces` (origin tiles → mask) into one mask over their union."""
    (c0, r0), canvas = merge_pieces({(ox * grid.ts, oy * grid.ts): m for (ox, oy), m in pieces.items()})
    return ObjectMask(index, score, (c0 // grid.ts, r0 // grid.ts), canvas)


# --- stage 3: finish ------------------------------------------------------------------------------------------

def finish_item(inferred, cfg: JobConfig) -> ItemResult:
    """Stage 3: vector features (map) or encoded masks (images), and the report picture."""
    timings = dict(inferred.timings)
    t0 = time.perf_counter()
    item = inferred.item
    if isinstance(item, AoiItem):
        from samgis.batch.aoi import finish_aoi

        path, count, preview = finish_aoi(inferred, cfg, timings)
        return ItemResult(item.item_id, "aoi", timings=timings, segments_file=str(path), segment_count=count,
                          preview=preview)
    if isinstance(inferred, MapMasks):
        grid = inferred.grid
        features = []
        for obj in inferred.objects:
            affine = grid.affine(obj.origin)
            for f in masks_to_features(obj.mask[None], [obj.score], affine, simplify_px=cfg.simplify_px,
                                       min_area_px=cfg.min_area_px, first_index=obj.index, crs=grid.px.crs,
                                       postprocess=cfg.postprocess):
                p = f["properties"]
                f["properties"] = {"item_id": item.item_id, "mask_index": p["mask_index"], "score": p["score"],
                                   "area_m2": p["area_m2"]}
                features.append(f)
        kept = {f["properties"]["mask_index"] for f in features}
        image, panels = _map_panels(inferred, [o for o in inferred.objects if o.index in kept], cfg.panel_px)
        result = ItemResult(item.item_id, "map", timings=timings, features=features)
    else:
        masks = []
        for i, (m, s) in enumerate(zip(inferred.masks, inferred.scores)):
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)] \
                if len(xs) else [0, 0, 0, 0]
            masks.append({"index": i, "score": round(float(s), 4), "area": int(m.sum()), "bbox": bbox,
                          "rle": rle_encode(m), "png": png_bytes(m)} | ({"concept": item.text} if item.text else {}))
        h, w = inferred.image.shape[:2]
        order = sorted(range(len(masks)), key=lambda i: (-masks[i]["score"], i))[:MAX_PANELS]
        image, panels = _image_panels(inferred.image, [inferred.masks[i] for i in order], cfg.panel_px)
        result = ItemResult(item.item_id, "image", timings=timings, masks=masks, image_size=(h, w))
    result.preview = contact_sheet(image, panels)
    _add(timings, "post", t0)
    return result


def png_bytes(mask: np.ndarray) -> bytes:
    """8-bit grayscale PNG of an (H, W) bool mask, 255 = mask."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, np.uint8) * 255).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _factor(h: int, w: int, panel_px: int) -> int:
    """Power-of-two reduction bringing max(h, w) to at most `panel_px` (≥ 1)."""
    f = 1
    while max(h, w) / f > panel_px:
        f *= 2
    return f


def reduce_mask(mask: np.ndarray, f: int) -> np.ndarray:
    """(ceil(H / f), ceil(W / f)) bool: each f x f block of an (H, W) bool mask that holds a mask pixel."""
    if f == 1:
        return mask
    h, w = mask.shape
    padded = np.zeros((-(-h // f) * f, -(-w // f) * f), bool)
    padded[:h, :w] = mask
    return padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).any(axis=(1, 3))


def reduce_image(image: np.ndarray, f: int) -> np.ndarray:
    """(ceil(H / f), ceil(W / f), 3) uint8: an (H, W, 3) uint8 image box-filtered by f."""
    return image if f == 1 else np.asarray(Image.fromarray(image).reduce(f))


def _image_panels(image: np.ndarray, masks: list, panel_px: int):
    """The image (H, W, 3) uint8 and one overlay per (H, W) bool mask, reduced to ≤ `panel_px` px a side."""
    from samgis.imaging.render import overlay

    f = _factor(*image.shape[:2], panel_px)
    small = reduce_image(image, f)
    return small, [np.asarray(overlay(small, [reduce_mask(m, f)[:small.shape[0], :small.shape[1]]]))
                   for m in masks]


def _mosaic(mm: MapMasks, bounds: tuple[int, int, int, int], panel_px: int) -> tuple[np.ndarray, int]:
    """The windows of `mm` inside `bounds` (x0, y0, x1, y1 tiles) as one (h, w, 3) uint8 picture reduced by a
    power of two f to at most `panel_px` px a side (white where no window was fetched); returns (picture, f)."""
    g = mm.grid
    x0, y0, x1, y1 = bounds
    f = min(_factor((y1 - y0) * g.ts, (x1 - x0) * g.ts, panel_px), g.ts)
    cell = g.ts // f  # px per tile in the reduced picture
    out = np.full(((y1 - y0) * cell, (x1 - x0) * cell, 3), 255, np.uint8)
    for (ox, oy), img in sorted(mm.windows.items()):
        if ox + g.n <= x0 or ox >= x1 or oy + g.n <= y0 or oy >= y1:
            continue
        small = reduce_image(img, f)
        r, c = (oy - y0) * cell, (ox - x0) * cell
        rs, cs = max(0, -r), max(0, -c)
        h, w = min(small.shape[0] - rs, out.shape[0] - r - rs), min(small.shape[1] - cs, out.shape[1] - c - cs)
        out[r + rs:r + rs + h, c + cs:c + cs + w] = small[rs:rs + h, cs:cs + w]
    return out, f


OVERVIEW_WINDOWS = 2
"""Largest span, in windows, of an area's overview picture."""


def _map_panels(mm: MapMasks, objects: list[ObjectMask], panel_px: int):
    """The mosaic of every window used, and per object (best scores first, ≤ MAX_PANELS) its windows with
    its mask overlaid."""
    from samgis.imaging.render import overlay

    g = mm.grid
    if not mm.windows:
        return np.full((panel_px, panel_px, 3), 255, np.uint8), []
    area = (min(o[0] for o in mm.windows), min(o[1] for o in mm.windows),
            max(o[0] for o in mm.windows) + g.n, max(o[1] for o in mm.windows) + g.n)
    if max(area[2] - area[0], area[3] - area[1]) > OVERVIEW_WINDOWS * g.n:
        # objects far apart: a picture of everything between them would be specks on white; show the
        # first window's neighbourhood instead (each object's own panel shows it on its imagery)
        ox, oy = min(mm.windows)
        area = (ox, oy, ox + OVERVIEW_WINDOWS * g.n, oy + OVERVIEW_WINDOWS * g.n)
    mosaic, _ = _mosaic(mm, area, panel_px)
    panels = []
    for obj in sorted(objects, key=lambda o: (-o.score, o.index))[:MAX_PANELS]:
        h, w = obj.mask.shape
        bounds = (obj.origin[0], obj.origin[1], obj.origin[0] + w // g.ts, obj.origin[1] + h // g.ts)
        picture, f = _mosaic(mm, bounds, panel_px)
        panels.append(np.asarray(overlay(picture, [reduce_mask(obj.mask, f)])))
    return mosaic, panels


def contact_sheet(image: np.ndarray, panels: list, columns: int = 4, gap: int = 4) -> bytes:
    """PNG bytes: `image` then each panel ((h, w, 3) uint8 each), `columns` to a row, each in a cell as large
    as the largest of them."""
    tiles = [image, *panels]
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    cols = min(columns, len(tiles))
    sheet = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        sheet[r * (h + gap):r * (h + gap) + t.shape[0], c * (w + gap):c * (w + gap) + t.shape[1]] = t
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def process_item(item: Item, engine: Engine, ctx: StageContext) -> ItemResult:
    """All three stages in the calling thread."""
    return finish_stage(infer_stage(load_stage(item, ctx), engine, ctx), ctx.cfg)


@dataclass
class _Pending:
    """An item before stage 1, shaped like the other payloads (`item`, `timings`)."""

    item: Item
    timings: dict = field(default_factory=dict)


def load_stage(item: Item, ctx: StageContext):
    """Stage 1 with failures captured: a payload for `infer_stage`, or a failed `ItemResult`."""
    return run_stage("load", lambda p, c: load_item(p.item, c), _Pending(item), ctx)


def infer_stage(loaded, engine: Engine, ctx: StageContext):
    """Stage 2 with failures captured (failed results pass through)."""
    return run_stage("infer", infer_item, loaded, engine, ctx)


def finish_stage(inferred, cfg: JobConfig) -> ItemResult:
    """Stage 3 with failures captured (failed results pass through)."""
    return run_stage("finish", finish_item, inferred, cfg)

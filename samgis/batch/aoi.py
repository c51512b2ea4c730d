"""Whole areas of interest: every object in an AOI, stitched across a lattice of overlapping windows.

The three stages of an `AoiItem` (called from `samgis.batch.work`; the Ray executor runs the same functions
window by window, `samgis.batch.executors.ray`):

1. `plan_aoi` (load): the AOI in global px at its zoom, the `Lattice` of `window_tiles * 256` px windows
   overlapping by `overlap_px` that covers it, and the windows that meet the AOI.
2. Per window (model), the unit of work: `fetch_pixels`, `window_embedding` (the encoder), `window_output`
   (`Engine.generate`, automatic masks, as the window's `Piece`s and a thumbnail; with the item's phrase,
   `Engine.find`'s instances instead: `samgis.batch.concepts.window_masks`). Windows whose file
   exists (`todo_windows`) are not redone, so a killed job restarted with the same command redoes only
   unfinished windows. `infer_aoi` pipelines these on the local executor.
3. `AoiReduce` (CPU), fed each window's output as it finishes, in any order: writes the window's files
   (`w_<row>_<col>.npz`, atomically: from then on the window is finished) and stitches
   (`samgis.vector.stitch.Stitcher`) the windows contiguous in row-major order; each object as it completes
   is simplified (or regularized / smoothed: `cfg.postprocess`, in global px), moved to EPSG:4326,
   clipped to the AOI, dropped under `min_area_m2`, and appended to
   `<work dir>/segments.gpkg` in batches. Memory stays bounded by two lattice rows of masks, the open
   objects and the windows in flight: no process holds the whole AOI. `finish_aoi` closes it. The report
   picture is an overview of the AOI (window thumbnails, `t_<row>_<col>.png`, at most `OVERVIEW_PX` a
   side) with every object outlined and the AOI's outline.

Grids: the lattice lies on the source's pixel grid (`samgis.geo.grids`): global px of the tile grid at the
AOI's zoom for tile sources, or, for a raster source (GeoTIFF / COG in any CRS), the level of the raster's own
grid its reader picks for that zoom at the AOI's centre (never resampled through Web Mercator). Window (i, j)
is the square of `size` px from global px `lattice.origin(i, j)`, read through the source's reader (for tile
sources, the smallest tile-aligned window holding it, cropped: lattice origins need not fall on tile
corners) and embedded through the process's embedding cache (`samgis.batch.work.StageContext`). Masks never
hold a raster's nodata px.

Window files are intermediates: once the job has finished and an AOI's GeoPackage is written, `clean_work`
removes them (a failed or unfinished AOI keeps them, so a rerun resumes).
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw

from samgis.batch.concepts import window_masks
from samgis.batch.inputs import AoiItem
from samgis.batch.manifest import write_atomic
from samgis.engine.protocol import Engine
from samgis.vector.polygons import geodesic_area_m2, polygonal_part, rounded, valid_polygonal, window_to_lnglat
from samgis.vector.postprocess import apply as postprocess_apply
from samgis.vector.stitch import Lattice, Stitcher, pieces_bytes, pieces_from_bytes, window_pieces

LAYER = "segments"
BATCH = 256
"""Objects appended to the GeoPackage per write."""
FIELDS = ("item_id", "window_count", "score", "stability_score", "area_m2", "concept")
OVERVIEW_PX = 1024
"""Largest side of an AOI's overview picture in the report."""


@dataclass
class AoiPlan:
    """Stage-1 payload of an AOI: its `lattice` (global px at `z`, tiles of `ts` px), the windows (i, j) that
    meet the AOI in row-major order, the AOI polygon in lng/lat, and the folder of its window files."""

    item: AoiItem
    source: object  # TileSource | RasterSource
    grid: object  # samgis.geo.grids.TileGrid | RasterGrid: global px ↔ lng/lat and the grid's CRS
    lattice: Lattice
    windows: list
    aoi: object  # shapely Polygon / MultiPolygon, lng/lat degrees EPSG:4326
    work_dir: Path
    timings: dict = field(default_factory=dict)
    reduce: object = field(default=None, repr=False)  # the local executor's `AoiReduce`, stage 2 to 3


def aoi_work_dir(cfg, item: AoiItem) -> Path:
    """The folder of one AOI's window files: under `cfg.work_dir`, named by the item and a digest of its
    definition (the job options and model are in `cfg.work_dir`'s own name)."""
    from samgis.batch.outputs import slug

    if not cfg.work_dir:
        raise ValueError("AOI jobs need a work folder (JobConfig.work_dir); run them through run_batch")
    digest = hashlib.sha256(repr((item.item_id, item.source, item.zoom, item.wkb_hex)
                                 + ((item.text,) if item.text else ())).encode()).hexdigest()[:12]
    return Path(cfg.work_dir) / f"{slug(item.item_id)}-{digest}"


def _to_px(geom, grid):
    """`geom` (lng/lat degrees) with every vertex in global px of `grid` (col, row, rasterio convention)."""
    return shapely.transform(geom, lambda xy: grid.lnglat_to_px(xy, "area"))


def plan_aoi(item: AoiItem, ctx) -> AoiPlan:
    """Stage 1 of an AOI (module docstring). Raises ValueError for a zoom outside the source's range."""
    t0 = time.perf_counter()
    cfg = ctx.cfg
    source = ctx.sources.get(item.source)
    if not source.min_zoom <= item.zoom <= source.max_zoom:
        raise ValueError(f"zoom {item.zoom} is outside source {source.id!r}'s range "
                         f"{source.min_zoom}–{source.max_zoom}")
    aoi = item.polygon
    centre = aoi.centroid
    grid = ctx.reader(source).grid(item.zoom, centre.x, centre.y)
    if grid.bounded:
        size = max(1, cfg.window_tiles * 256 // source.tile_size) * source.tile_size
    else:
        size = cfg.window_tiles * 256
    if not 0 <= cfg.overlap_px < size:
        raise ValueError(f"overlap_px must lie in [0, {size}), got {cfg.overlap_px}")
    aoi_px = _to_px(aoi, grid)
    lattice = Lattice.cover(aoi_px.bounds, size, cfg.overlap_px)
    width, height = grid.extent
    c0, r0, c1, r1 = lattice.rect(lattice.nx - 1, lattice.ny - 1)
    if grid.bounded and (lattice.x0 < 0 or lattice.y0 < 0 or c1 > width or r1 > height):
        raise ValueError(f"the area's windows run off the tile grid at zoom {item.zoom} "
                         "(areas at the map's edge are not supported)")
    if not grid.bounded and (c1 <= 0 or r1 <= 0 or lattice.x0 >= width or lattice.y0 >= height):
        raise ValueError(f"the area is outside raster source {source.id!r}")
    shapely.prepare(aoi_px)
    windows = [ij for ij in lattice.windows() if aoi_px.intersects(shapely.box(*lattice.rect(*ij)))]
    return AoiPlan(item, source, grid, lattice, windows, aoi, aoi_work_dir(cfg, item),
                   {"load": time.perf_counter() - t0})


def window_file(plan: AoiPlan, ij: tuple[int, int]) -> Path:
    return plan.work_dir / f"w_{ij[1]:05d}_{ij[0]:05d}.npz"


def thumb_file(plan: AoiPlan, ij: tuple[int, int]) -> Path:
    return plan.work_dir / f"t_{ij[1]:05d}_{ij[0]:05d}.png"


def overview_factor(lattice: Lattice) -> int:
    """Power-of-two reduction bringing the lattice's extent to at most OVERVIEW_PX a side."""
    c0, r0, c1, r1 = lattice.rect(lattice.nx - 1, lattice.ny - 1)
    side = max(c1 - lattice.x0, r1 - lattice.y0)
    f = 1
    while side / f > OVERVIEW_PX:
        f *= 2
    return f


def lattice_window(plan: AoiPlan, ij: tuple[int, int]):
    """The reader's window of lattice window `ij` (its `key()` names exactly its pixels)."""
    c, r = plan.lattice.origin(*ij)
    return plan.grid.window(c, r, plan.lattice.size)


def fetch_pixels(plan: AoiPlan, ij: tuple[int, int], ctx):
    """`WindowImage` of window `ij`, read through the source's reader: rgb (size, size, 3) uint8 (window px,
    row 0 at the top), valid (size, size) bool or None (all valid)."""
    return ctx.read(plan.source, lattice_window(plan, ij))


@dataclass
class WindowOutput:
    """What one window of an AOI gives the reduce: `pieces` (the .npz bytes of its `Piece`s, `pieces_bytes`),
    `thumb` (PNG bytes of its pixels reduced by `overview_factor`), and `timings` (embed, decode seconds)."""

    ij: tuple[int, int]
    pieces: bytes
    thumb: bytes
    timings: dict = field(default_factory=dict)


def window_embedding(plan: AoiPlan, ij: tuple[int, int], image, engine: Engine, ctx):
    """The embedding of window `ij` whose pixels are `image` (a `WindowImage` from `fetch_pixels`), through the
    process's embedding cache (keyed by the window, as the server keys clicks: `StageContext.embed_window`)."""
    return ctx.embed_window(engine, plan.source, lattice_window(plan, ij), image.rgb)[0]


def window_output(plan: AoiPlan, ij: tuple[int, int], image, embedding, engine: Engine,
                  ctx) -> WindowOutput:
    """The rest of one window after `window_embedding`: `Engine.generate` (automatic masks) on `embedding` of
    `image` (a `WindowImage`: rgb (size, size, 3) uint8, window px), masks clipped to its valid px, its pieces
    and thumbnail; timings["decode"] is the generate time. Both executors call these two per window (locally
    on the model thread and the decode thread, on Ray in a model actor)."""
    t0 = time.perf_counter()
    records = window_masks(engine, embedding, ctx.cfg, image.rgb, plan.item.text)
    if image.valid is not None:  # masks never hold nodata px
        records = [{**r, "segmentation": np.asarray(r["segmentation"], bool) & image.valid} for r in records]
    t1 = time.perf_counter()
    pieces = window_pieces(plan.lattice, ij, records)
    del records
    return WindowOutput(ij, pieces_bytes(pieces),
                        png_bytes_rgb(reduce_image(image.rgb, overview_factor(plan.lattice))), {"decode": t1 - t0})


def todo_windows(plan: AoiPlan) -> list[tuple[int, int]]:
    """The windows of `plan` without a window file (row-major): the ones a (resumed) run must compute."""
    return [ij for ij in plan.windows if not window_file(plan, ij).is_file()]


def infer_aoi(plan: AoiPlan, engine: Engine, ctx, timings: dict, prefetch: int = 2) -> AoiPlan:
    """Stage 2 of an AOI on the local executor: the windows without a file (module docstring), pipelined:
    `fetch_pixels` on `prefetch` threads ahead of the model, `window_embedding` on the calling thread,
    `window_output` (automatic masks, pieces) on a decode thread while the next window is embedded, and an
    `AoiReduce` (`plan.reduce`) stitching on a thread of its own. `timings` gains load (time the model waited
    for pixels), embed, decode and the counts `windows` / `windows_run`."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    todo = todo_windows(plan)
    reduce = AoiReduce(plan, ctx.cfg)
    plan.reduce = reduce
    with ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="samgis-aoi-fetch") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="samgis-aoi-decode") as decode_pool, \
            ThreadPoolExecutor(1, thread_name_prefix="samgis-aoi-stitch") as stitch_pool:
        ahead: deque = deque()
        pending = iter(todo)
        decoding: deque = deque()
        adding: list = []

        def refill() -> None:
            while len(ahead) < max(1, prefetch):
                ij = next(pending, None)
                if ij is None:
                    return
                ahead.append((ij, pool.submit(fetch_pixels, plan, ij, ctx)))

        def to_reduce(limit: int) -> None:
            """Hand decoded windows to the reduce until at most `limit` are decoding (raises their errors)."""
            while len(decoding) > limit:
                out = decoding.popleft().result()
                timings["decode"] = timings.get("decode", 0.0) + out.timings["decode"]
                if adding:
                    adding.pop().result()  # one window in the reduce at a time; raises its error here
                adding.append(stitch_pool.submit(reduce.add, out))

        try:
            refill()
            while ahead:
                ij, fut = ahead.popleft()
                t0 = time.perf_counter()
                image = fut.result()
                refill()
                t1 = time.perf_counter()
                emb = window_embedding(plan, ij, image, engine, ctx)
                t2 = time.perf_counter()
                to_reduce(0)  # the previous window's masks before this one's: at most two embeddings alive
                decoding.append(decode_pool.submit(window_output, plan, ij, image, emb, engine, ctx))
                del emb, image
                for name, dt in (("load", t1 - t0), ("embed", t2 - t1)):
                    timings[name] = timings.get(name, 0.0) + dt
            to_reduce(0)
            if adding:
                adding.pop().result()
        finally:
            for _, fut in ahead:
                fut.cancel()
            for fut in decoding:
                fut.cancel()
    timings["windows"] = len(plan.windows)
    timings["windows_run"] = len(todo)
    plan.timings = timings
    return plan


def _frame(rows: list[dict]):
    import geopandas as gpd
    import pandas as pd

    return gpd.GeoDataFrame(
        {"item_id": pd.Series([r["item_id"] for r in rows], dtype="string"),
         "window_count": pd.Series([r["window_count"] for r in rows], dtype="int64"),
         "score": pd.Series([r["score"] for r in rows], dtype="float64"),
         "stability_score": pd.Series([r["stability_score"] for r in rows], dtype="float64"),
         "area_m2": pd.Series([r["area_m2"] for r in rows], dtype="float64"),
         "concept": pd.Series([r["concept"] for r in rows], dtype="string")},
        geometry=gpd.GeoSeries([r["geometry"] for r in rows], crs="EPSG:4326"))


def append_rows(path: Path, rows: list[dict], first: bool) -> None:
    """Write `rows` (FIELDS + geometry, lng/lat) to layer `segments` of the GeoPackage at `path`: a new file
    when `first` (even with no rows: the layer exists), else appended."""
    import pyogrio

    pyogrio.write_dataframe(_frame(rows), path, layer=LAYER, driver="GPKG", append=not first,
                            promote_to_multi=False)


class AoiReduce:
    """Stage 3 of an AOI as a reduce over its windows' `WindowOutput`s, in any order.

    `add` first writes the window's files (`t_*.png`, then `w_*.npz`: the window is finished and a resumed
    job will not redo it), then stitches every window now contiguous in row-major order (`Stitcher`), each
    object as it completes simplified, moved to EPSG:4326, clipped to the AOI, dropped under `min_area_m2`
    and appended to `<work dir>/.segments.tmp.gpkg` in batches of `BATCH`; the window's thumbnail goes into
    the overview. Windows finished by an earlier run are read from their files when their turn comes.
    `close` stitches the rest and returns (path of `segments.gpkg`, objects written, overview PNG bytes).

    Memory: the outputs of windows that arrived ahead of their turn (bounded by the windows in flight), two
    lattice rows of masks, the polygons of open objects, the overview (≤ OVERVIEW_PX a side). `busy_s`: time
    spent in `add` and `close`; `close_s`: in `close` (the part of the stitching left after the last window).
    """

    def __init__(self, plan: AoiPlan, cfg):
        self.plan, self.cfg = plan, cfg
        plan.work_dir.mkdir(parents=True, exist_ok=True)
        self.path = plan.work_dir / "segments.gpkg"
        self.tmp = plan.work_dir / ".segments.tmp.gpkg"
        self.tmp.unlink(missing_ok=True)
        lat = plan.lattice
        self.to_crs = plan.grid.affine_at(0, 0)  # global px → the grid's CRS
        shapely.prepare(plan.aoi)
        self.aoi_px = _to_px(plan.aoi, plan.grid)
        shapely.prepare(self.aoi_px)
        self.f = overview_factor(lat)
        c1, r1 = lat.rect(lat.nx - 1, lat.ny - 1)[2:]
        size = (-(-(c1 - lat.x0) // self.f), -(-(r1 - lat.y0) // self.f))
        self.canvas = Image.new("RGB", size, (255, 255, 255))
        self.lines = Image.new("L", size, 0)  # object outlines, laid over the thumbnails at the end
        self.stitcher = Stitcher(lat, match_iou=cfg.match_iou)
        self.order = list(plan.windows)
        self.next = 0  # index in `order` of the next window to stitch
        self.arrived: dict[tuple[int, int], WindowOutput] = {}
        self.rows: list[dict] = []
        self.written = 0
        self.first = True
        self.busy_s = 0.0
        self.close_s = 0.0

    def add(self, out: WindowOutput) -> None:
        """Persist window `out.ij`, then stitch as far as the windows present allow."""
        t0 = time.perf_counter()
        write_atomic(thumb_file(self.plan, out.ij), out.thumb)
        write_atomic(window_file(self.plan, out.ij), out.pieces)  # last: this window is finished
        self.arrived[out.ij] = out
        self._advance(final=False)
        self.busy_s += time.perf_counter() - t0

    def _advance(self, final: bool) -> None:
        while self.next < len(self.order):
            ij = self.order[self.next]
            out = self.arrived.pop(ij, None)
            if out is not None:
                pieces, thumb = out.pieces, out.thumb
            elif window_file(self.plan, ij).is_file():  # finished by an earlier run
                pieces, thumb = window_file(self.plan, ij).read_bytes(), thumb_file(self.plan, ij).read_bytes()
            elif final:
                raise ValueError(f"window {ij} of area {self.plan.item.item_id!r} has no result")
            else:
                return
            self.next += 1
            with Image.open(io.BytesIO(thumb)) as im:
                c, r = self.plan.lattice.origin(*ij)
                lat = self.plan.lattice
                self.canvas.paste(im.convert("RGB"), ((c - lat.x0) // self.f, (r - lat.y0) // self.f))
            for obj in self.stitcher.push(ij, pieces_from_bytes(pieces)):
                self._emit(obj)

    def _outline(self, draw: ImageDraw.ImageDraw, geom_px, fill, width: int = 1) -> None:
        lat = self.plan.lattice
        for poly in shapely.get_parts(geom_px):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            ring = (np.asarray(poly.exterior.coords) - (lat.x0, lat.y0)) / self.f
            draw.line([tuple(p) for p in ring], fill=fill, width=width)

    def _emit(self, obj) -> None:
        cfg, aoi = self.cfg, self.plan.aoi
        geom = obj.geometry
        if cfg.postprocess is not None:  # in global px, on the exact outline, before the clip
            geom = postprocess_apply(geom, cfg.postprocess)
            if geom is None:
                return
        elif cfg.simplify_px > 0:
            geom = valid_polygonal(shapely.simplify(geom, cfg.simplify_px, preserve_topology=True))
            if geom is None:
                return
        geom_px = geom
        geom = rounded(window_to_lnglat(geom, self.to_crs, self.plan.grid.crs))
        if geom is not None and not aoi.contains(geom):  # clipped last: nothing ends up outside the AOI
            geom = polygonal_part(shapely.intersection(geom, aoi))
        if geom is None or geom.is_empty:
            return
        geom = shapely.orient_polygons(geom, exterior_cw=False)
        area = geodesic_area_m2(geom)
        if area < cfg.min_area_m2:
            return
        # as kept: clipped, specks gone
        kept_px = obj.geometry if cfg.postprocess is None else geom_px
        self._outline(ImageDraw.Draw(self.lines), shapely.intersection(kept_px, self.aoi_px), 255)
        self.rows.append({"item_id": self.plan.item.item_id, "window_count": obj.window_count,
                          "score": round(obj.score, 4), "stability_score": round(obj.stability_score, 4),
                          "area_m2": round(area, 2), "concept": self.plan.item.text, "geometry": geom})
        if len(self.rows) >= BATCH:
            self._write()

    def _write(self) -> None:
        append_rows(self.tmp, self.rows, self.first)
        self.written += len(self.rows)
        self.first, self.rows = False, []

    def close(self) -> tuple[Path, int, bytes]:
        """Stitch what is left (every window must have arrived or have its file) and finish the files."""
        t0 = time.perf_counter()
        self._advance(final=True)
        for obj in self.stitcher.close():
            self._emit(obj)
        if self.rows or self.first:
            self._write()
        self.tmp.replace(self.path)
        self.canvas.paste((255, 0, 255), None, self.lines)
        self._outline(ImageDraw.Draw(self.canvas), self.aoi_px, (255, 200, 0), width=2)
        buf = io.BytesIO()
        self.canvas.save(buf, format="PNG", optimize=True)
        self.close_s = time.perf_counter() - t0
        self.busy_s += self.close_s
        return self.path, self.written, buf.getvalue()


def finish_aoi(plan: AoiPlan, cfg, timings: dict) -> tuple[Path, int, bytes]:
    """Stage 3 of an AOI: `<work dir>/segments.gpkg` from the windows (the reduce `infer_aoi` fed, or one over
    the window files); returns (path, objects written, PNG bytes of the overview picture). `timings["post"]`
    gains the reduce's busy time, `timings["post_close"]` its time in `close`."""
    reduce = getattr(plan, "reduce", None) or AoiReduce(plan, cfg)
    plan.reduce = None
    result = reduce.close()
    timings["post"] = timings.get("post", 0.0) + reduce.busy_s
    timings["post_close"] = timings.get("post_close", 0.0) + reduce.close_s
    return result


def clean_work(cfg, items: list, records: dict, digests: dict) -> int:
    """Remove the work folders (window files, thumbnails) of the AOI `items` the manifest `records` hold as
    done with their current digest (`digests`: item id → digest): their GeoPackage is written, nothing will read
    them again. Failed and unfinished AOIs keep theirs (a rerun resumes from them). The job's work folder (and
    OUTDIR/work) goes too once empty. Returns the folders removed."""
    import shutil

    if not cfg.work_dir:
        return 0
    removed = 0
    for item in items:
        rec = records.get(item.item_id, {})
        if item.kind != "aoi" or rec.get("status") != "done" or rec.get("digest") != digests.get(item.item_id):
            continue
        folder = aoi_work_dir(cfg, item)
        if folder.is_dir():
            shutil.rmtree(folder)
            removed += 1
    for folder in (Path(cfg.work_dir), Path(cfg.work_dir).parent):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break
    return removed


def png_bytes_rgb(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def reduce_image(image: np.ndarray, f: int) -> np.ndarray:
    """(ceil(H / f), ceil(W / f), 3) uint8: an (H, W, 3) uint8 image box-filtered by f."""
    return image if f == 1 else np.asarray(Image.fromarray(image).reduce(f))

"""Whole areas of interest: every object in an AOI, stitched across a lattice of overlapping windows.

The three stages of an `AoiItem` (called from `samgis.batch.work`):

1. `plan_aoi` (load): the AOI in global px at its zoom, the `Lattice` of `window_tiles * 256` px windows
   overlapping by `overlap_px` that covers it, and the windows that meet the AOI.
2. `infer_aoi` (model): per window, fetch its pixels, embed, `Engine.generate` (automatic masks), and write
   its `Piece`s to `<work dir>/w_<row>_<col>.npz` (atomically). A window whose file exists is not redone,
   so a killed job restarted with the same command redoes only unfinished windows. Nothing of a window
   stays in memory after its file is written.
3. `finish_aoi` (CPU): `samgis.vector.stitch.stitch` over the window files in row order; each object as
   it completes is simplified, moved to EPSG:4326, clipped to the AOI, dropped under `min_area_m2`, and
   appended to `<work dir>/segments.gpkg` in batches (memory stays bounded by the open objects). The
   report picture is an overview of the AOI (window thumbnails, `t_<row>_<col>.png`, at most
   `OVERVIEW_PX` a side) with every object outlined and the AOI's outline.

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

from samgis.batch.inputs import AoiItem
from samgis.batch.manifest import write_atomic
from samgis.engine.protocol import Engine
from samgis.vector.polygons import geodesic_area_m2, polygonal_part, rounded, valid_polygonal, window_to_lnglat
from samgis.vector.stitch import Lattice, pieces_bytes, pieces_from_bytes, stitch, window_pieces

LAYER = "segments"
BATCH = 256
"""Objects appended to the GeoPackage per write."""
FIELDS = ("item_id", "window_count", "score", "stability_score", "area_m2")
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


def aoi_work_dir(cfg, item: AoiItem) -> Path:
    """The folder of one AOI's window files: under `cfg.work_dir`, named by the item and a digest of its
    definition (the job options and model are in `cfg.work_dir`'s own name)."""
    from samgis.batch.outputs import slug

    if not cfg.work_dir:
        raise ValueError("AOI jobs need a work folder (JobConfig.work_dir); run them through run_batch")
    digest = hashlib.sha256(repr((item.item_id, item.source, item.zoom, item.wkb_hex)).encode()).hexdigest()[:12]
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
    """`WindowImage` of window `ij`: rgb (size, size, 3) uint8 (window px, row 0 at the top), valid (size, size)
    bool or None, read through the source's reader."""
    return ctx.read(plan.source, lattice_window(plan, ij))


def window_records(plan: AoiPlan, ij: tuple[int, int], image, engine: Engine, ctx, timings: dict) -> list[dict]:
    """`Engine.generate` records of window `ij` whose pixels are `image` (a `WindowImage`): the embedding
    through the process's embedding cache (keyed by the window, `StageContext.embed_window`), automatic masks
    with `ctx.cfg.amg`, segmentations clipped to the valid px. `timings` gains embed and decode seconds."""
    t0 = time.perf_counter()
    emb, _ = ctx.embed_window(engine, plan.source, lattice_window(plan, ij), image.rgb)
    t1 = time.perf_counter()
    records = engine.generate(emb, ctx.cfg.amg, image.rgb)
    if image.valid is not None:
        records = [{**r, "segmentation": np.asarray(r["segmentation"], bool) & image.valid} for r in records]
    t2 = time.perf_counter()
    for name, dt in (("embed", t1 - t0), ("decode", t2 - t1)):
        timings[name] = timings.get(name, 0.0) + dt
    return records


def infer_aoi(plan: AoiPlan, engine: Engine, ctx, timings: dict, prefetch: int = 2) -> AoiPlan:
    """Stage 2 of an AOI: the window files that are missing (module docstring). Up to `prefetch` windows'
    pixels are fetched ahead on threads while the model works. `timings` gains load (time the model waited
    for pixels), embed, decode and the counts `windows` / `windows_run`."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    plan.work_dir.mkdir(parents=True, exist_ok=True)
    todo = [ij for ij in plan.windows if not window_file(plan, ij).is_file()]
    f = overview_factor(plan.lattice)
    with ThreadPoolExecutor(max(1, prefetch), thread_name_prefix="samgis-aoi-fetch") as pool:
        ahead: deque = deque()
        pending = iter(todo)

        def refill() -> None:
            while len(ahead) < max(1, prefetch):
                ij = next(pending, None)
                if ij is None:
                    return
                ahead.append((ij, pool.submit(fetch_pixels, plan, ij, ctx)))

        try:
            refill()
            while ahead:
                ij, fut = ahead.popleft()
                t0 = time.perf_counter()
                image = fut.result()
                refill()
                timings["load"] = timings.get("load", 0.0) + time.perf_counter() - t0
                pieces = window_pieces(plan.lattice, ij, window_records(plan, ij, image, engine, ctx, timings))
                write_atomic(thumb_file(plan, ij), png_bytes_rgb(reduce_image(image.rgb, f)))
                write_atomic(window_file(plan, ij), pieces_bytes(pieces))  # last: this window is finished
        finally:
            for _, fut in ahead:
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
         "area_m2": pd.Series([r["area_m2"] for r in rows], dtype="float64")},
        geometry=gpd.GeoSeries([r["geometry"] for r in rows], crs="EPSG:4326"))


def append_rows(path: Path, rows: list[dict], first: bool) -> None:
    """Write `rows` (FIELDS + geometry, lng/lat) to layer `segments` of the GeoPackage at `path`: a new file
    when `first` (even with no rows: the layer exists), else appended."""
    import pyogrio

    pyogrio.write_dataframe(_frame(rows), path, layer=LAYER, driver="GPKG", append=not first,
                            promote_to_multi=False)


def finish_aoi(plan: AoiPlan, cfg, timings: dict) -> tuple[Path, int, bytes]:
    """Stage 3 of an AOI: `<work dir>/segments.gpkg` from the window files; returns (path, objects written,
    PNG bytes of the overview picture)."""
    t0 = time.perf_counter()
    lat, item = plan.lattice, plan.item
    to_crs = plan.grid.affine_at(0, 0)  # global px → the grid's CRS
    aoi = plan.aoi
    shapely.prepare(aoi)
    path = plan.work_dir / "segments.gpkg"
    tmp = plan.work_dir / ".segments.tmp.gpkg"
    tmp.unlink(missing_ok=True)

    def windows():
        for ij in plan.windows:
            yield ij, pieces_from_bytes(window_file(plan, ij).read_bytes())

    f = overview_factor(lat)
    c1, r1 = lat.rect(lat.nx - 1, lat.ny - 1)[2:]
    canvas = Image.new("RGB", (-(-(c1 - lat.x0) // f), -(-(r1 - lat.y0) // f)), (255, 255, 255))
    for ij in plan.windows:
        with Image.open(thumb_file(plan, ij)) as thumb:
            c, r = lat.origin(*ij)
            canvas.paste(thumb.convert("RGB"), ((c - lat.x0) // f, (r - lat.y0) // f))
    draw = ImageDraw.Draw(canvas)
    aoi_px = _to_px(plan.aoi, plan.grid)
    shapely.prepare(aoi_px)

    def outline(geom_px, colour, width=1):
        for poly in shapely.get_parts(geom_px):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            ring = (np.asarray(poly.exterior.coords) - (lat.x0, lat.y0)) / f
            draw.line([tuple(p) for p in ring], fill=colour, width=width)

    rows: list[dict] = []
    written = 0
    first = True
    for obj in stitch(lat, windows(), match_iou=cfg.match_iou):
        geom = obj.geometry
        if cfg.simplify_px > 0:
            geom = valid_polygonal(shapely.simplify(geom, cfg.simplify_px, preserve_topology=True))
            if geom is None:
                continue
        geom = rounded(window_to_lnglat(geom, to_crs, plan.grid.crs))
        if geom is not None and not aoi.contains(geom):  # clipped last: nothing ends up outside the AOI
            geom = polygonal_part(shapely.intersection(geom, aoi))
        if geom is None or geom.is_empty:
            continue
        geom = shapely.orient_polygons(geom, exterior_cw=False)
        area = geodesic_area_m2(geom)
        if area < cfg.min_area_m2:
            continue
        outline(shapely.intersection(obj.geometry, aoi_px), (255, 0, 255))  # as kept: clipped, specks gone
        rows.append({"item_id": item.item_id, "window_count": obj.window_count, "score": round(obj.score, 4),
                     "stability_score": round(obj.stability_score, 4), "area_m2": round(area, 2), "geometry": geom})
        if len(rows) >= BATCH:
            append_rows(tmp, rows, first)
            written += len(rows)
            first, rows = False, []
    if rows or first:
        append_rows(tmp, rows, first)
        written += len(rows)
    tmp.replace(path)
    outline(aoi_px, (255, 200, 0), width=2)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    timings["post"] = timings.get("post", 0.0) + time.perf_counter() - t0
    return path, written, buf.getvalue()


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

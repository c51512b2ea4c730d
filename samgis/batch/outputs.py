"""Writing a job's files under OUTDIR.

Per item, as it finishes (written atomically before its manifest record):

- map area: `areas/<slug>.geojson`, its features (EPSG:4326);
- image: `masks/<slug>/mask_<i>.png` (8-bit, 255 = mask) and `masks/<slug>/masks.json` (COCO RLE of every
  mask with score, area and bbox; `concept`, the phrase, for images found by one);
- area of interest (`--everything`): `areas/<slug>.gpkg`, its stitched objects (layer `segments`);
- map areas and images: `report/items/<slug>.png`, the picture the report shows.

At the end of every run, from every finished item (this run's and earlier runs'):

- `segments.gpkg`: layer `segments` with item_id, mask_index, score, area_m2 and the geometry (map input),
  or item_id, window_count, score, stability_score, area_m2, concept (AOI input, concept null for automatic
  masks; copied in pages, memory bounded);
- `coco_rle.json`: COCO-style images + annotations with RLE segmentations (image input); category 1
  "segment" for automatic masks and prompts, one category per phrase (named by it) for instances of one,
  whose annotations also carry `concept`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from samgis.batch.manifest import write_atomic
from samgis.batch.work import ItemResult

GPKG = "segments.gpkg"
LAYER = "segments"
COCO = "coco_rle.json"


def slug(item_id: str) -> str:
    """A file-name-safe name for an item id, unique per id (a digest is added when characters are replaced).

    >>> slug("photo_1.jpg"), slug("área 7")
    ('photo_1.jpg', '_rea_7-c6393bd2')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)[:80] or "_"
    if safe != item_id or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"
    return safe


def write_item(result: ItemResult, outdir: Path) -> dict:
    """Write a finished item's files; returns `{"outputs": [paths relative to outdir], "preview": path|None}`."""
    name = slug(result.item_id)
    outputs: list[str] = []

    def put(rel: str, data: bytes) -> None:
        write_atomic(outdir / rel, data)
        outputs.append(rel)

    if result.kind == "aoi":
        import os

        rel = f"areas/{name}.gpkg"
        (outdir / "areas").mkdir(parents=True, exist_ok=True)
        os.replace(result.segments_file, outdir / rel)  # written by the finish stage on this machine
        outputs.append(rel)
    elif result.kind == "map":
        fc = {"type": "FeatureCollection", "features": result.features}
        put(f"areas/{name}.geojson", json.dumps(fc, separators=(",", ":"), allow_nan=False).encode())
    else:
        listing = []
        for m in result.masks:
            rel = f"masks/{name}/mask_{m['index']:03d}.png"
            put(rel, m["png"])
            listing.append({k: m[k] for k in ("index", "score", "area", "bbox", "rle", "concept") if k in m}
                           | {"png": Path(rel).name})
        doc = {"file_name": result.item_id, "height": result.image_size[0], "width": result.image_size[1],
               "masks": listing}
        put(f"masks/{name}/masks.json", json.dumps(doc, indent=1).encode())
    preview = None
    if result.preview is not None:
        preview = f"report/items/{name}.png"
        put(preview, result.preview)
    return {"outputs": outputs, "preview": preview}


def write_segments(outdir: Path, map_ids: list[str], records: dict) -> Path | None:
    """`segments.gpkg` from the finished map items among `map_ids` (in that order); None without map items."""
    if not map_ids:
        return None
    import geopandas as gpd

    from samgis.vector.export import write_geopackage

    features = []
    for item_id in map_ids:
        rec = records.get(item_id)
        if rec is None or rec.get("status") != "done":
            continue
        fc = json.loads((outdir / f"areas/{slug(item_id)}.geojson").read_text())
        features.extend(fc["features"])
    path = outdir / GPKG
    tmp = outdir / f".tmp-{GPKG}"
    tmp.unlink(missing_ok=True)
    if features:
        write_geopackage({"type": "FeatureCollection", "features": features}, tmp, layer=LAYER)
    else:
        import pandas as pd

        empty = gpd.GeoDataFrame({"item_id": pd.Series([], dtype="string"),
                                  "mask_index": pd.Series([], dtype="Int64"),
                                  "score": pd.Series([], dtype="float64"),
                                  "area_m2": pd.Series([], dtype="float64")},
                                 geometry=gpd.GeoSeries([], crs="EPSG:4326"))
        empty.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio")
    tmp.replace(path)
    return path


def write_coco(outdir: Path, image_ids: list[str], records: dict) -> Path | None:
    """`coco_rle.json` from the finished image items among `image_ids`; None without image items."""
    if not image_ids:
        return None
    images, annotations = [], []
    categories = {None: 1}  # automatic masks and prompts ("segment"); then one per phrase, in order of appearance
    for item_id in image_ids:
        rec = records.get(item_id)
        if rec is None or rec.get("status") != "done":
            continue
        doc = json.loads((outdir / f"masks/{slug(item_id)}/masks.json").read_text())
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": item_id, "height": doc["height"], "width": doc["width"]})
        for m in doc["masks"]:
            concept = m.get("concept")
            category = categories.setdefault(concept or None, len(categories) + 1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "segmentation": m["rle"], "score": m["score"], "area": m["area"],
                                "bbox": m["bbox"], "iscrowd": 0} | ({"concept": concept} if concept else {}))
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": i, "name": "segment" if name is None else name} for name, i in categories.items()]}
    path = outdir / COCO
    write_atomic(path, json.dumps(doc).encode())
    return path


PAGE = 4096
"""Features copied per read when `segments.gpkg` is assembled from AOI files."""


def write_aoi_segments(outdir: Path, aoi_ids: list[str], records: dict) -> Path | None:
    """`segments.gpkg` from the finished AOI items among `aoi_ids` (in that order), copied `PAGE` features
    at a time from each `areas/<slug>.gpkg`; None without AOI items."""
    if not aoi_ids:
        return None
    import pyogrio

    from samgis.batch.aoi import LAYER as AOI_LAYER, append_rows

    path = outdir / GPKG
    tmp = outdir / f".tmp-{GPKG}"
    tmp.unlink(missing_ok=True)
    append_rows(tmp, [], first=True)
    for item_id in aoi_ids:
        rec = records.get(item_id)
        if rec is None or rec.get("status") != "done":
            continue
        src = outdir / f"areas/{slug(item_id)}.gpkg"
        n = pyogrio.read_info(src, layer=AOI_LAYER)["features"]
        for start in range(0, n, PAGE):
            page = pyogrio.read_dataframe(src, layer=AOI_LAYER, skip_features=start, max_features=PAGE)
            pyogrio.write_dataframe(page, tmp, layer=LAYER, driver="GPKG", append=True, promote_to_multi=False)
    tmp.replace(path)
    return path

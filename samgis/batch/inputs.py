"""Batch inputs → items: map areas (prompt features grouped by `area`) or images in a folder.

Map input (GeoJSON, GeoPackage, anything pyogrio reads): one feature per prompt, in any CRS (moved to
EPSG:4326 lng/lat degrees). Properties:

- `area` (required): features with the same value form one item.
- `label`: points only, 1 include (default) / 0 exclude.
- `zoom`, `source`: per area (the first non-empty value in the area wins; differing values are an error of
  that area); else the job's `--zoom` / `--source`.
- `object` (optional): prompts with the same (area, object) form one object: their points together and
  at most one box. Without it, every box and every include point is an object of its own, and exclude
  points apply to every object of the area.

Polygons (and multipolygons) are box prompts: their bounding box. Every object gives at most one segment,
whose `mask_index` is the object's position in the area (first appearance in the file).

Image input: a folder of PNG / JPEG files and a prompts JSON `{"file name": {"<label>": [[x, y], …]}}`
(label "1" include, "0" exclude; x, y image px, SAM convention: integer values are pixel centres), or
`{"file name": {"text": "phrase"}}` (every instance of the phrase, `samgis.batch.concepts`); an entry holds
points or a phrase, not both. An image without an entry gets the job's `--text` phrase when there is one, else
automatic masks. The prompts file is `--prompts FILE`, else `INPUT/prompts.json`.

AOI input (`everything=True`, `samgis batch AOI.gpkg --everything`): one item per Polygon / MultiPolygon
feature, any CRS (moved to EPSG:4326); every object in it is segmented (automatic masks over a lattice of
overlapping windows, stitched). The item id is the feature's `area`, `id` or `name` property (the first
present), else "aoi-<k>" (k its position in the file); `zoom` / `source` per feature, else the job's. A
phrase (`--text`, or per feature from the `text` property / `--text-column`) finds every instance of it
instead of every object; `--text` on a vector file implies `--everything`.

Problems that concern one item (an area without zoom, prompts for a missing image) do not stop the job:
the item carries a `problem` and is recorded as failed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files a folder job picks up (what `samgis.predict.read_image` decodes)."""
PROMPTS_FILE = "prompts.json"


@dataclass(frozen=True)
class MapObject:
    """One object to segment in a map area, all coordinates lng/lat degrees EPSG:4326.

    `points`: ((lng, lat), …) with `labels` (1 include, 0 exclude). `box`: (west, south, east, north) or None.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def lnglat(self) -> list[tuple[float, float]]:
        """Every prompt coordinate: the points, then the box corners (NW, SE)."""
        out = list(self.points)
        if self.box is not None:
            w, s, e, n = self.box
            out += [(w, n), (e, s)]
        return out


@dataclass(frozen=True)
class MapItem:
    """One area: objects segmented on tiles of `source` at `zoom`."""

    item_id: str
    source: str | None
    zoom: int | None
    objects: tuple[MapObject, ...]
    problem: str | None = None
    kind: str = field(default="map", init=False)


@dataclass(frozen=True)
class ImageItem:
    """One image file; `points` ((x, y), …) image px, SAM convention, with `labels`; no points → automatic."""

    item_id: str
    path: str
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    problem: str | None = None
    kind: str = field(default="image", init=False)
    text: str | None = None
    """A phrase: every instance of it instead of automatic masks (no points then)."""

    @property
    def automatic(self) -> bool:
        return not self.points and not self.text


@dataclass(frozen=True)
class AoiItem:
    """One area of interest: `wkb_hex`, its Polygon / MultiPolygon in lng/lat degrees EPSG:4326 (hex WKB, so
    the item stays hashable and picklable), segmented everywhere on tiles of `source` at `zoom`."""

    item_id: str
    source: str | None
    zoom: int | None
    wkb_hex: str
    problem: str | None = None
    kind: str = field(default="aoi", init=False)
    text: str | None = None
    """A phrase: every instance of it instead of every object."""

    @property
    def polygon(self):
        import shapely

        return shapely.from_wkb(bytes.fromhex(self.wkb_hex))


Item = MapItem | ImageItem | AoiItem


def item_digest(item: Item, options: dict) -> str:
    """SHA-256 of an item's definition and the job options that shape its output (resume key)."""
    doc = {"item": asdict(item), "options": options}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def load_items(path: str | Path, *, zoom: int | None = None, source: str | None = None,
               prompts_file: str | Path | None = None, everything: bool = False, text: str | None = None,
               text_column: str | None = None) -> list[Item]:
    """Items of a job: a folder → `image_items`, a vector file → `map_items` (`aoi_items` with `everything`,
    `text` or `text_column`). `text`: the job's phrase (items without their own); raises ValueError when it is
    not a valid phrase."""
    path = Path(path)
    text = job_text(text)
    if path.is_dir():
        if everything or text_column:
            raise ValueError(f"--{'everything' if everything else 'text-column'} needs a vector file of areas, and "
                             f"{str(path)!r} is a folder")
        return image_items(path, prompts_file, text=text)
    if path.is_file():
        if everything or text or text_column:
            return aoi_items(path, zoom=zoom, source=source, text=text, text_column=text_column)
        return map_items(path, zoom=zoom, source=source)
    raise ValueError(f"input {str(path)!r} is neither a folder of images nor a vector file")


def job_text(text: str | None, field: str = "--text") -> str | None:
    """A job's phrase checked as the services check one (`samgis.services.concepts.check_text`), stripped;
    None stays None; ValueError naming `field` otherwise."""
    if text is None:
        return None
    from samgis.errors import InvalidRequest
    from samgis.services.concepts import check_text

    try:
        return check_text(text, field)
    except InvalidRequest as exc:
        raise ValueError(exc.message) from None


# --- map areas ---------------------------------------------------------------------------------------------

def _value(v):
    """A property value with pandas' missing markers (None, NaN, NA) as None."""
    if v is None:
        return None
    try:
        if isinstance(v, float) and math.isnan(v):
            return None
        import pandas as pd

        if v is pd.NA:
            return None
    except TypeError:
        pass
    return v


def map_items(path: str | Path, *, zoom: int | None = None, source: str | None = None) -> list[MapItem]:
    """One `MapItem` per distinct `area` of a vector file of prompt features (module docstring has the rules).

    Raises ValueError for a file that cannot be read or has no `area` property; problems of one area are
    kept on its item instead.
    """
    import geopandas as gpd

    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio / GDAL raise several types
        raise ValueError(f"cannot read prompt features from {str(path)!r}: {exc}") from None
    if "area" not in frame.columns:
        raise ValueError(f"{str(path)!r}: every prompt feature needs an 'area' property")
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    areas: dict[str, list] = {}
    for row in frame.itertuples(index=False):
        area = _value(getattr(row, "area"))
        key = "" if area is None else str(area)
        areas.setdefault(key, []).append(row)
    return [_area_item(key, rows, frame.columns, zoom, source) for key, rows in areas.items()]


def _area_item(area: str, rows: list, columns, zoom: int | None, source: str | None) -> MapItem:
    problems: list[str] = []
    if area == "":
        problems.append("features without an 'area' value")

    def per_area(name: str, default):
        values = {_value(getattr(r, name)) for r in rows} - {None} if name in columns else set()
        if len(values) > 1:
            problems.append(f"{name} differs between its features: {sorted(map(str, values))}")
        return next(iter(values)) if len(values) == 1 else default

    z = per_area("zoom", zoom)
    src = per_area("source", source)
    try:
        z = None if z is None else int(z)
    except (TypeError, ValueError):
        problems.append(f"zoom {z!r} is not an integer")
        z = None
    if z is None:
        problems.append("no zoom: give a 'zoom' property or --zoom")
    if src is None:
        problems.append("no tile source: give a 'source' property or --source")

    grouped: dict[str, dict] = {}  # object name → {"points", "labels", "box"}
    loose: list[dict] = []  # objects without a name, in file order
    shared_excludes: list[tuple[float, float]] = []
    for k, r in enumerate(rows):
        geom = r.geometry
        name = _value(getattr(r, "object")) if "object" in columns else None
        if geom is None or geom.is_empty:
            problems.append(f"feature {k} has no geometry")
            continue
        if geom.geom_type == "Point":
            label = _value(getattr(r, "label")) if "label" in columns else None
            label = 1 if label is None else label
            if label not in (0, 1):
                problems.append(f"feature {k}: label must be 1 (include) or 0 (exclude), got {label!r}")
                continue
            pt = (float(geom.x), float(geom.y))
            if name is not None:
                obj = grouped.setdefault(str(name), {"points": [], "labels": [], "box": None})
                obj["points"].append(pt)
                obj["labels"].append(int(label))
            elif label == 1:
                loose.append({"points": [pt], "labels": [1], "box": None})
            else:
                shared_excludes.append(pt)
        elif geom.geom_type in ("Polygon", "MultiPolygon"):
            box = tuple(float(v) for v in geom.bounds)
            if name is not None:
                obj = grouped.setdefault(str(name), {"points": [], "labels": [], "box": None})
                if obj["box"] is not None:
                    problems.append(f"object {name!r} has more than one box")
                obj["box"] = box
            else:
                loose.append({"points": [], "labels": [], "box": box})
        else:
            problems.append(f"feature {k}: {geom.geom_type} is not a prompt (points and polygons are)")
    objects = []
    for obj in [*grouped.values(), *loose]:
        points = obj["points"] + shared_excludes
        labels = obj["labels"] + [0] * len(shared_excludes)
        if obj["box"] is None and 1 not in labels:
            problems.append("an object has exclude points only")
            continue
        objects.append(MapObject(points=tuple(points), labels=tuple(labels), box=obj["box"]))
    if not objects and not problems:
        problems.append("no include point or box")
    return MapItem(item_id=area, source=None if src is None else str(src), zoom=z, objects=tuple(objects),
                   problem="; ".join(problems) or None)


# --- areas of interest -------------------------------------------------------------------------------------

def aoi_items(path: str | Path, *, zoom: int | None = None, source: str | None = None, text: str | None = None,
              text_column: str | None = None) -> list[AoiItem]:
    """One `AoiItem` per feature of a vector file of areas (module docstring has the rules).

    `text`: the phrase of features without their own, from the `text_column` property (default "text").
    Raises ValueError for a file that cannot be read, or a `text_column` it does not have; a feature that is
    not a valid polygon, lacks a zoom or source, or has a phrase that is not one, gives an item with a `problem`.
    """
    import geopandas as gpd
    import shapely

    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio / GDAL raise several types
        raise ValueError(f"cannot read areas from {str(path)!r}: {exc}") from None
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs(4326)
    id_column = next((c for c in ("area", "id", "name") if c in frame.columns), None)
    if text_column is not None and text_column not in frame.columns:
        raise ValueError(f"{str(path)!r} has no column {text_column!r} (--text-column); its columns: "
                         f"{', '.join(c for c in frame.columns if c != 'geometry')}")
    text_column = text_column or "text"
    items = []
    for k, row in enumerate(frame.itertuples(index=False)):
        value = _value(getattr(row, id_column)) if id_column else None
        item_id = f"aoi-{k}" if value is None else str(value)
        problems = []
        z = _value(getattr(row, "zoom")) if "zoom" in frame.columns else None
        z = zoom if z is None else z
        src = _value(getattr(row, "source")) if "source" in frame.columns else None
        src = source if src is None else str(src)
        try:
            z = None if z is None else int(z)
        except (TypeError, ValueError):
            problems.append(f"zoom {z!r} is not an integer")
            z = None
        if z is None and not problems:
            problems.append("no zoom: give a 'zoom' property or --zoom")
        if src is None:
            problems.append("no tile source: give a 'source' property or --source")
        phrase = _value(getattr(row, text_column)) if text_column in frame.columns else None
        if phrase is None:
            phrase = text
        else:
            try:
                phrase = job_text(phrase, text_column)
            except ValueError as exc:
                problems.append(str(exc))
                phrase = None
        geom = row.geometry
        wkb = ""
        if geom is None or geom.is_empty or geom.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(f"feature {k}: an area must be a Polygon or MultiPolygon, got "
                            f"{'nothing' if geom is None or geom.is_empty else geom.geom_type}")
        elif not geom.is_valid:
            problems.append(f"feature {k}: invalid polygon ({shapely.is_valid_reason(geom)})")
        else:
            wkb = shapely.to_wkb(geom, hex=True)
        items.append(AoiItem(item_id=item_id, source=src, zoom=z, wkb_hex=wkb, problem="; ".join(problems) or None,
                             text=phrase))
    return items


# --- image folders -----------------------------------------------------------------------------------------

def image_items(folder: str | Path, prompts_file: str | Path | None = None, text: str | None = None) -> list[ImageItem]:
    """One `ImageItem` per PNG / JPEG in `folder` (sorted by name), with prompts from the prompts JSON; `text`
    (a checked phrase) for images without an entry.

    Raises ValueError when the prompts file is not a JSON object; a malformed entry, or an entry naming a
    file that is not in the folder, gives a failed item.
    """
    folder = Path(folder)
    if prompts_file is None and (folder / PROMPTS_FILE).is_file():
        prompts_file = folder / PROMPTS_FILE
    prompts: dict = {}
    if prompts_file is not None:
        try:
            prompts = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read prompts file {str(prompts_file)!r}: {exc}") from None
        if not isinstance(prompts, dict):
            raise ValueError(f"prompts file {str(prompts_file)!r}: expected {{\"file name\": {{\"1\": [[x, y]]}}}}")
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    items = [_image_item(folder, name, prompts.get(name), text) for name in files]
    for name in prompts:
        if name not in files:
            items.append(ImageItem(item_id=name, path=str(folder / name),
                                   problem=f"the prompts file names {name!r}, which is not an image in {folder}"))
    return items


def _image_item(folder: Path, name: str, entry, text: str | None = None) -> ImageItem:
    path = str(folder / name)
    if entry is None:
        return ImageItem(item_id=name, path=path, text=text)
    if not isinstance(entry, dict):
        return ImageItem(item_id=name, path=path, problem='prompts: expected {"1": [[x, y], …], "0": [[x, y], …]} '
                                                          'or {"text": "phrase"}')
    if "text" in entry:
        if set(entry) != {"text"}:
            return ImageItem(item_id=name, path=path, problem='prompts: an entry holds click points or a "text" '
                                                              'phrase, not both (they ask different questions)')
        try:
            return ImageItem(item_id=name, path=path, text=job_text(entry["text"], "prompts.text"))
        except ValueError as exc:
            return ImageItem(item_id=name, path=path, problem=str(exc))
    points, labels = [], []
    for label, xys in entry.items():
        if str(label) not in ("0", "1"):
            return ImageItem(item_id=name, path=path, problem=f"prompts: label {label!r} is not 1 or 0")
        if not isinstance(xys, list) or not all(
                isinstance(xy, list) and len(xy) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in xy)
                for xy in xys):
            return ImageItem(item_id=name, path=path, problem=f"prompts[{label!r}]: expected a list of [x, y]")
        points += [(float(x), float(y)) for x, y in xys]
        labels += [int(label)] * len(xys)
    if points and 1 not in labels:
        return ImageItem(item_id=name, path=path, problem="prompts: exclude points alone select nothing")
    return ImageItem(item_id=name, path=path, points=tuple(points), labels=tuple(labels))

"""Small batch jobs over the synthetic scene: a prompt-features file of map areas and a folder of images.

Map areas (source "Scene" of `SceneTileServer.providers()`):
    "mid-z17": a click on mid-building-a, a box around mid-building-b, a click in mid-lake (not its island)
    "field-z19": a click on mid-field at z 19, where the field spans more than one 1024 px window
    "north-z16": a box around north-field (zoom and source from the job)
    "broken": a click on north-building from source "SceneError" (HTTP 500 on every tile)

Images (PNG mosaics of scene tiles): "a.png" with an include click on a shape, "b.png" with no prompts
(automatic masks), "c.png" with an include and an exclude click; `broken=True` adds "zz-broken.png",
bytes that are not an image.
"""

from __future__ import annotations

import json
from pathlib import Path

import mercantile
from PIL import Image
from shapely.geometry import box, mapping

from tests.support.scene import Scene, render_mosaic

MAP_AREAS = ("mid-z17", "field-z19", "north-z16", "broken")


def _point(lng: float, lat: float, area: str, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]},
            "properties": {"area": area, **props}}


def _box(poly, area: str, pad: float = 0.0002, **props) -> dict:
    w, s, e, n = poly.bounds
    return {"type": "Feature", "geometry": mapping(box(w - pad, s - pad, e + pad, n + pad)),
            "properties": {"area": area, **props}}


def interior_point(poly) -> tuple[float, float]:
    """A point well inside a lng/lat polygon (the centre of its largest inscribed circle)."""
    import shapely

    p = shapely.maximum_inscribed_circle(poly, tolerance=1e-7).coords[0]
    return float(p[0]), float(p[1])


def write_map_job(scene: Scene, path: Path, source: str = "Scene") -> Path:
    """A GeoJSON of prompt features for the areas of the module docstring."""
    s = scene.shape
    feats = [
        _point(*interior_point(s("mid-building-a").polygon), "mid-z17", zoom=17, source=source, label=1),
        _box(s("mid-building-b").polygon, "mid-z17"),
        _point(*interior_point(s("mid-lake").polygon), "mid-z17", label=1),
        _point(*interior_point(s("mid-field").polygon), "field-z19", zoom=19, source=source),
        _box(s("north-field").polygon, "north-z16", pad=0.0005),
        _point(*interior_point(s("north-building").polygon), "broken", zoom=17, source="SceneError"),
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def write_image_job(scene: Scene, folder: Path, broken: bool = False, n_extra: int = 0) -> Path:
    """A folder of scene mosaics (256 x 384 px crops) + prompts.json; returns the folder.

    `n_extra` adds images "x00.png", … (automatic masks) to make a longer job.
    """
    folder.mkdir(parents=True, exist_ok=True)
    prompts = {}
    shapes = ["mid-building-a", "mid-lake", "equator-building", "north-field"]
    for k, name in enumerate(["a.png", "b.png", "c.png"] + [f"x{i:02d}.png" for i in range(n_extra)]):
        shape = scene.shape(shapes[k % len(shapes)])
        lng, lat = interior_point(shape.polygon)
        z = 17 if "building" in shape.name else 16
        t = mercantile.tile(lng, lat, z)
        fx, fy = mercantile.xy(lng, lat)
        b = mercantile.xy_bounds(t.x - 1, t.y - 1, z)
        res = (mercantile.xy_bounds(0, 0, 0).right * 2) / (256 * 2**z)
        gx, gy = (fx - b.left) / res, (b.top - fy) / res  # continuous px of the 3 x 3 tile mosaic
        r0, c0 = int(gy) - 100 - 7 * k, int(gx) - 150 - 11 * k  # the click lands at a different place each time
        img = render_mosaic(scene, z, t.x - 1, t.y - 1, tiles=3)[r0:r0 + 256, c0:c0 + 384]
        Image.fromarray(img).save(folder / name)
        x, y = gx - c0 - 0.5, gy - r0 - 0.5  # image px, SAM convention
        if name == "a.png":
            prompts[name] = {"1": [[round(x, 2), round(y, 2)]]}
        elif name == "c.png":
            prompts[name] = {"1": [[round(x, 2), round(y, 2)]], "0": [[2.0, 2.0]]}
    if broken:
        (folder / "zz-broken.png").write_bytes(b"this is not a png")
    (folder / "prompts.json").write_text(json.dumps(prompts))
    return folder


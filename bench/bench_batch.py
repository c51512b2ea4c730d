"""Benchmark `samgis batch`: items/s of the local and the Ray engine with 1 and 2 workers on the same job, next
to the encoder-bound ceiling measured on the same machine (the image encoder alone, back to back, in this
process). The ratio to the ceiling is the figure to improve.

The job: a folder of 1024 x 1024 scene mosaics (from the synthetic tile scene of tests/support), one include
click each, or (`--job map`) map areas on a local tile server, one clicked building per area. Weights are
random (no download): `--model sam_vit_b` (default) or `test_vit_tiny` (fast, overhead-bound).

Run: `.venv/bin/python bench/bench_batch.py --items 8` (about 5–10 minutes for sam_vit_b on 2 CPU cores).
Figures include each run's start-up (model load; for Ray, actors and worker imports): the wall time a user
waits. Ray runs on a local instance with all CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samgis.batch import JobConfig, run_batch  # noqa: E402
from samgis.engine.factory import EngineRecipe  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.threads import in_fresh_thread  # noqa: E402
from tests.conftest import save_random_checkpoint  # noqa: E402  (also registers test_vit_tiny)
from tests.support.batch_jobs import interior_point  # noqa: E402
from tests.support.scene import default_scene, render_mosaic  # noqa: E402
from tests.support.tileserver import SceneTileServer  # noqa: E402


def image_job(folder: Path, n: int) -> list[np.ndarray]:
    """`n` 1024 x 1024 mosaics around the scene's shapes with a click on each; returns the images."""
    scene = default_scene()
    folder.mkdir(parents=True)
    prompts, images = {}, []
    for k in range(n):
        shape = scene.shapes[k % len(scene.shapes)]
        lng, lat = interior_point(shape.polygon)
        z = 16 + (k // len(scene.shapes)) % 3
        t = mercantile.tile(lng, lat, z)
        img = render_mosaic(scene, z, t.x - 2, t.y - 2, tiles=4)
        name = f"img{k:03d}.png"
        Image.fromarray(img).save(folder / name)
        images.append(img)
        prompts[name] = {"1": [[512.0, 512.0]]}
    (folder / "prompts.json").write_text(json.dumps(prompts))
    return images


def map_job(path: Path, n: int) -> None:
    """`n` areas, each one click on a scene shape at z 16–18."""
    scene = default_scene()
    feats = []
    for k in range(n):
        shape = scene.shapes[k % len(scene.shapes)]
        lng, lat = interior_point(shape.polygon)
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]},
                      "properties": {"area": f"a{k:03d}", "zoom": 16 + (k // len(scene.shapes)) % 3}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def ceiling(factory: EngineRecipe, images: list[np.ndarray], repeats: int) -> float:
    """Items/s of the image encoder alone on `images` (one embed per item), after one warm-up embed."""
    engine = factory()
    engine.embed(images[0])
    t0 = time.perf_counter()
    done = 0
    for img in images[:repeats]:
        engine.embed(img)
        done += 1
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sam_vit_b", help="sam_vit_b | sam_vit_l | test_vit_tiny (random weights)")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--job", choices=["images", "map"], default="images")
    ap.add_argument("--ceiling-items", type=int, default=4, help="embeds timed for the ceiling")
    ap.add_argument("--configs", default="local:1,local:2,ray:1,ray:2")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="samgis-bench-batch-"))
    spec = get_model_spec(args.model)
    # Off the main thread: a thread that ran parallel torch ops and lives on slows every later op of the
    # process (see samgis/engine/threads.py); the local runs and the ceiling run in this process.
    ckpt = in_fresh_thread(save_random_checkpoint, spec.arch, tmp / f"{spec.model_id}.pth")
    factory = EngineRecipe(spec, str(ckpt), device="cpu")
    print(f"model {spec.model_id} (random weights), cpu, {os.cpu_count()} CPUs, job: {args.items} {args.job}")

    with SceneTileServer(default_scene()) as tiles:
        providers = tiles.write_providers(tmp / "providers.json")
        cfg = JobConfig(providers=str(providers), builtin_sources=False, max_windows_per_object=4)
        if args.job == "images":
            images = image_job(tmp / "images", args.items)
            job = tmp / "images"
        else:
            map_job(tmp / "areas.geojson", args.items)
            images = image_job(tmp / "ceiling-images", min(args.items, args.ceiling_items))
            job = tmp / "areas.geojson"
        ceil = ceiling(factory, images, args.ceiling_items)
        print(f"encoder-bound ceiling: {ceil:.3f} items/s ({1 / ceil:.2f} s per embed)")

        rows = []
        ray_started = False
        for conf in args.configs.split(","):
            engine, workers = conf.split(":")
            if engine == "ray" and not ray_started:
                import ray

                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
                ray.data.DataContext.get_current().enable_progress_bars = False
                ray_started = True
            out = tmp / f"out-{engine}-{workers}"
            s = run_batch(job, out, factory, cfg=cfg, engine=engine, workers=int(workers), source="Scene",
                          progress=False)
            rows.append((engine, int(workers), s.done, s.failed, s.seconds, s.items_per_s))
        if ray_started:
            import ray

            ray.shutdown()

    print()
    print(f"{'engine':8s} {'workers':>7s} {'done':>5s} {'failed':>6s} {'seconds':>8s} {'items/s':>8s} "
          f"{'/ ceiling':>9s}")
    for engine, workers, done, failed, secs, rate in rows:
        print(f"{engine:8s} {workers:7d} {done:5d} {failed:6d} {secs:8.1f} {rate:8.3f} {rate / ceil:9.2f}")
    print(f"{'ceiling':8s} {'':7s} {'':5s} {'':6s} {'':8s} {ceil:8.3f} {1.0:9.2f}")


if __name__ == "__main__":
    main()

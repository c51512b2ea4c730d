"""Benchmark `samgis batch`: items/s of the local and the Ray engine with 1 and 2 workers on the same job, next
to the encoder-bound ceiling measured on the same machine (the image encoder alone, back to back, in this
process). The ratio to the ceiling is the figure to improve.

`--job aoi`: one whole area (`--everything`) of `--aoi-side`² lattice windows (default 10 x 10 = 100) over the
synthetic scene of tests/support/aoi_scene.py; windows/s of local, Ray 1 and Ray 2 workers against the
ceiling (windows/s of `embed` alone with the same engine, on the job's own windows), whole-run and steady
(first to last finished window: Ray's start-up amortised), the share of the wall time the stitching reduce
was busy, and peak RSS of the driver and of the Ray workers (model actors, reduce actor; sampled at 10 Hz).
Engine: `--model colour` (default for this job): the colour-region test engine with `--embed-delay` seconds of
sleep in `embed` standing in for the encoder (the stitching and the rest are real), or a SAM 2.1 model with
random weights (`--model sam2.1_hiera_tiny`: a real encoder; automatic masks from a `--points-per-side`²
grid). Run: `.venv/bin/python bench/bench_batch.py --job aoi` (about 6–7 minutes with the defaults on the
shared 2-core VM; a SAM 2.1 tiny embed took 33 s there under load, so real-model runs of 100 windows need
a quieter or bigger machine).

`--job images` (default): a folder of 1024 x 1024 scene mosaics (from the synthetic tile scene of tests/support), one include
click each, or (`--job map`) map areas on a local tile server, one clicked building per area. Weights are
random (no download): `--model sam_vit_b` (default) or `test_vit_tiny` (fast, overhead-bound).

Run: `.venv/bin/python bench/bench_batch.py --items 8` (about 5–10 minutes for sam_vit_b on 2 CPU cores).
Figures include each run's start-up (model load; for Ray, actors and worker imports): the wall time a user
waits. Ray runs on a local instance with all CPUs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
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


def _status_kb(pid: int | str, key: str) -> int:
    """A /proc/<pid>/status figure in kB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(key + ":")), 0)
    except OSError:
        return 0


def _descendants(root: int) -> list[int]:
    """Pids of every process under `root` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Sampler:
    """A thread that polls every `period` s: when each window file appears under `work`, and the resident
    size of this process and of its Ray worker processes (by role, from their process titles)."""

    def __init__(self, work: Path, period: float = 0.1):
        self.work, self.period = work, period
        self.seen: dict[str, float] = {}
        self.peak_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        now = time.perf_counter()
        if self.work.is_dir():
            for f in self.work.rglob("w_*.npz"):
                self.seen.setdefault(f.name, now)
        roles = {"driver": [os.getpid()], "model actor": [], "reduce actor": []}
        for pid in _descendants(os.getpid()):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "_WindowActor" in title or "_ModelActor" in title:
                roles["model actor"].append(pid)
            elif "_ReduceActor" in title:
                roles["reduce actor"].append(pid)
        for role, pids in roles.items():
            for pid in pids:
                self.peak_kb[role] = max(self.peak_kb.get(role, 0), _status_kb(pid, "VmRSS"))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def steady(self) -> tuple[float, float]:
        """(first window's time, windows/s from the first to the last window file)."""
        times = sorted(self.seen.values())
        if len(times) < 2:
            return (times[0] if times else 0.0), 0.0
        return times[0], (len(times) - 1) / (times[-1] - times[0])


def aoi_main(args, tmp: Path) -> None:
    """The `--job aoi` benchmark (module docstring)."""
    from concurrent.futures import ThreadPoolExecutor

    import geopandas as gpd

    from samgis.batch.aoi import fetch_pixels, plan_aoi
    from samgis.batch.inputs import load_items
    from samgis.batch.work import StageContext
    from samgis.engine.protocol import AmgOptions
    from tests.support import aoi_scene as S
    from tests.support.colour_engine import ColourRegionEngine
    from tests.support.tileserver import SceneTileServer

    n = args.aoi_side
    if args.model == "colour":
        factory = functools.partial(ColourRegionEngine, automatic="regions", embed_delay_s=args.embed_delay)
        what = (f"colour-region test engine, embed = {args.embed_delay:.2f} s sleep standing in for the encoder "
                "(automatic masks, stitching, tiles and files are real)")
        amg = AmgOptions()
    else:
        import torch

        from samgis.engine.backends.sam2 import build_model

        spec = get_model_spec(args.model)

        def save() -> Path:
            torch.manual_seed(0)
            path = tmp / f"{spec.model_id}.pt"
            torch.save({"model": build_model(spec.config).state_dict()}, path)
            return path

        factory = EngineRecipe(spec, str(in_fresh_thread(save)), device="cpu")
        what = f"{spec.model_id}, random weights, cpu, automatic masks from a {args.points_per_side}² point grid"
        amg = AmgOptions(points_per_side=args.points_per_side)
    scene = S.big_scene(n)
    aoi = tmp / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["bench"]}, geometry=[S.big_aoi(n)], crs="EPSG:4326").to_file(aoi, engine="pyogrio")
    load = os.getloadavg()
    print(f"job: one AOI of {n} x {n} = {n * n} windows (1024 px, overlap 128) at z {S.Z}; engine: {what}; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the start (shared machine)")

    with SceneTileServer(scene) as tiles:
        providers = tiles.write_providers(tmp / "providers.json")
        # every run reads the tiles from one disk tile cache, filled first: the scene's tiles are rendered on
        # this machine's CPUs, which no real tile server would take from the job
        cfg = JobConfig(providers=str(providers), builtin_sources=False, tile_timeout_s=30.0, tile_retries=1,
                        tile_cache_dir=str(tmp / "tiles"), amg=amg, torch_threads=args.torch_threads)
        item = load_items(aoi, zoom=S.Z, source="Scene", everything=True)[0]
        ctx = StageContext(replace(cfg, work_dir=str(tmp / "ceiling-work")))
        plan = plan_aoi(item, ctx)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            images = list(pool.map(lambda ij: fetch_pixels(plan, ij, ctx), plan.windows))[:args.ceiling_items + 1]
        ctx.close()
        print(f"tiles of the {len(plan.windows)} windows fetched into the disk tile cache in "
              f"{time.perf_counter() - t0:.0f} s (before the timed runs)")

        def embeds() -> float:
            engine = factory()
            engine.embed(images[0])  # warm-up
            t0 = time.perf_counter()
            for img in images[1:]:
                engine.embed(img)
            return len(images[1:]) / (time.perf_counter() - t0)

        ceil = in_fresh_thread(embeds)
        print(f"encoder-bound ceiling (embed alone, one engine, {len(images) - 1} windows): {ceil:.3f} windows/s")

        rows, frames = [], {}
        ray_started = False
        for conf in args.configs.split(","):
            executor, workers = conf.split(":")
            if executor == "ray" and not ray_started:
                import ray

                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
                ray_started = True
            out = tmp / f"out-{executor}-{workers}"
            with Sampler(out / "work") as sampler:
                t0 = time.perf_counter()
                s = in_fresh_thread(run_batch, aoi, out, factory, cfg=cfg, executor=executor, workers=int(workers),
                                    zoom=S.Z, source="Scene", everything=True, progress=False,
                                    model_key="bench")
                wall = time.perf_counter() - t0
            rec = json.loads((out / "manifest" / "items.jsonl").read_text().splitlines()[-1])
            assert s.done == 1, s.errors
            windows = rec["timings"]["windows_run"]
            first, steady = sampler.steady()
            frames[conf] = gpd.read_file(out / "segments.gpkg")
            rows.append((executor, int(workers), windows, wall, windows / wall, first - t0, steady,
                         rec["timings"].get("post", 0.0) / wall, rec["timings"].get("post_close", 0.0) / wall,
                         sampler.peak_kb, len(frames[conf])))
        if ray_started:
            import ray

            ray.shutdown()

    print()
    print(f"{'executor':8s} {'workers':>7s} {'windows':>7s} {'seconds':>8s} {'win/s':>6s} {'/ceil':>6s} "
          f"{'start s':>7s} {'steady':>6s} {'/ceil':>6s} {'stitch':>6s} {'tail':>5s} {'driver':>7s} {'model':>7s} "
          f"{'reduce':>7s} {'objects':>7s}")
    for executor, workers, windows, wall, rate, start, steady, stitch_share, tail, peak, objects in rows:
        mb = [f"{peak[r] / 1024:.0f} MB" if peak.get(r) else "-" for r in ("driver", "model actor", "reduce actor")]
        print(f"{executor:8s} {workers:7d} {windows:7d} {wall:8.1f} {rate:6.2f} {rate / ceil:6.2f} {start:7.1f} "
              f"{steady:6.2f} {steady / ceil:6.2f} {stitch_share:6.1%} {tail:5.1%} {mb[0]:>7s} {mb[1]:>7s} {mb[2]:>7s} "
              f"{objects:7d}")
    print(f"{'ceiling':8s} {'':7s} {'':7s} {'':8s} {ceil:6.2f} {1.0:6.2f}")
    first = next(iter(frames.values()))
    same = all(f.drop(columns="geometry").equals(first.drop(columns="geometry"))
               and f.geometry.to_wkb().tolist() == first.geometry.to_wkb().tolist() for f in frames.values())
    print(f"\nsame objects, byte for byte, from every run: {'yes' if same else 'NO'}")
    print("win/s: windows over the whole run (start-up included); steady: first to last finished window "
          "(start-up amortised); start s: seconds to the first finished window; stitch: share of the wall time "
          "the stitching reduce was busy (it runs beside the model); tail: share spent stitching after the last "
          "window (what the stitch adds to the wall time); RSS peaks sampled at 10 Hz (driver: this "
          "process, which also serves the tiles). /ceil compares with one engine's embed rate: with the sleep "
          "stand-in two actors can reach 2x, a CPU-bound encoder on shared cores cannot.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="sam_vit_b (default) | sam_vit_l | test_vit_tiny (random "
                    "weights); --job aoi: colour (default) | sam2.1_hiera_tiny | sam2.1_hiera_small")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--job", choices=["images", "map", "aoi"], default="images")
    ap.add_argument("--ceiling-items", type=int, default=None, help="embeds timed for the ceiling (4; aoi: 10)")
    ap.add_argument("--configs", default=None, help="default local:1,local:2,ray:1,ray:2 (aoi: local:1,ray:1,ray:2)")
    ap.add_argument("--aoi-side", type=int, default=10, help="--job aoi: windows per side of the area")
    ap.add_argument("--embed-delay", type=float, default=0.5, help="--job aoi, colour engine: seconds per embed")
    ap.add_argument("--points-per-side", type=int, default=4, help="--job aoi, SAM 2.1: automatic-mask grid")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch threads per model process")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="samgis-bench-batch-"))
    if args.job == "aoi":
        args.model = args.model or "colour"
        args.ceiling_items = args.ceiling_items or 10
        args.configs = args.configs or "local:1,ray:1,ray:2"
        aoi_main(args, tmp)
        return
    args.model = args.model or "sam_vit_b"
    args.ceiling_items = args.ceiling_items or 4
    args.configs = args.configs or "local:1,local:2,ray:1,ray:2"
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

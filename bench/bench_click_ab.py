"""Cached-click decode, this checkout's decoder against another revision's, interleaved click by click.

The SAM 1 / SAM 2 cached-constant decoders (`samgis/engine/backends/sam1/decoder.py`, `sam2/decoder.py`) of
`--rev` (a git revision of this repository) are loaded next to the working tree's; both decode the same
clicks on the same embedding, alternating which goes first, on the engine's torch thread. On a machine shared
with other work the one-thread CPU time of the torch thread (`--threads 1`) is the steadiest figure; wall
times at two threads are only meaningful on a quiet machine. Prints p50s, the p50 of the per-click ratios
new / old and the worst mask / score difference between the two. Random weights of the real architectures.

Run: `.venv/bin/python bench/bench_click_ab.py --model sam2.1_hiera_tiny --threads 1 --clicks 40 --rev main`
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from samgis.engine.protocol import Prompts  # noqa: E402
from samgis.engine.registry import get_model_spec  # noqa: E402
from samgis.engine.threads import in_fresh_thread, on_torch_thread  # noqa: E402


def module_at(rev: str, path: str, name: str, replace: tuple = ()) -> types.ModuleType:
    """The file `path` of revision `rev` as a module called `name`."""
    src = subprocess.check_output(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], text=True)
    for a, b in replace:
        src = src.replace(a, b)
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module
    exec(compile(src, module.__file__, "exec"), module.__dict__)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sam2.1_hiera_tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clicks", type=int, default=40)
    ap.add_argument("--rev", default="main")
    args = ap.parse_args()
    old1 = module_at(args.rev, "samgis/engine/backends/sam1/decoder.py", "_old_sam1_decoder")
    old2 = module_at(args.rev, "samgis/engine/backends/sam2/decoder.py", "_old_sam2_decoder",
                     (("from samgis.engine.backends.sam1.decoder import", "from _old_sam1_decoder import"),))
    torch.manual_seed(0)
    spec = get_model_spec(args.model)
    if spec.backend == "sam1":
        import samgis.engine.backends.sam1.engine as module
        from samgis.engine.backends.sam1 import SamEngine, build_sam

        engine = SamEngine(in_fresh_thread(build_sam, spec.config), args.model, device="cpu")
        attr, old = "decode_masks", old1.decode_masks
    else:
        import samgis.engine.backends.sam2.engine as module
        from samgis.engine.backends.sam2 import Sam2Engine, build_model

        engine = Sam2Engine(in_fresh_thread(build_model, spec.config), args.model, device="cpu")
        attr, old = "fast", old2
    new = getattr(module, attr)
    emb = engine.embed(np.random.default_rng(0).uniform(0, 255, (1024, 1024, 3)).astype(np.uint8))
    engine.set_threads(args.threads)
    r = np.random.default_rng(5)
    prompts = [Prompts(points=r.uniform(50, 970, (1, 2)), labels=[1]) for _ in range(args.clicks)]

    def decode(p):
        c = time.thread_time()
        out = engine._decode(emb, p, False)
        return out, time.thread_time() - c

    def run(fn, p):
        setattr(module, attr, fn)
        t = time.perf_counter()
        out, cpu = on_torch_thread(decode, p)
        return out, time.perf_counter() - t, cpu

    try:
        for p in prompts[:3]:
            run(old, p), run(new, p)
        wall = {"old": [], "new": []}
        cpu = {"old": [], "new": []}
        ratios, worst = [], 0.0
        for i, p in enumerate(prompts):
            outs = {}
            for key in (("old", "new") if i % 2 == 0 else ("new", "old")):
                outs[key], w, c = run(old if key == "old" else new, p)
                wall[key].append(w)
                cpu[key].append(c)
            ratios.append(wall["new"][-1] / wall["old"][-1])
            a, b = outs["old"].masks, outs["new"].masks
            union = np.logical_or(a, b).sum()
            worst = max(worst, float(np.abs(outs["old"].scores - outs["new"].scores).max()),
                        1 - (np.logical_and(a, b).sum() / union if union else 1.0))
    finally:
        setattr(module, attr, new)
    ms = lambda v: 1000 * statistics.median(v)  # noqa: E731
    print(f"{args.model}, {args.threads} thread(s), {args.clicks} clicks, old = {args.rev}:")
    print(f"  wall p50: old {ms(wall['old']):.2f} ms, new {ms(wall['new']):.2f} ms, "
          f"p50 of per-click ratios new/old {statistics.median(ratios):.3f}")
    print(f"  torch-thread CPU time p50: old {ms(cpu['old']):.2f} ms, new {ms(cpu['new']):.2f} ms, "
          f"ratio {statistics.median(cpu['new']) / statistics.median(cpu['old']):.3f}")
    print(f"  worst of (1 - mask IoU, |score difference|) new vs old: {worst:.2e}")


if __name__ == "__main__":
    main()
